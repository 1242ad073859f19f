package pbft

import (
	"bytes"
	"fmt"
	"testing"
)

// runDelayed: every frame takes d ticks to arrive (a synchronous network after GST with
// a fixed one-way delay). It runs for rounds ticks and stops early once cond holds.
func (c *tCluster) runDelayed(d, rounds int, cond func() bool) bool {
	type dm struct {
		m  tMsg
		at int
	}
	var inflight []dm
	stamp := func(now int) {
		for _, m := range c.queue {
			inflight = append(inflight, dm{m, now + d})
		}
		c.queue = nil
	}
	stamp(0)
	for now := 1; now <= rounds; now++ {
		for i := 0; i < c.n; i++ {
			c.tick(i)
		}
		stamp(now)
		for {
			var due []tMsg
			rest := inflight[:0:0]
			for _, x := range inflight {
				if x.at <= now {
					due = append(due, x.m)
				} else {
					rest = append(rest, x)
				}
			}
			inflight = rest
			if len(due) == 0 {
				break
			}
			for _, m := range due {
				c.deliver(m)
			}
			stamp(now)
		}
		if cond() {
			return true
		}
	}
	return cond()
}

// The view-change timeout doubles also when NEW-VIEWs arrive but requests still do not
// execute in the new view (not only when a NEW-VIEW fails to arrive).
// With a fixed one-way delay a request needs several hops after the NEW-VIEW; with a
// short T every view would time out before it executes if the timeout did not grow.
func TestTimeoutGrowsWhenNewViewsArriveButNothingExecutes(t *testing.T) {
	const T, D = 8, 5
	c := newCluster(t, 4, vcTicks(T), func(cfg *Config) { cfg.RetransmitTicks = 1000 })
	req := c.request(1, "x")
	for i := 0; i < 4; i++ {
		c.submit(i, req)
	}
	maxTimeout := uint64(0)
	ok := c.runDelayed(D, 3000, func() bool {
		for _, r := range c.reps {
			maxTimeout = max(maxTimeout, r.vcTimeout)
		}
		n := 0
		for i := range c.n {
			if c.executed(i) >= 1 {
				n++
			}
		}
		return n >= 1
	})
	if !ok {
		t.Fatalf("no replica executed anything in 3000 ticks with all replicas correct and a fixed delay %d; largest vcTimeout seen %d:%s",
			D, maxTimeout, c.debug())
	}
}

// A Byzantine signer of a checkpoint proof, asked for state, cannot make a replica buffer
// more than MaxStateBytes before the digest check.
func TestStateAssemblyIsBoundedByMaxStateBytes(t *testing.T) {
	c := newCluster(t, 4, func(cfg *Config) { cfg.StateChunkBytes = 64 << 10 })
	// A stable checkpoint at 4 with a digest the victim (3) cannot reach.
	var fake [32]byte
	fake[0] = 1
	var proof []Signed
	for _, i := range []int{0, 1, 2} {
		proof = append(proof, c.checkpointAs(i, 4, fake).Msg)
	}
	for _, s := range proof {
		c.injectNow(int(s.From), 3, env(s))
	}
	tr := c.reps[3].transfer
	if tr == nil {
		t.Fatalf("no transfer started")
	}
	peer := int(tr.peer)
	chunk := bytes.Repeat([]byte{7}, 64<<10)
	const chunks = 1 << 16
	total := 0
	for k := 0; k < 1000; k++ {
		resp := StateResponse{Seq: 4, Proof: proof, Chunk: uint32(k), Chunks: chunks, State: chunk}
		c.injectNow(peer, 3, env(c.signAs(peer, MsgStateResponse, resp)))
		total = 0
		for _, ch := range c.reps[3].transfer.chunks {
			total += len(ch)
		}
	}
	if total > c.lim.MaxStateBytes {
		t.Fatalf("victim buffers %d bytes of unverified state from one peer (and would take up to %d)", total, chunks*(64<<10))
	}
}

// Which of two requests with one client and timestamp (a faulty client) a new primary
// proposes never depends on map iteration order: identical runs agree.
func TestNewPrimaryProposalOrderIsDeterministic(t *testing.T) {
	const T = 10
	first := map[string]int{}
	for run := 0; run < 30; run++ {
		c := newCluster(t, 4, vcTicks(T))
		c.isolate(0)
		a, a2 := c.requestAt(1, 1, "A"), c.requestAt(1, 1, "A-prime")
		for _, i := range []int{1, 2, 3} {
			c.submit(i, a)
			c.submit(i, a2)
		}
		c.run()
		if !c.runUntil(10*T, func() bool { return c.allExecuted(1, 1, 2, 3) }) {
			t.Fatalf("nothing executed:%s", c.debug())
		}
		first[string(short(c.apps[1].digests[1]))]++
	}
	if len(first) != 1 {
		t.Fatalf("identical runs executed different batches at n=1: %v", first)
	}
}

// Safety: a re-elected primary never signs a second pre-prepare for a seq its own
// NEW-VIEW fills, even when the NEW-VIEW's checkpoint proof moves its window and it has
// requests left from an earlier term: it would otherwise sign two pre-prepares for one
// (view, seq) and execute the wrong batch there.
func TestReelectedPrimaryNeverProposesIntoASeqItsNewViewFills(t *testing.T) {
	c := newCluster(t, 4)
	for _, j := range []int{1, 2, 3} {
		c.isolate(j) // replica 0 is driven by hand; what it sends is lost
	}
	var rs []*Envelope
	for k := 1; k <= 9; k++ {
		rs = append(rs, c.requestAt(ClientID(k), 1, fmt.Sprintf("r%d", k)))
	}
	for _, r := range rs {
		c.submit(0, r)
	}
	c.run() // 0 proposes r1..r8 at 1..8 (window full); r9 stays pending
	if c.reps[0].pending.len() != 1 {
		t.Fatalf("want r9 pending:%s", c.debug())
	}
	for n := uint64(1); n <= 4; n++ {
		d := batchDigestOf(rs[n-1])
		for _, j := range []int{1, 2} {
			c.injectNow(j, 0, c.prepareAs(j, 0, n, d))
		}
		for _, j := range []int{1, 2} {
			c.injectNow(j, 0, c.commitAs(j, 0, n, d))
		}
	}
	if c.executed(0) != 4 || c.reps[0].ckpts[4] == nil || c.reps[0].ckpts[4].own == nil {
		t.Fatalf("want 1..4 executed and checkpoint 4 taken:%s", c.debug())
	}
	d4 := c.reps[0].ckpts[4].ownDigest
	var proof []Signed
	for _, j := range []int{1, 2, 3} {
		proof = append(proof, c.checkpointAs(j, 4, d4).Msg)
	}
	// In view 1 (primary 1) the others prepared y5..y9 at 5..9; views 2 and 3 failed.
	var ys []*Envelope
	var certs []PreparedCert
	for n := uint64(5); n <= 9; n++ {
		y := c.requestAt(ClientID(n+5), 1, fmt.Sprintf("y%d", n))
		ys = append(ys, y)
		certs = append(certs, c.certAs(1, n, batchDigestOf(y), 2, 3))
	}
	c.injectNow(1, 0, env(c.viewChangeAs(1, 4, 4, proof, certs...)))
	c.injectNow(2, 0, env(c.viewChangeAs(2, 4, 4, proof, certs...)))
	c.requireView(4, true, 0)

	var normal []msgInfo
	for _, m := range c.sent(0, MsgPrePrepare) {
		if m.View == 4 && m.Seq <= 9 {
			normal = append(normal, m)
		}
	}
	e := c.reps[0].log[9]
	d9 := batchDigestOf(ys[4])
	if len(normal) > 0 {
		t.Errorf("replica 0 (correct primary of view 4) sent pre-prepare(s) %+v conflicting with its own NEW-VIEW, whose O assigns n=5..9 (y5..y9)", normal)
	}
	if e != nil && e.digest == d9 && e.hasBatch && (len(e.batch) != 1 || e.batch[0].Digest != reqDigest(ys[4])) {
		t.Errorf("log entry n=9 has digest %x (y9) but holds the batch of another request", short(d9))
	}
	// Let view 4 run: the others prepare and commit O, and answer the batch fetches.
	for n := uint64(5); n <= 9; n++ {
		d := batchDigestOf(ys[n-5])
		br := &Envelope{Msg: c.signAs(1, MsgBatchReply, BatchReply{Seq: n, Digest: d}), Batch: []Signed{ys[n-5].Msg}}
		c.injectNow(1, 0, br)
		for _, j := range []int{1, 2} {
			c.injectNow(j, 0, c.prepareAs(j, 4, n, d))
		}
		for _, j := range []int{1, 2} {
			c.injectNow(j, 0, c.commitAs(j, 4, n, d))
		}
	}
	if c.apps[0].runs[reqKey{9, 1}] > 0 && c.apps[0].runs[reqKey{14, 1}] == 0 {
		t.Fatalf("replica 0 executed r9 at n=9 where every other replica executes y9 (digest %x):%s", short(d9), c.debug())
	}
}
