package sim

import (
	"fmt"

	"github.com/pbftkit/pbft/app/kvstore"
	"github.com/pbftkit/pbft/crypto"
	"github.com/pbftkit/pbft/pbft"
)

// client is a closed-loop signing client: one request at a time, sent to the primary it
// believes in, retransmitted to every replica on timeout, accepted on f+1 matching
// replies from distinct replicas.
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
}

type outstanding struct {
	ts     uint64
	frame  []byte
	sentAt int64
	votes  map[pbft.ReplicaID]crypto.Digest
	result map[crypto.Digest][]byte
}

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
	c.ts++
	c.issued++
	req := pbft.Request{Client: c.id, Timestamp: c.ts, Op: c.randomOp()}
	s := pbft.Sign(c.signer, pbft.MsgRequest, uint32(c.id), req)
	c.w.check.onSubmit(pbft.RequestDigest(s.Body))
	c.out = &outstanding{
		ts: c.ts, frame: pbft.EncodeEnvelope(&pbft.Envelope{Msg: s}), sentAt: c.ticks,
		votes: make(map[pbft.ReplicaID]crypto.Digest), result: make(map[crypto.Digest][]byte),
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
	rep, err := pbft.OpenReply(&env.Msg, pbft.ReplicaID(from), c.w.limits)
	if err != nil {
		c.w.res.Drops["client: bad reply"]++
		return
	}
	if c.out == nil || rep.Reply.Client != c.id || rep.Reply.Timestamp != c.out.ts {
		return
	}
	d := crypto.Hash(rep.Reply.Result)
	if _, voted := c.out.votes[rep.From]; voted {
		return // one vote per replica: the first
	}
	c.out.votes[rep.From] = d
	c.out.result[d] = rep.Reply.Result
	matching := 0
	for _, v := range c.out.votes {
		if v == d {
			matching++
		}
	}
	if matching >= c.w.quorum.Weak() {
		if rep.Reply.View > c.view {
			c.view = rep.Reply.View
		}
		c.w.check.onAccept(c.id, c.out.ts, rep.Reply.Result)
		c.out = nil
		c.done++
	}
}
