package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	libp2pcrypto "github.com/libp2p/go-libp2p/core/crypto"
	p2pnet "github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
)

// Two processes with one identity must never both run: for a replica that means two
// signers of one seat, each from its own history, which the others cannot tell from an
// equivocating replica. New refuses to start on an address that is already bound, in
// two layers that each hold on their own:
//
//   - Binds are exclusive. libp2p's TCP transport sets SO_REUSEPORT by default (to
//     dial from the listen port), and with it a second process binds the same port
//     and the kernel splits the incoming connections between the two; New turns it
//     off. QUIC listens on a plain net.ListenUDP socket, without SO_REUSEPORT: its
//     "reuse" only shares one UDP socket among the dials and listens of one host.
//   - Before libp2p binds anything, New binds each listen address itself and lets it
//     go. An address in use is then probed (ProbeIdentity): if what answers there
//     proves it holds this host's key, another process is running as this host, and
//     AddrInUseError says so instead of a bare "address already in use".
//
// The probe dials the address only when it is in use. Dialing every time would find
// a twin at the same address all the same, but a QUIC dial to a UDP port nobody
// listens on is not refused, it waits out the handshake timeout: each start would
// take that long.
//
// Rejected: asking the other peers whether they are connected to our peer ID. libp2p
// admits several connections per peer, so they would see this process's connection as
// well as the twin's and could not tell them apart; and their answers come from peers
// that may be faulty, which could keep a correct peer from starting or hide its twin.

// probeTimeout bounds the probe of an address found in use. A live libp2p host answers
// within milliseconds; the bound is for loaded machines and for QUIC, whose dials to a
// silent UDP port time out instead of failing.
const probeTimeout = 5 * time.Second

// AddrInUseError is returned by New when one of Config.Listen is already bound, by
// another process or socket. It wraps the bind error, so errors.Is(err,
// syscall.EADDRINUSE) holds.
type AddrInUseError struct {
	Addr ma.Multiaddr
	// ID is the peer ID of the host that was being started.
	ID peer.ID
	// Self reports that a peer proving it holds ID answered at Addr: another
	// process is running with this host's identity.
	Self bool
	// Probe, when Self is false, says why no such peer was found there (refused,
	// timed out, or another peer ID answered).
	Probe error
	Err   error
}

func (e *AddrInUseError) Error() string {
	if e.Self {
		return fmt.Sprintf("network: listen on %s: another process with this host's peer ID %s already listens there", e.Addr, e.ID)
	}
	return fmt.Sprintf("network: listen on %s: address already in use, and nothing there answered as peer %s (%s)", e.Addr, e.ID, e.Reason())
}

// Reason is Probe on one line (libp2p lists failed dials one per line).
func (e *AddrInUseError) Reason() string {
	if e.Probe == nil {
		return "no answer"
	}
	return strings.Join(strings.Fields(e.Probe.Error()), " ")
}

func (e *AddrInUseError) Unwrap() error { return e.Err }

// checkListen binds each listen address the way libp2p will and lets it go. The first
// address in use is probed for a twin of id and reported as an *AddrInUseError.
// Addresses that are not plain IP and TCP or UDP are left to libp2p.
func checkListen(listen []ma.Multiaddr, id peer.ID) error {
	for _, a := range listen {
		err := bindOnce(a)
		if err == nil {
			continue
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			// Not ours to judge: libp2p will fail on it with its own error.
			continue
		}
		return inUse(a, id, err)
	}
	return nil
}

// inUse builds the error for address a found bound by someone else.
func inUse(a ma.Multiaddr, id peer.ID, bindErr error) error {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	self, probe := ProbeIdentity(ctx, id, dialable(a))
	if probe == nil && !self {
		probe = errors.New("no answer")
	}
	return &AddrInUseError{Addr: a, ID: id, Self: self, Probe: probe, Err: bindErr}
}

// dialable is a with an unspecified IP (0.0.0.0, ::), which is not dialed, replaced by
// loopback: whoever holds the port on every interface answers there.
func dialable(a ma.Multiaddr) ma.Multiaddr {
	if len(a) == 0 {
		return a
	}
	var loop string
	switch {
	case a[0].Code() == ma.P_IP4 && net.ParseIP(a[0].Value()).IsUnspecified():
		loop = "/ip4/127.0.0.1"
	case a[0].Code() == ma.P_IP6 && net.ParseIP(a[0].Value()).IsUnspecified():
		loop = "/ip6/::1"
	default:
		return a
	}
	l, err := ma.NewMultiaddr(loop)
	if err != nil {
		return a
	}
	return l.Encapsulate(a[1:])
}

// bindOnce binds a (IP and TCP or UDP port, which is all New listens on) without
// SO_REUSEPORT, and closes it at once. Port 0 is always free. Go's TCP listeners set
// SO_REUSEADDR, as libp2p's do: a port whose last connections linger in TIME_WAIT is
// free.
func bindOnce(a ma.Multiaddr) error {
	if len(a) < 2 {
		return nil
	}
	switch a[0].Code() {
	case ma.P_IP4, ma.P_IP6:
	default:
		return nil
	}
	hostport := net.JoinHostPort(a[0].Value(), a[1].Value())
	switch a[1].Code() {
	case ma.P_TCP:
		l, err := net.Listen("tcp", hostport)
		if err != nil {
			return err
		}
		return l.Close()
	case ma.P_UDP:
		c, err := net.ListenPacket("udp", hostport)
		if err != nil {
			return err
		}
		return c.Close()
	}
	return nil
}

// ProbeIdentity reports whether a peer that proves it holds the key of id answers at
// one of addrs (TCP with Noise, or QUIC). It dials from a throwaway identity and stops
// once the handshake has authenticated the other end, before either side would accept
// the connection: it needs no allow list entry there and never opens a stream, so the
// peer probed only logs a refused connection. A false result comes with the reason
// (refused, timed out, another peer ID answered), or nil error when there was nothing
// to dial.
//
// Only a holder of id's private key can complete the handshake as id, so a true result
// is never wrong; a false one may be, if that peer is too slow to answer before ctx
// ends.
func ProbeIdentity(ctx context.Context, id peer.ID, addrs ...ma.Multiaddr) (bool, error) {
	if len(addrs) == 0 {
		return false, nil
	}
	key, _, err := libp2pcrypto.GenerateEd25519Key(nil)
	if err != nil {
		return false, fmt.Errorf("network: probe key: %w", err)
	}
	g := &probeGater{want: id}
	h, err := libp2p.New(
		libp2p.Identity(key),
		libp2p.NoListenAddrs,
		libp2p.Transport(tcp.NewTCPTransport, tcp.DisableReuseport()),
		libp2p.Transport(quic.NewTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ConnectionGater(g),
		libp2p.ConnectionManager(&connmgr.NullConnMgr{}),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
		libp2p.DisableIdentifyAddressDiscovery(),
		libp2p.Ping(false),
	)
	if err != nil {
		return false, fmt.Errorf("network: probe host: %w", err)
	}
	defer h.Close()
	err = h.Connect(ctx, peer.AddrInfo{ID: id, Addrs: addrs})
	if g.seen.Load() {
		return true, nil
	}
	if err == nil {
		// The gater refuses every secured connection: a connection that got
		// through was not authenticated by it. Not expected; not a twin.
		return false, errors.New("connected without authenticating the peer")
	}
	return false, err
}

// probeGater lets ProbeIdentity dial only the peer probed and records whether the
// handshake authenticated it. InterceptSecured runs on the dialing side once the
// security handshake (Noise, or QUIC's TLS) has checked that the other end holds the
// key of the peer ID dialed; a different peer ID fails the handshake before it.
type probeGater struct {
	want peer.ID
	seen atomic.Bool
}

func (g *probeGater) InterceptPeerDial(p peer.ID) bool             { return p == g.want }
func (g *probeGater) InterceptAddrDial(peer.ID, ma.Multiaddr) bool { return true }
func (g *probeGater) InterceptAccept(p2pnet.ConnMultiaddrs) bool   { return false }
func (g *probeGater) InterceptSecured(dir p2pnet.Direction, p peer.ID, _ p2pnet.ConnMultiaddrs) bool {
	if dir == p2pnet.DirOutbound && p == g.want {
		g.seen.Store(true)
	}
	return false // proof is all the probe wants: never a connection
}
func (g *probeGater) InterceptUpgraded(p2pnet.Conn) (bool, control.DisconnectReason) {
	return false, 0
}
