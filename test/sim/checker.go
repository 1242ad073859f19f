package sim

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"slices"

	"github.com/pbftkit/pbft/crypto"
	"github.com/pbftkit/pbft/pbft"
)

type reqKey struct {
	client pbft.ClientID
	ts     uint64
}

// checker holds the invariants of a run. Every method is called as the event happens,
// so a violation is reported at the first message that breaks it.
type checker struct {
	correct  []bool
	res      *Result
	batchAt  map[uint64]executedBatch // agreement: seq -> batch, from the first correct executor
	executed []map[reqKey]bool        // exactly-once, per correct replica
	resultOf map[reqKey][]byte        // the result correct replicas computed
	accepted map[reqKey][]byte        // results clients accepted
	ckptAt   map[uint64]ckptWitness   // checkpoint digests of correct replicas
	submit   map[crypto.Digest]bool   // validity: requests clients really signed
	lastSeq  []uint64                 // per replica: the last seq executed or installed
	adopted  []uint64                 // per replica: the highest certified state its core took
	seqOf    map[reqKey]executedAt    // the seq at which each request executed
	// signed is, per correct replica, the digest of each PRE-PREPARE, PREPARE and
	// COMMIT it signed, by (type, view, seq): across its crashes too.
	signed []map[signedSlot]crypto.Digest
}

type signedSlot struct {
	typ       pbft.MsgType
	view, seq uint64
}

type executedAt struct {
	replica int
	seq     uint64
}

type executedBatch struct {
	replica int
	digest  crypto.Digest
}

type ckptWitness struct {
	replica int
	digest  crypto.Digest
}

const maxViolations = 5

func newChecker(n int, correct []bool, res *Result) *checker {
	c := &checker{
		correct: correct, res: res,
		batchAt:  make(map[uint64]executedBatch),
		executed: make([]map[reqKey]bool, n),
		resultOf: make(map[reqKey][]byte),
		accepted: make(map[reqKey][]byte),
		ckptAt:   make(map[uint64]ckptWitness),
		submit:   make(map[crypto.Digest]bool),
		lastSeq:  make([]uint64, n),
		adopted:  make([]uint64, n),
		seqOf:    make(map[reqKey]executedAt),
		signed:   make([]map[signedSlot]crypto.Digest, n),
	}
	for i := range c.signed {
		c.signed[i] = make(map[signedSlot]crypto.Digest)
	}
	for i := range c.executed {
		c.executed[i] = make(map[reqKey]bool)
	}
	return c
}

func (c *checker) violate(format string, args ...any) {
	if len(c.res.Violations) < maxViolations {
		c.res.Violations = append(c.res.Violations, fmt.Sprintf(format, args...))
	}
}

func (c *checker) onSubmit(d crypto.Digest) { c.submit[d] = true }

// onExecute checks agreement (one batch per seq across correct replicas), validity (only
// requests a client signed) and exactly-once (no request twice at one replica).
func (c *checker) onExecute(replica int, b *pbft.Batch, results [][]byte) {
	if b.Seq != c.lastSeq[replica]+1 {
		c.violate("order: replica %d executed n=%d right after n=%d", replica, b.Seq, c.lastSeq[replica])
	}
	c.lastSeq[replica] = b.Seq
	if prev, ok := c.batchAt[b.Seq]; ok {
		if prev.digest != b.Digest {
			c.violate("agreement: replica %d executed batch %s at n=%d but replica %d executed %s",
				replica, b.Digest.Short(), b.Seq, prev.replica, prev.digest.Short())
		}
	} else {
		c.batchAt[b.Seq] = executedBatch{replica: replica, digest: b.Digest}
	}
	for i, m := range b.Requests {
		if !c.submit[m.Digest] {
			c.violate("validity: replica %d executed a request no client submitted (client %d t=%d) at n=%d",
				replica, m.Request.Client, m.Request.Timestamp, b.Seq)
		}
		k := reqKey{m.Request.Client, m.Request.Timestamp}
		if c.executed[replica][k] {
			c.violate("exactly-once: replica %d executed client %d t=%d twice (again at n=%d)",
				replica, k.client, k.ts, b.Seq)
		}
		c.executed[replica][k] = true
		if at, ok := c.seqOf[k]; !ok {
			c.seqOf[k] = executedAt{replica, b.Seq}
		} else if at.seq != b.Seq {
			c.violate("exactly-once: client %d t=%d executed at n=%d on replica %d but at n=%d on replica %d",
				k.client, k.ts, b.Seq, replica, at.seq, at.replica)
		}
		if prev, ok := c.resultOf[k]; ok {
			if !bytes.Equal(prev, results[i]) {
				c.violate("determinism: replicas computed different results for client %d t=%d", k.client, k.ts)
			}
		} else {
			c.resultOf[k] = results[i]
		}
		if acc, ok := c.accepted[k]; ok && !bytes.Equal(acc, results[i]) {
			c.violate("f+1 voting: client %d accepted a result for t=%d that correct replicas did not compute", k.client, k.ts)
		}
	}
}

// onInstall records that replica jumped to checkpoint seq by state transfer (the
// requests before it were executed elsewhere and arrive with the state). A correct
// replica only ever moves forward.
// onAdopt records that replica's core took the certified state at checkpoint seq (its
// Install emitted): durable with its stable record from then on, though its application
// may load it only later (after the disk), or never if it crashes first.
func (c *checker) onAdopt(replica int, seq uint64) {
	c.adopted[replica] = max(c.adopted[replica], seq)
}

func (c *checker) onInstall(replica int, seq uint64) {
	if seq <= c.lastSeq[replica] {
		c.violate("order: replica %d installed checkpoint n=%d after executing n=%d", replica, seq, c.lastSeq[replica])
	}
	c.lastSeq[replica] = seq
}

// onRestart records that replica came back from its records at seq, its stable
// checkpoint: it never executed less, and what it executed after seq is gone from its
// state and will run again.
func (c *checker) onRestart(replica int, seq uint64) {
	if seq > c.lastSeq[replica] && seq > c.adopted[replica] {
		c.violate("restart: replica %d restored checkpoint n=%d beyond what it executed (n=%d)", replica, seq, c.lastSeq[replica])
	}
	c.lastSeq[replica] = seq
	for k := range c.executed[replica] {
		if c.seqOf[k].seq > seq {
			delete(c.executed[replica], k)
		}
	}
}

// converged compares the application state of correct replicas that executed the same
// sequence numbers: equal histories must give equal states.
func (c *checker) converged(states map[int][]byte, seq uint64) {
	first := -1
	for i := range c.correct {
		st, ok := states[i]
		if !ok {
			continue
		}
		if first < 0 {
			first = i
			continue
		}
		if !bytes.Equal(st, states[first]) {
			c.violate("state: replicas %d and %d both executed up to n=%d but hold different application state", first, i, seq)
		}
	}
}

// onSigned sees every protocol message a correct replica sends under its own name. A
// correct replica never signs two PRE-PREPAREs, PREPAREs or COMMITs for one view and
// seq with different digests, not even across a crash: its records (durable before the
// message left) are what stops it, so this is how a broken durability rule of the
// driver shows.
func (c *checker) onSigned(replica int, s *pbft.Signed) {
	switch s.Type {
	case pbft.MsgCheckpoint:
		c.onCheckpoint(replica, s)
	case pbft.MsgPrePrepare, pbft.MsgPrepare, pbft.MsgCommit:
		// The three bodies have one shape: view, seq, digest.
		var v pbft.Prepare
		if err := decodeBody(s.Body, &v); err != nil {
			c.violate("replica %d sent an undecodable %s: %v", replica, s.Type, err)
			return
		}
		k := signedSlot{s.Type, v.View, v.Seq}
		if prev, ok := c.signed[replica][k]; ok && prev != v.Digest {
			c.violate("equivocation: correct replica %d signed %s v=%d n=%d for %s, then for %s",
				replica, s.Type, v.View, v.Seq, prev.Short(), v.Digest.Short())
			return
		}
		c.signed[replica][k] = v.Digest
	}
}

func (c *checker) onCheckpoint(replica int, s *pbft.Signed) {
	var cp pbft.Checkpoint
	if err := decodeBody(s.Body, &cp); err != nil {
		c.violate("replica %d sent an undecodable checkpoint: %v", replica, err)
		return
	}
	if prev, ok := c.ckptAt[cp.Seq]; ok {
		if prev.digest != cp.State {
			c.violate("checkpoint: replica %d has state %s at n=%d, replica %d has %s",
				replica, cp.State.Short(), cp.Seq, prev.replica, prev.digest.Short())
		}
		return
	}
	c.ckptAt[cp.Seq] = ckptWitness{replica: replica, digest: cp.State}
}

func (c *checker) onAccept(client pbft.ClientID, ts uint64, result []byte) {
	k := reqKey{client, ts}
	c.accepted[k] = result
	if res, ok := c.resultOf[k]; ok && !bytes.Equal(res, result) {
		c.violate("f+1 voting: client %d accepted a result for t=%d that correct replicas did not compute", client, ts)
	}
}

// finish checks what can only be judged at the end: a result accepted by a client must
// have been computed by some correct replica.
func (c *checker) finish() {
	// In (client, timestamp) order, so a replay reports the same violations.
	keys := slices.SortedFunc(maps.Keys(c.accepted), func(a, b reqKey) int {
		return cmp.Or(cmp.Compare(a.client, b.client), cmp.Compare(a.ts, b.ts))
	})
	for _, k := range keys {
		if _, ok := c.resultOf[k]; !ok {
			c.violate("f+1 voting: client %d accepted a result for t=%d that no correct replica computed", k.client, k.ts)
		}
	}
}
