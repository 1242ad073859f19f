package network

import (
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	p2pnet "github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"go.uber.org/zap"
)

// allowList is the set of peers a Host talks to. It is fixed at New, so it is
// read without locking.
type allowList map[peer.ID]struct{}

func (a allowList) has(p peer.ID) bool { _, ok := a[p]; return ok }

// gater admits only allow-listed peers. The decision is taken in
// InterceptSecured, the first point where the remote peer ID has been
// authenticated by the Noise handshake, for inbound and outbound connections
// alike; dials to other peers are refused before they start.
type gater struct {
	allow allowList
	stats *counters
	log   *zap.Logger
}

var _ connmgr.ConnectionGater = (*gater)(nil)

func (g *gater) InterceptPeerDial(p peer.ID) bool {
	if g.allow.has(p) {
		return true
	}
	g.stats.refused.Add(1)
	g.log.Info("refused to dial a peer outside the allow list", zap.Stringer("peer", p))
	return false
}

func (g *gater) InterceptAddrDial(peer.ID, ma.Multiaddr) bool { return true }

func (g *gater) InterceptAccept(p2pnet.ConnMultiaddrs) bool { return true }

func (g *gater) InterceptSecured(dir p2pnet.Direction, p peer.ID, addrs p2pnet.ConnMultiaddrs) bool {
	if g.allow.has(p) {
		return true
	}
	g.stats.refused.Add(1)
	g.log.Info("refused connection of a peer outside the allow list",
		zap.Stringer("peer", p), zap.Stringer("direction", dir),
		zap.Stringer("remote", addrs.RemoteMultiaddr()))
	return false
}

func (g *gater) InterceptUpgraded(p2pnet.Conn) (bool, control.DisconnectReason) { return true, 0 }
