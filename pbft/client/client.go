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
//
// Replicas execute each (client, timestamp) at most once and refuse timestamps at or
// below the client's low mark (PBFT §4.1), so a client's timestamps must increase, also
// across restarts of its process. A Client takes them from its clock: the wall clock at
// New plus the monotonic time since. A replica that refuses a request as superseded
// says so with the marks it holds; on f+1 such notices the Client moves past them and
// re-issues the operation under a fresh timestamp if that keeps it within
// Config.MaxClockAhead of its clock, and otherwise fails at once with an error wrapping
// ErrTimestampSuperseded instead of timing out for good.
package client

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"go.uber.org/zap"

	"github.com/pbftkit/pbft/crypto"
	"github.com/pbftkit/pbft/network"
	"github.com/pbftkit/pbft/pbft"
	"github.com/pbftkit/pbft/pbft/cluster"
)

// Config configures a Client.
type Config struct {
	Cluster *cluster.Cluster
	ID      uint32             // a client id registered in the cluster
	Key     *crypto.PrivateKey // that client's key
	// Timeout is how long a request waits for f+1 matching replies before it is sent
	// to every replica; it doubles on each retransmission up to 8 times. Default 500 ms.
	Timeout time.Duration
	// MaxClockAhead is how far ahead of its clock the client may move its timestamps
	// when f+1 replicas report a request superseded: past the highest timestamp they
	// hold, then re-issuing the operation. Default 1 minute: synchronised clocks differ
	// by milliseconds and a clock stepped back (a correction after boot, a restored
	// virtual machine) by seconds, while a table far ahead means a wrong clock or
	// another process using this client id. Moving past that would hide the fault, and
	// make this client's timestamps run that far ahead of its clock, so Invoke fails.
	MaxClockAhead time.Duration
	Logger        *zap.Logger
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
	quorum  pbft.Quorum
	clock   clock

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
	ts      uint64
	index   uint64
	votes   *pbft.ReplyVotes
	notices map[pbft.ReplicaID]*pbft.Superseded
	frame   []byte // the signed request, set before it is first sent
	done    chan Result
	// superseded gets the highest timestamp f+1 replicas vouch for once they reported
	// this request superseded.
	superseded chan uint64
}

// ErrClosed is returned by Invoke on a closed Client.
var ErrClosed = errors.New("client: closed")

// ErrTimestampSuperseded is wrapped by the error of an Invoke whose request f+1
// replicas refused because they hold newer timestamps of this client than it may
// issue: far ahead of its clock (Config.MaxClockAhead), or still ahead after it moved
// past them a few times. The error says how far; the usual causes are a clock that was
// wrong when an earlier process of this client id ran, or another process using it.
var ErrTimestampSuperseded = errors.New("request timestamp superseded")

// supersededRetries bounds the transparent re-issues of one operation: a correct
// cluster answers a fresh timestamp past its marks, so a request superseded again and
// again means another process is issuing newer timestamps under this client id.
const supersededRetries = 3

// jitter is the range, in nanoseconds, of the random step past a superseding high mark
// (about a second): see movePast.
const jitter = 1 << 30

// clock is the source of timestamps: the wall clock when the client started plus the
// monotonic time since (time.Since reads the monotonic clock), so it never goes
// backwards inside the process, whatever happens to the wall clock, and a step back
// of the wall clock never leaves the client issuing timestamps ahead of its clock
// (lastTS+1) for as long as the step. Across restarts it is as good as the wall clock:
// an earlier process's timestamps above it are what superseded notices are for.
type clock struct {
	start time.Time
	wall  uint64 // start in nanoseconds since the epoch
}

func newClock() clock {
	t := time.Now()
	return clock{start: t, wall: uint64(max(t.UnixNano(), 0))}
}

func (k *clock) now() uint64 { return k.wall + uint64(time.Since(k.start)) }

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
	if cfg.MaxClockAhead <= 0 {
		cfg.MaxClockAhead = time.Minute
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
		quorum:  pbft.Quorum{N: len(cfg.Cluster.Replicas), F: cfg.Cluster.F},
		clock:   newClock(),
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
// application must keep its results within it. A request f+1 replicas report
// superseded is re-issued under a fresh timestamp past the marks they hold, at most a
// few times, or fails at once with an error wrapping ErrTimestampSuperseded when those
// marks are more than Config.MaxClockAhead ahead of the client's clock.
func (c *Client) Invoke(ctx context.Context, op []byte) (Result, error) {
	if len(op) > c.lim.MaxOpBytes {
		// Replicas refuse it unread: waiting would only end with ctx.
		return Result{}, fmt.Errorf("client %d: operation of %d bytes exceeds the %d-byte limit", c.id, len(op), c.lim.MaxOpBytes)
	}
	for tries := 0; ; tries++ {
		res, ts, high, superseded, err := c.invoke(ctx, op)
		if err != nil || !superseded {
			return res, err
		}
		if err := c.movePast(ts, high, tries); err != nil {
			return Result{}, err
		}
	}
}

// movePast acts on f+1 replicas' report that the request with timestamp ts was
// superseded, high being the least of the highest timestamps they hold for this
// client: at least one of them is correct and holds that much, so no single lying
// replica moves the client forward (it may pull high down; the fresh timestamp is then
// refused again or lands among executed ones, and the randomness below keeps a liar
// from aiming it at one of them).
//
// Re-issuing the operation is exactly-once safe (PBFT §4.1) because the superseded
// request never executed and never will. Never from now on: the correct replica among
// the f+1 holds a low mark >= ts, low marks only grow, in sequence order, and every
// correct replica refuses timestamps at or below its own. Never before: to have run
// and then been forgotten, ReplyWindow timestamps above ts must have run too, but start
// lets at most ReplyWindow-1 requests of this client be issued after its oldest one
// still pending, which this one was. That holds while one process at a time uses this
// client id and none of its requests lands among the timestamps an earlier process
// executed (a restart with the clock set back by less than those spanned): such a
// request runs, the table forgets it at once below the earlier ones, and if every
// reply to it were lost the notice to its retransmission would run it again.
func (c *Client) movePast(ts, high uint64, tries int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clock.now()
	// Past high the client must still fit its random step and many more requests.
	nearMax := high > math.MaxUint64-jitter-1<<32
	if nearMax || high > now && high-now > uint64(c.cfg.MaxClockAhead) {
		why := fmt.Sprintf("more than the %v it may run ahead (Config.MaxClockAhead), so it will not issue a newer one", c.cfg.MaxClockAhead)
		if nearMax {
			why = "it can never issue a newer one"
		}
		return fmt.Errorf("client %d: %w: the replicas have executed timestamps up to %d for client %d, %s ahead of this client's clock: %s; use another client id (was its clock wrong, or does another process use client id %d?)",
			c.id, ErrTimestampSuperseded, high, c.id, aheadString(high-min(now, high)), why, c.id)
	}
	if tries >= supersededRetries {
		return fmt.Errorf("client %d: %w: request t=%d refused %d times, each time behind timestamps the replicas had executed since (up to %d): does another process use client id %d?",
			c.id, ErrTimestampSuperseded, ts, tries+1, high, c.id)
	}
	if high > c.lastTS {
		c.lastTS = high
		if high >= now {
			// Ahead of the clock, the next timestamp lands at a random point of the
			// second past high, not at high+1: high may come from a lying replica (or a
			// lagging one) while an earlier process of this client executed high+1 and
			// its neighbours, and a timestamp equal to an executed one is answered with
			// that one's cached result. A second is small beside MaxClockAhead.
			c.lastTS += rand.Uint64N(jitter)
		}
	}
	c.log.Info("request superseded: re-issuing it past the replicas' timestamps",
		zap.Uint64("timestamp", ts), zap.Uint64("replicas_high", high), zap.Uint64("clock", now))
	return nil
}

// aheadString says how far ahead of the clock d nanoseconds is, in years past a year
// (a time.Duration ends at 292 years).
func aheadString(d uint64) string {
	const year = uint64(365.25 * 24 * float64(time.Hour))
	switch {
	case d >= year:
		return fmt.Sprintf("%d years", d/year)
	case d >= uint64(time.Minute):
		return time.Duration(d).Round(time.Second).String()
	}
	return time.Duration(d).Round(time.Millisecond).String()
}

// invoke issues op under a fresh timestamp ts and waits for its result, or for f+1
// replicas to report ts superseded (superseded, with the least high mark among them).
func (c *Client) invoke(ctx context.Context, op []byte) (res Result, ts, high uint64, superseded bool, err error) {
	p, err := c.start(ctx)
	if err != nil {
		return Result{}, 0, 0, false, err
	}
	defer c.finish(p)
	body := pbft.Request{Client: c.id, Timestamp: p.ts, Op: op}
	frame := pbft.EncodeEnvelope(&pbft.Envelope{Msg: pbft.Sign(c.signer, pbft.MsgRequest, uint32(c.id), body)})
	c.mu.Lock()
	p.frame = frame
	primary := c.cl.Replicas[c.quorum.Primary(c.view)].PeerID
	c.mu.Unlock()
	c.host.Send(primary, network.ClientProtocol, frame)
	timeout := c.cfg.Timeout
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for tries := 0; ; tries++ {
		select {
		case res, ok := <-p.done:
			if !ok {
				return Result{}, p.ts, 0, false, ErrClosed
			}
			return res, p.ts, 0, false, nil
		case high := <-p.superseded:
			return Result{}, p.ts, high, true, nil
		case <-ctx.Done():
			return Result{}, p.ts, 0, false, fmt.Errorf("client %d request t=%d: %w", c.id, p.ts, ctx.Err())
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
	// execute a (client, timestamp) at most once and refuse those at or below the
	// client's low mark (PBFT §4.1). They come from the clock, which never goes back
	// within the process, so lastTS+1 adds only nanoseconds, except after movePast.
	ts := max(c.lastTS+1, c.clock.now())
	c.lastTS = ts
	p := &call{ts: ts, index: c.issued, votes: pbft.NewReplyVotes(c.quorum),
		notices: make(map[pbft.ReplicaID]*pbft.Superseded), done: make(chan Result, 1), superseded: make(chan uint64, 1)}
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

// onFrame handles a reply or a superseded notice: the stream it came on names the
// replica.
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
	if env.Msg.Type == pbft.MsgSuperseded {
		c.onSuperseded(rid, &env.Msg)
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
	acc := p.votes.Add(rid, &rm.Reply)
	if acc == nil {
		return
	}
	c.view = max(c.view, acc.View)
	voters := make([]uint32, len(acc.Voters))
	for i, id := range acc.Voters {
		voters[i] = uint32(id)
	}
	delete(c.pending, p.ts)
	p.done <- Result{Value: acc.Result, Timestamp: p.ts, View: acc.View, Voters: voters}
}

// onSuperseded counts a replica's report that a pending request was superseded; once
// f+1 distinct replicas sent one, the request's Invoke gets the least of their high
// marks (see movePast) and the request stops waiting for replies.
func (c *Client) onSuperseded(rid pbft.ReplicaID, s *pbft.Signed) {
	sm, err := pbft.OpenSuperseded(s, rid, c.lim)
	if err != nil || sm.Superseded.Client != c.id {
		c.log.Debug("bad superseded notice", zap.Uint32("replica", uint32(rid)), zap.Error(err))
		return
	}
	c.mu.Lock()
	p := c.pending[sm.Superseded.Timestamp]
	if p == nil {
		c.mu.Unlock()
		return
	}
	if _, dup := p.notices[rid]; dup {
		c.mu.Unlock()
		return // one notice per replica: its first
	}
	p.notices[rid] = &sm.Superseded
	if len(p.notices) < c.quorum.Weak() {
		frame := p.frame
		first := len(p.notices) == 1 && frame != nil // nil: a liar guessed a timestamp not yet sent
		c.mu.Unlock()
		if first {
			// One notice proves nothing, but the others come at once if every replica
			// hears the request now rather than at the retransmission timeout: the
			// primary refused it and forwards nothing. n frames once per request, what
			// a silent primary causes anyway, so a liar gains nothing by it.
			for _, r := range c.cl.Replicas {
				if pbft.ReplicaID(r.ID) != rid {
					c.host.Send(r.PeerID, network.ClientProtocol, frame)
				}
			}
		}
		return
	}
	high, view := uint64(math.MaxUint64), uint64(math.MaxUint64)
	for _, n := range p.notices {
		high, view = min(high, n.High), min(view, n.View)
	}
	// The least view of f+1 replicas: at least one correct replica is in it or later.
	c.view = max(c.view, view)
	delete(c.pending, p.ts)
	p.superseded <- high
	c.mu.Unlock()
}

func addrs(m cluster.Member) []multiaddr.Multiaddr {
	if m.Addr == nil {
		return nil
	}
	return []multiaddr.Multiaddr{m.Addr}
}
