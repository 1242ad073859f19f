package network

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/connmgr"
	libp2pcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	p2pnet "github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	"go.uber.org/zap"
)

// The protocols spoken between cluster members. Replicas talk to each other
// on ReplicaProtocol; clients open ClientProtocol streams to replicas and read
// their replies from the same streams.
const (
	ReplicaProtocol protocol.ID = "/pbft/replica/1.0.0"
	ClientProtocol  protocol.ID = "/pbft/client/1.0.0"
)

// Defaults for the zero values of Config.
const (
	DefaultMaxFrame   = 4 << 20
	DefaultQueueLen   = 4096
	DefaultQueueBytes = 64 << 20
	// DefaultFrameTimeout bounds how long a frame may take to arrive once its
	// length is read, and how long one flush may take: a peer that stops mid
	// frame, or stops reading, loses its stream instead of pinning memory or a
	// writer for ever.
	DefaultFrameTimeout = 30 * time.Second
	// MaxInboundStreams is how many streams one peer may hold open towards this
	// host on one protocol; a newer one closes its oldest. A well-behaved peer
	// needs one.
	MaxInboundStreams = 4
)

// Buffer sizes of stream readers and writers: large enough to coalesce many
// small frames into one yamux write, small enough for a replica with
// thousands of client streams.
const (
	readBufSize  = 16 << 10
	writeBufSize = 16 << 10
)

// Config configures a Host.
type Config struct {
	// Identity is the libp2p key of the node, usually from Identity.
	Identity libp2pcrypto.PrivKey
	// Listen lists the multiaddrs to listen on, e.g. "/ip4/127.0.0.1/tcp/7000".
	// Empty means no listening, which is what clients do.
	Listen []string
	// QUIC enables the QUIC transport besides TCP, for listen addresses of
	// the form /ip4/.../udp/.../quic-v1 and for dialing such addresses.
	QUIC bool
	// Allow lists the only peers admitted: the replicas and the registered
	// clients. Everybody else is refused during the handshake.
	Allow []peer.ID
	// MaxFrame is the largest frame accepted or sent, in bytes; 0 means
	// DefaultMaxFrame. It must agree across the cluster.
	MaxFrame int
	// QueueLen is the capacity, in frames, of each (peer, protocol) send
	// queue and of the loopback queue; 0 means DefaultQueueLen.
	QueueLen int
	// QueueBytes bounds the bytes queued for one (peer, protocol); 0 means
	// DefaultQueueBytes, and it is never below two MaxFrame. A peer that does not
	// read cannot hold more.
	QueueBytes int
	// FrameTimeout is DefaultFrameTimeout when 0.
	FrameTimeout time.Duration
	// ProtocolPeers, when it lists a protocol, admits only those peers on it:
	// clients may not open replica streams, for instance. Other protocols are
	// open to every allowed peer.
	ProtocolPeers map[protocol.ID][]peer.ID
	// Logger receives the host's logs and go-libp2p's warnings and errors.
	// nil means no logging.
	Logger *zap.Logger
}

// Handler receives the frames of one protocol. It is called from the reader
// goroutine of the stream the frame came in on, so it must not block for long:
// a slow handler stalls that stream and, through flow control, its sender. The
// frame belongs to the handler.
type Handler func(from peer.ID, frame []byte)

// Host is a cluster member's endpoint: a libp2p host restricted to the
// allow-listed peers, with one queued writer per (peer, protocol).
type Host struct {
	h        host.Host
	id       peer.ID
	log      *zap.Logger
	allow    allowList
	maxFrame int
	queueLen int
	// queueBytes and frameTimeout: see Config. protoPeers restricts who may use
	// a protocol; inStreams lists the inbound streams per (peer, protocol),
	// oldest first.
	queueBytes   int
	frameTimeout time.Duration
	protoPeers   map[protocol.ID]allowList
	inStreams    map[streamKey][]*inStream
	stats        counters

	ctx      context.Context // cancelled by Close
	cancel   context.CancelFunc
	wg       sync.WaitGroup // every goroutine the Host started
	isClosed atomic.Bool

	handlers atomic.Pointer[map[protocol.ID]Handler] // copy on write
	hmu      sync.Mutex                              // serialises Handle
	loop     chan loopFrame                          // frames sent to self

	mu       sync.RWMutex
	closed   bool
	dialable map[peer.ID]bool           // peers given addresses by AddPeer
	senders  map[streamKey]*sender      // the writer of each (peer, protocol)
	inbound  map[streamKey]*inStream    // the newest inbound stream of each
	streams  map[p2pnet.Stream]struct{} // live streams, reset by Close
}

// streamKey names the traffic of one protocol with one peer.
type streamKey struct {
	peer  peer.ID
	proto protocol.ID
}

// inStream is a stream a peer opened to us; done is closed when its reader
// has stopped.
type inStream struct {
	s    p2pnet.Stream
	done chan struct{}
}

type loopFrame struct {
	proto protocol.ID
	frame []byte
}

// New starts a Host. It listens on cfg.Listen (if any) and admits only
// cfg.Allow. Everything libp2p would do beyond moving our streams (relays,
// NAT port mapping, hole punching, address discovery, ping, metrics,
// connection trimming) is off: the cluster is permissioned and its members'
// addresses are configured.
func New(cfg Config) (*Host, error) {
	if cfg.Identity == nil {
		return nil, errors.New("network: Config.Identity is required")
	}
	id, err := peer.IDFromPrivateKey(cfg.Identity)
	if err != nil {
		return nil, fmt.Errorf("network: peer ID of Config.Identity: %w", err)
	}
	if cfg.MaxFrame < 0 || uint64(cfg.MaxFrame) > math.MaxUint32 {
		return nil, fmt.Errorf("network: Config.MaxFrame %d out of range", cfg.MaxFrame)
	}
	if cfg.QueueLen < 0 {
		return nil, fmt.Errorf("network: Config.QueueLen %d is negative", cfg.QueueLen)
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	log = log.With(zap.Stringer("self", id))
	routeLibp2pLogs(cfg.Logger)

	h := &Host{
		id:           id,
		log:          log,
		allow:        make(allowList, len(cfg.Allow)),
		maxFrame:     cmp.Or(cfg.MaxFrame, DefaultMaxFrame),
		queueLen:     cmp.Or(cfg.QueueLen, DefaultQueueLen),
		queueBytes:   max(cmp.Or(cfg.QueueBytes, DefaultQueueBytes), 2*cmp.Or(cfg.MaxFrame, DefaultMaxFrame)),
		frameTimeout: cmp.Or(cfg.FrameTimeout, DefaultFrameTimeout),
		protoPeers:   make(map[protocol.ID]allowList),
		inStreams:    make(map[streamKey][]*inStream),
		dialable:     make(map[peer.ID]bool),
		senders:      make(map[streamKey]*sender),
		inbound:      make(map[streamKey]*inStream),
		streams:      make(map[p2pnet.Stream]struct{}),
	}
	for proto, ids := range cfg.ProtocolPeers {
		l := make(allowList, len(ids))
		for _, id := range ids {
			l[id] = struct{}{}
		}
		h.protoPeers[proto] = l
	}
	for _, p := range cfg.Allow {
		h.allow[p] = struct{}{}
	}
	h.handlers.Store(&map[protocol.ID]Handler{})
	h.loop = make(chan loopFrame, h.queueLen)

	opts := []libp2p.Option{
		libp2p.Identity(cfg.Identity),
		// Exclusive binds: with SO_REUSEPORT (libp2p's default) a second process
		// of this identity could listen on the same port (see inuse.go).
		libp2p.Transport(tcp.NewTCPTransport, tcp.DisableReuseport()),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ConnectionGater(&gater{allow: h.allow, stats: &h.stats, log: log}),
		libp2p.ConnectionManager(&connmgr.NullConnMgr{}),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
		libp2p.DisableIdentifyAddressDiscovery(),
		libp2p.ForceReachabilityPublic(),
		libp2p.Ping(false),
	}
	if cfg.QUIC {
		opts = append(opts, libp2p.Transport(quic.NewTransport))
	}
	if len(cfg.Listen) == 0 {
		opts = append(opts, libp2p.NoListenAddrs)
	} else {
		opts = append(opts, libp2p.ListenAddrStrings(cfg.Listen...))
	}
	// Addresses that do not parse are left to libp2p, which names them.
	var listen []ma.Multiaddr
	for _, a := range cfg.Listen {
		if m, err := ma.NewMultiaddr(a); err == nil {
			listen = append(listen, m)
		}
	}
	// libp2p starts when at least one listen address binds, and only logs the
	// others: check them all first, and name whoever holds one.
	if err := checkListen(listen, id); err != nil {
		return nil, err
	}
	rm, err := resourceManager()
	if err != nil {
		return nil, err
	}
	opts = append(opts, libp2p.ResourceManager(rm))
	h.ctx, h.cancel = context.WithCancel(context.Background())
	if h.h, err = libp2p.New(opts...); err != nil {
		h.cancel()
		rm.Close()
		// Someone may have bound an address since checkListen; libp2p's error
		// flattens the errno into text, so look again.
		if inUse := checkListen(listen, id); inUse != nil {
			return nil, inUse
		}
		return nil, fmt.Errorf("network: start libp2p host %s: %w", id, err)
	}
	h.wg.Add(1)
	go h.loopback()
	return h, nil
}

// resourceManager returns libp2p's default resource manager without its
// host-wide caps on connections, streams and file descriptors (64 to 128
// inbound connections with the default scaling), which would turn away a
// replica's clients beyond the first hundred or so. The allow list already
// bounds who connects; the per-peer, per-connection and memory limits stay,
// to contain an admitted but misbehaving peer.
func resourceManager() (p2pnet.ResourceManager, error) {
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	open := rcmgr.ResourceLimits{
		Streams: rcmgr.Unlimited, StreamsInbound: rcmgr.Unlimited, StreamsOutbound: rcmgr.Unlimited,
		Conns: rcmgr.Unlimited, ConnsInbound: rcmgr.Unlimited, ConnsOutbound: rcmgr.Unlimited,
		FD: rcmgr.Unlimited,
	}
	// Per protocol the default caps (about a thousand streams for all peers
	// together) would let a few admitted peers lock out the rest; the host caps
	// streams per peer and protocol itself (MaxInboundStreams).
	proto := rcmgr.ResourceLimits{Streams: rcmgr.Unlimited, StreamsInbound: rcmgr.Unlimited, StreamsOutbound: rcmgr.Unlimited}
	cfg := rcmgr.PartialLimitConfig{System: open, Transient: open, ProtocolDefault: proto, ServiceDefault: proto}
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(cfg.Build(limits.AutoScale())))
	if err != nil {
		return nil, fmt.Errorf("network: resource manager: %w", err)
	}
	return rm, nil
}

// minRate is the slowest transfer a frame is allowed: FrameTimeout plus one second per
// MiB, so a large legitimate frame (a NEW-VIEW with post-quantum signatures runs to
// tens of MiB) has time to cross a modest link.
const minRate = 1 << 20

// transferTime is how long a frame of size bytes may take to arrive or leave.
func (h *Host) transferTime(size int) time.Duration {
	return h.frameTimeout + time.Duration(size)*time.Second/minRate
}

// ID returns the host's peer ID.
func (h *Host) ID() peer.ID { return h.id }

// Addrs returns the addresses the host listens on, with the ports actually
// bound (so listening on /tcp/0 yields a dialable address).
func (h *Host) Addrs() []ma.Multiaddr { return h.h.Addrs() }

// AddPeer records the addresses of a peer this host dials: a replica. Peers
// never given addresses (clients) are answered on the streams they open.
func (h *Host) AddPeer(id peer.ID, addrs []ma.Multiaddr) {
	if len(addrs) == 0 {
		return
	}
	if !h.allow.has(id) {
		h.log.Warn("peer added but not allowed: dials to it will be refused", zap.Stringer("peer", id))
	}
	h.h.Peerstore().AddAddrs(id, addrs, peerstore.PermanentAddrTTL)
	h.mu.Lock()
	h.dialable[id] = true
	h.mu.Unlock()
}

// Handle routes inbound frames of protocol p, from streams opened in either
// direction, to fn. Call it before traffic of p is expected: streams of
// protocols without a handler are refused during negotiation.
func (h *Host) Handle(p protocol.ID, fn Handler) {
	h.hmu.Lock()
	m := maps.Clone(*h.handlers.Load())
	m[p] = fn
	h.handlers.Store(&m)
	h.hmu.Unlock()
	h.h.SetStreamHandler(p, h.serve)
}

func (h *Host) handler(p protocol.ID) Handler { return (*h.handlers.Load())[p] }

// Send queues frame for peer to on protocol p and returns at once. The host
// takes ownership of frame. It returns false when the frame is dropped: its
// queue is full, the host is closed, the frame exceeds MaxFrame, or to has no
// route (no address and no inbound stream on p). Sending to the host's own ID
// delivers to the local handler asynchronously, without touching the network.
func (h *Host) Send(to peer.ID, p protocol.ID, frame []byte) bool {
	if len(frame) > h.maxFrame {
		h.stats.oversized.Add(1)
		return false
	}
	if h.isClosed.Load() {
		return false
	}
	if to == h.id {
		select {
		case h.loop <- loopFrame{p, frame}:
			return true
		default:
			h.stats.queueDrops.Add(1)
			return false
		}
	}
	k := streamKey{to, p}
	h.mu.RLock()
	if s := h.senders[k]; s != nil {
		// Pushing under the read lock: a sender removes itself under the
		// write lock, so a frame never lands in a queue nobody drains.
		ok := s.push(frame)
		h.mu.RUnlock()
		return ok
	}
	h.mu.RUnlock()

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	s := h.senders[k]
	if s == nil {
		dial := h.dialable[to]
		if !dial && h.inbound[k] == nil {
			h.stats.noRoute.Add(1)
			return false
		}
		s = &sender{h: h, key: k, dial: dial, q: make(chan []byte, h.queueLen)}
		h.senders[k] = s
		h.wg.Add(1)
		go s.run()
	}
	return s.push(frame)
}

// loopback delivers the frames the host sends to itself.
func (h *Host) loopback() {
	defer h.wg.Done()
	for {
		select {
		case <-h.ctx.Done():
			return
		case lf := <-h.loop:
			if fn := h.handler(lf.proto); fn != nil {
				fn(h.id, lf.frame)
			}
		}
	}
}

// Stats returns a snapshot of the host's counters.
func (h *Host) Stats() Stats { return h.stats.snapshot() }

// Close stops the host: every stream is reset, every goroutine it started
// has returned when Close returns, and queued frames are discarded.
func (h *Host) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	h.isClosed.Store(true)
	streams := maps.Clone(h.streams)
	h.mu.Unlock()

	h.cancel()
	for s := range streams {
		s.Reset()
	}
	err := h.h.Close()
	h.wg.Wait()
	if err != nil {
		return fmt.Errorf("network: close libp2p host %s: %w", h.id, err)
	}
	return nil
}

// serve runs an inbound stream: it is registered as the newest stream of its
// (peer, protocol), for replies, and its frames go to the protocol's handler
// until it fails.
func (h *Host) serve(s p2pnet.Stream) {
	from, p := s.Conn().RemotePeer(), s.Protocol()
	if !h.allow.has(from) {
		// The gater should have refused the connection already.
		h.stats.refused.Add(1)
		h.log.Warn("refused stream of a peer outside the allow list",
			zap.Stringer("peer", from), zap.String("protocol", string(p)))
		s.Reset()
		return
	}
	if l, ok := h.protoPeers[p]; ok && !l.has(from) {
		// An allowed peer in the wrong role (a client on the replica protocol).
		h.stats.refused.Add(1)
		h.log.Warn("refused stream of a peer not admitted on its protocol",
			zap.Stringer("peer", from), zap.String("protocol", string(p)))
		s.Reset()
		return
	}
	k := streamKey{from, p}
	in := &inStream{s: s, done: make(chan struct{})}
	if !h.track(s) {
		return
	}
	h.mu.Lock()
	var oldest p2pnet.Stream
	live := h.inStreams[k]
	if len(live) >= MaxInboundStreams {
		// One stream is all a peer needs; more only pin buffers here. The newest
		// wins: a peer that reconnected (its old streams not yet reaped) gets in at
		// once, and one that opens many only churns its own.
		oldest, live = live[0].s, live[1:]
	}
	h.inStreams[k] = append(live, in)
	h.inbound[k] = in
	h.mu.Unlock()
	defer h.wg.Done()
	if oldest != nil {
		h.stats.refused.Add(1)
		h.log.Warn("closed a peer's oldest stream over the per-peer limit",
			zap.Stringer("peer", from), zap.String("protocol", string(p)), zap.Int("limit", MaxInboundStreams))
		oldest.Reset()
	}

	h.readLoop(s, from, p)
	s.Reset()
	close(in.done)
	h.mu.Lock()
	delete(h.streams, s)
	live = h.inStreams[k]
	if i := slices.Index(live, in); i >= 0 {
		live = slices.Delete(live, i, i+1)
	}
	if len(live) == 0 {
		delete(h.inStreams, k)
	} else {
		h.inStreams[k] = live
	}
	if h.inbound[k] == in {
		delete(h.inbound, k)
	}
	h.mu.Unlock()
}

// track registers a live stream and counts its reader in h.wg. It returns
// false, and resets s, once the host is closed.
func (h *Host) track(s p2pnet.Stream) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		s.Reset()
		return false
	}
	h.streams[s] = struct{}{}
	h.wg.Add(1)
	return true
}

// readLoop delivers the frames of s to the handler of p until the stream
// fails or a frame exceeds MaxFrame. The caller resets s afterwards.
func (h *Host) readLoop(s p2pnet.Stream, from peer.ID, p protocol.ID) {
	r := bufio.NewReaderSize(s, readBufSize)
	var deadline time.Time // zero: none armed
	for {
		// Streams are long-lived and may idle between frames: a deadline that
		// fires before a frame begins is cleared, not fatal.
		if _, err := r.Peek(1); err != nil {
			if ne := net.Error(nil); !deadline.IsZero() && errors.As(err, &ne) && ne.Timeout() {
				s.SetReadDeadline(time.Time{})
				deadline = time.Time{}
				continue
			}
			if h.ctx.Err() == nil {
				h.log.Debug("stream ended", zap.Stringer("peer", from),
					zap.String("protocol", string(p)), zap.Error(err))
			}
			return
		}
		// Once a frame begins it must end in time, the largest one too. The deadline
		// is re-armed only when less than half of that time is left, so steady
		// traffic sets a timer now and then, not per frame.
		if need := h.transferTime(h.maxFrame); deadline.IsZero() || time.Until(deadline) < need/2 {
			deadline = time.Now().Add(need)
			s.SetReadDeadline(deadline)
		}
		f, err := readFrame(r, h.maxFrame)
		if err != nil {
			if big := (*oversizedError)(nil); errors.As(err, &big) {
				h.stats.oversized.Add(1)
				h.log.Warn("oversized frame: resetting the stream",
					zap.Stringer("peer", from), zap.String("protocol", string(p)),
					zap.Uint64("size", big.size), zap.Int("max", h.maxFrame))
			} else if h.ctx.Err() == nil {
				h.log.Debug("stream ended", zap.Stringer("peer", from),
					zap.String("protocol", string(p)), zap.Error(err))
			}
			return
		}
		h.stats.framesIn.Add(1)
		h.stats.bytesIn.Add(uint64(len(f)))
		if fn := h.handler(p); fn != nil {
			fn(from, f)
		}
	}
}
