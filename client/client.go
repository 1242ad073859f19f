// Package client is the library applications use to talk to a PBFT cluster. A Client
// trusts no single replica: it signs each request, sends it to the primary it believes
// in, retransmits to every replica when no answer comes in time, and accepts a result
// only once f+1 replicas (so at least one correct one) replied with the same result.
//
//	c, err := client.New(client.Config{Cluster: cl, ID: 1, Key: key})
//	...
//	res, err := c.Invoke(ctx, kvstore.Put("k", []byte("v")))
//
// A Client is safe for concurrent use: many goroutines may Invoke at once, up to the
// cluster's reply window in flight (more wait their turn).
package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"go.uber.org/zap"

	"github.com/pbftkit/pbft/crypto"
	"github.com/pbftkit/pbft/network"
	"github.com/pbftkit/pbft/network/cluster"
	"github.com/pbftkit/pbft/pbft"
)

// Config configures a Client.
type Config struct {
	Cluster *cluster.Cluster
	ID      uint32             // a client id registered in the cluster
	Key     *crypto.PrivateKey // that client's key
	// Timeout is how long a request waits for f+1 matching replies before it is sent
	// to every replica; it doubles on each retransmission up to 8 times. Default 500 ms.
	Timeout time.Duration
	Logger  *zap.Logger
}

// Result is a voted result.
type Result struct {
	Value     []byte
	Timestamp uint64
	View      uint64   // the view at least one correct replica executed it in (or later)
	Voters    []uint32 // the f+1 or more replicas that replied Value
}

// Client sends signed requests and votes on the replies.
type Client struct {
	cfg     Config
	cl      *cluster.Cluster
	id      pbft.ClientID
	signer  *pbft.KeySigner
	host    *network.Host
	log     *zap.Logger
	replica map[peer.ID]pbft.ReplicaID
	lim     pbft.Limits

	mu      sync.Mutex
	cond    *sync.Cond
	lastTS  uint64
	view    uint64
	pending map[uint64]*call // by timestamp
	// order holds the issue order of requests not yet answered; issued counts all
	// requests ever issued. The replicas remember only the last ReplyWindow timestamps
	// of a client, so a new request may start only while fewer than ReplyWindow have
	// been issued since the oldest one still waiting (else that one could be forgotten
	// and never execute).
	order  []uint64 // issue indexes of pending calls, ascending
	issued uint64
	closed bool
}

type call struct {
	ts    uint64
	index uint64
	votes map[pbft.ReplicaID]*pbft.Reply
	done  chan Result
}

// ErrClosed is returned by Invoke on a closed Client.
var ErrClosed = errors.New("client: closed")

// New starts a client: a libp2p host that admits only the cluster's replicas.
func New(cfg Config) (*Client, error) {
	if cfg.Cluster == nil || cfg.Key == nil {
		return nil, errors.New("client: Config needs Cluster and Key")
	}
	me, err := cfg.Cluster.Client(cfg.ID)
	if err != nil {
		return nil, err
	}
	if !cfg.Key.Public().Equal(me.Public) {
		return nil, fmt.Errorf("%s: client %d: the key given is not the public_key configured", cfg.Cluster.Path, cfg.ID)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 500 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	ident, id, err := network.Identity(cfg.Key)
	if err != nil {
		return nil, err
	}
	if id != me.PeerID {
		return nil, fmt.Errorf("%s: client %d: peer_id %s does not match its key (%s)", cfg.Cluster.Path, cfg.ID, me.PeerID, id)
	}
	c := &Client{
		cfg: cfg, cl: cfg.Cluster, id: pbft.ClientID(cfg.ID),
		signer:  &pbft.KeySigner{Cluster: cfg.Cluster.Name, Key: cfg.Key},
		log:     cfg.Logger.With(zap.Uint32("client", cfg.ID)),
		replica: make(map[peer.ID]pbft.ReplicaID),
		lim:     cfg.Cluster.Limits(),
		pending: make(map[uint64]*call),
	}
	c.cond = sync.NewCond(&c.mu)
	allow := make([]peer.ID, 0, len(c.cl.Replicas))
	for _, r := range c.cl.Replicas {
		allow = append(allow, r.PeerID)
		c.replica[r.PeerID] = pbft.ReplicaID(r.ID)
	}
	h, err := network.New(network.Config{Identity: ident, Allow: allow, QUIC: c.cl.UsesQUIC(), MaxFrame: c.cl.Protocol.MaxFrameBytes, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	for _, r := range c.cl.Replicas {
		h.AddPeer(r.PeerID, addrs(r))
	}
	h.Handle(network.ClientProtocol, c.onFrame)
	c.host = h
	return c, nil
}

// Close stops the client; calls in flight return ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	for _, p := range c.pending {
		close(p.done)
	}
	c.pending = map[uint64]*call{}
	c.cond.Broadcast()
	c.mu.Unlock()
	return c.host.Close()
}

// View is the view the client believes the cluster is in.
func (c *Client) View() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.view
}

// Invoke runs op on the replicated application and returns the result f+1 replicas
// agree on. It returns early with ctx's error if ctx ends first; the request may still
// execute (exactly once) after that. Operations above the cluster's op limit are
// refused at once; results above its result limit never reach the client, so an
// application must keep its results within it.
func (c *Client) Invoke(ctx context.Context, op []byte) (Result, error) {
	if len(op) > c.lim.MaxOpBytes {
		// Replicas refuse it unread: waiting would only end with ctx.
		return Result{}, fmt.Errorf("client %d: operation of %d bytes exceeds the %d-byte limit", c.id, len(op), c.lim.MaxOpBytes)
	}
	p, err := c.start(ctx)
	if err != nil {
		return Result{}, err
	}
	defer c.finish(p)
	body := pbft.Request{Client: c.id, Timestamp: p.ts, Op: op}
	frame := pbft.EncodeEnvelope(&pbft.Envelope{Msg: pbft.Sign(c.signer, pbft.MsgRequest, uint32(c.id), body)})
	c.mu.Lock()
	primary := c.cl.Replicas[int(c.view%uint64(len(c.cl.Replicas)))].PeerID
	c.mu.Unlock()
	c.host.Send(primary, network.ClientProtocol, frame)
	timeout := c.cfg.Timeout
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for tries := 0; ; tries++ {
		select {
		case res, ok := <-p.done:
			if !ok {
				return Result{}, ErrClosed
			}
			return res, nil
		case <-ctx.Done():
			return Result{}, fmt.Errorf("client %d request t=%d: %w", c.id, p.ts, ctx.Err())
		case <-timer.C:
			// The primary may be faulty or gone: every replica gets it, and the backups
			// start their view-change timers.
			for _, r := range c.cl.Replicas {
				c.host.Send(r.PeerID, network.ClientProtocol, frame)
			}
			if tries < 3 {
				timeout *= 2
			}
			timer.Reset(timeout)
		}
	}
}

// start allocates the request's timestamp once the reply window allows it.
func (c *Client) start(ctx context.Context) (*call, error) {
	window := uint64(c.cl.Protocol.ReplyWindow)
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for !c.closed && ctx.Err() == nil && len(c.order) > 0 && c.issued-c.order[0] >= window {
		c.cond.Wait()
	}
	switch {
	case c.closed:
		return nil, ErrClosed
	case ctx.Err() != nil:
		return nil, fmt.Errorf("client %d: %w", c.id, ctx.Err())
	}
	// Timestamps increase, also across restarts of the client process: the replicas
	// execute a (client, timestamp) at most once and refuse old ones.
	ts := max(c.lastTS+1, uint64(time.Now().UnixNano()))
	c.lastTS = ts
	p := &call{ts: ts, index: c.issued, votes: make(map[pbft.ReplicaID]*pbft.Reply), done: make(chan Result, 1)}
	c.issued++
	c.order = append(c.order, p.index)
	c.pending[ts] = p
	return p, nil
}

func (c *Client) finish(p *call) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pending, p.ts)
	if i := slices.Index(c.order, p.index); i >= 0 {
		c.order = slices.Delete(c.order, i, i+1)
	}
	c.cond.Broadcast()
}

// onFrame handles a reply: the stream it came on names the replica.
func (c *Client) onFrame(from peer.ID, frame []byte) {
	rid, ok := c.replica[from]
	if !ok {
		return
	}
	env, err := pbft.DecodeEnvelope(frame, c.lim)
	if err != nil {
		c.log.Debug("malformed frame", zap.Stringer("from", from), zap.Error(err))
		return
	}
	rm, err := pbft.OpenReply(&env.Msg, rid, c.lim)
	if err != nil || rm.Reply.Client != c.id {
		c.log.Debug("bad reply", zap.Uint32("replica", uint32(rid)), zap.Error(err))
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pending[rm.Reply.Timestamp]
	if p == nil {
		return // answered already, or not ours
	}
	if _, dup := p.votes[rid]; dup {
		return // one vote per replica: its first answer
	}
	p.votes[rid] = &rm.Reply
	var voters []uint32
	var views []uint64
	for id, v := range p.votes {
		if string(v.Result) == string(rm.Reply.Result) {
			voters = append(voters, uint32(id))
			views = append(views, v.View)
		}
	}
	if len(voters) < c.cl.F+1 {
		return
	}
	// The (f+1)-th highest view among the voters: at least one correct replica is in
	// it or later.
	slices.Sort(views)
	view := views[len(views)-(c.cl.F+1)]
	c.view = max(c.view, view)
	slices.Sort(voters)
	delete(c.pending, p.ts)
	p.done <- Result{Value: rm.Reply.Result, Timestamp: p.ts, View: view, Voters: voters}
}

func addrs(m cluster.Member) []multiaddr.Multiaddr {
	if m.Addr == nil {
		return nil
	}
	return []multiaddr.Multiaddr{m.Addr}
}
