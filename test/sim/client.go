package sim

import (
	"fmt"
	"math"

	"github.com/pbftkit/pbft/app/kvstore"
	"github.com/pbftkit/pbft/pbft"
)

// client is a closed-loop signing client: one request at a time, sent to the primary it
// believes in, retransmitted to every replica on timeout, accepted on f+1 matching
// replies from distinct replicas. Like the client library, on f+1 superseded notices
// from distinct replicas it moves past the least high mark among them and re-issues
// the operation under a fresh timestamp, a bounded number of times.
type client struct {
	w      *world
	id     pbft.ClientID
	addr   int
	signer pbft.Signer
	quota  int
	done   int

	view   uint64 // the view it believes in, learnt from accepted replies
	ts     uint64
	out    *outstanding
	ticks  int64
	issued int

	// restartAt and restartTS are for tests: once restartAt requests completed, the
	// client restarts with its timestamps from restartTS on, as a process whose clock
	// was set back would.
	restartAt int
	restartTS uint64
}

type outstanding struct {
	ts       uint64
	op       []byte
	frame    []byte
	sentAt   int64
	votes    *pbft.ReplyVotes
	notices  map[pbft.ReplicaID]uint64 // the high mark of each replica that sent a notice
	reissues int
}

// simSupersededRetries bounds the re-issues of one operation, as in the client library.
const simSupersededRetries = 3

func newClient(w *world, id pbft.ClientID, addr, quota int) *client {
	return &client{w: w, id: id, addr: addr, quota: quota, signer: w.keys.signers[nodeKey{client: true, id: uint32(id)}]}
}

func (c *client) finished() bool { return c.done >= c.quota }

func (c *client) tick() {
	c.ticks++
	switch {
	case c.out == nil && c.issued < c.quota:
		c.issue()
	case c.out != nil && c.ticks-c.out.sentAt >= int64(c.w.opts.ClientTimeout):
		// PBFT §4.1: on timeout the client multicasts the request to every replica.
		c.out.sentAt = c.ticks
		for i := 0; i < c.w.n; i++ {
			c.w.send(c.addr, i, c.out.frame)
		}
	}
}

func (c *client) randomOp() []byte {
	rng := c.w.rng
	key := fmt.Sprintf("k%d", rng.IntN(8))
	val := fmt.Appendf(nil, "v%d", rng.IntN(1000))
	switch rng.IntN(4) {
	case 0:
		return kvstore.Get(key)
	case 1:
		return kvstore.Delete(key)
	case 2:
		return kvstore.CAS(key, fmt.Appendf(nil, "v%d", rng.IntN(1000)), val)
	default:
		return kvstore.Put(key, val)
	}
}

func (c *client) issue() {
	if c.restartAt > 0 && c.done == c.restartAt {
		c.ts, c.restartAt = c.restartTS, 0
	}
	c.issued++
	c.send(c.randomOp(), 0)
}

// send signs op under the next timestamp and sends it to the primary.
func (c *client) send(op []byte, reissues int) {
	c.ts++
	req := pbft.Request{Client: c.id, Timestamp: c.ts, Op: op}
	s := pbft.Sign(c.signer, pbft.MsgRequest, uint32(c.id), req)
	c.w.check.onSubmit(pbft.RequestDigest(s.Body))
	c.out = &outstanding{
		ts: c.ts, op: op, frame: pbft.EncodeEnvelope(&pbft.Envelope{Msg: s}), sentAt: c.ticks,
		votes:   pbft.NewReplyVotes(c.w.quorum),
		notices: make(map[pbft.ReplicaID]uint64), reissues: reissues,
	}
	c.w.send(c.addr, int(c.w.quorum.Primary(c.view)), c.out.frame)
}

func (c *client) receive(from int, frame []byte) {
	if from >= c.w.n {
		return
	}
	env, err := pbft.DecodeEnvelope(frame, c.w.limits)
	if err != nil {
		c.w.res.Drops["client: decode"]++
		return
	}
	if env.Msg.Type == pbft.MsgSuperseded {
		c.superseded(from, &env.Msg)
		return
	}
	rep, err := pbft.OpenReply(&env.Msg, pbft.ReplicaID(from), c.w.limits)
	if err != nil {
		c.w.res.Drops["client: bad reply"]++
		return
	}
	if c.out == nil || rep.Reply.Client != c.id || rep.Reply.Timestamp != c.out.ts {
		return
	}
	// The client library's own counter: f+1 matching results, the view taken as the
	// (f+1)-th highest among their voters.
	if acc := c.out.votes.Add(rep.From, &rep.Reply); acc != nil {
		c.view = max(c.view, acc.View)
		c.w.check.onAccept(c.id, c.out.ts, acc.Result)
		c.out = nil
		c.done++
	}
}

// superseded counts a replica's notice that the outstanding request was refused as
// superseded. On f+1 from distinct replicas (one of them correct, so a liar alone moves
// nothing) the client moves past the least high mark and re-issues the operation: it
// was never executed, as the client never has more than one request in flight (see the
// client library's movePast). With no room left past the mark, or after
// simSupersededRetries re-issues, it abandons the request, which the run then reports
// as incomplete.
func (c *client) superseded(from int, s *pbft.Signed) {
	sm, err := pbft.OpenSuperseded(s, pbft.ReplicaID(from), c.w.limits)
	if err != nil {
		c.w.res.Drops["client: bad superseded notice"]++
		return
	}
	n := &sm.Superseded
	if c.out == nil || n.Client != c.id || n.Timestamp != c.out.ts {
		return
	}
	if _, dup := c.out.notices[sm.From]; dup {
		return
	}
	c.out.notices[sm.From] = n.High
	if len(c.out.notices) == 1 {
		// As the library does: the primary refused it and forwards nothing, so every
		// replica hears it now rather than at the timeout.
		for i := 0; i < c.w.n; i++ {
			if i != from {
				c.w.send(c.addr, i, c.out.frame)
			}
		}
	}
	if len(c.out.notices) < c.w.quorum.Weak() {
		return
	}
	high := uint64(math.MaxUint64)
	for _, h := range c.out.notices {
		high = min(high, h)
	}
	if high > math.MaxUint64-1<<32 || c.out.reissues >= simSupersededRetries {
		c.w.res.Drops["client: request superseded for good"]++
		c.out = nil
		return
	}
	c.w.res.Drops["client: request superseded, re-issued"]++
	c.ts = max(c.ts, high)
	c.send(c.out.op, c.out.reissues+1)
}
