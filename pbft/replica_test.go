package pbft

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/pbftkit/pbft/crypto"
)

// ---- pre-prepare acceptance (PBFT §4.2, step 3) ----

func TestSecondPrePrepareWithAnotherDigestForSameViewAndSeqIsRefused(t *testing.T) {
	c := newCluster(t, 4)
	a, b := c.request(1, "a"), c.request(2, "b")
	dA, dB := batchDigestOf(a), batchDigestOf(b)

	c.injectNow(0, 1, c.prePrepareAs(0, 0, 1, a))
	c.injectNow(0, 1, c.prePrepareAs(0, 0, 1, b))

	if got := c.dropped(1, "equivocating"); len(got) != 1 || got[0].From != 0 || got[0].Type != MsgPrePrepare {
		t.Fatalf("second pre-prepare for (v=0, n=1): drops %+v, want one equivocation drop from 0", c.drops[1])
	}
	preps := c.sentFor(1, MsgPrepare, 1)
	if len(preps) != 1 || preps[0].Digest != dA || preps[0].View != 0 {
		t.Fatalf("replica 1 prepared %+v, want exactly one prepare for the first digest", preps)
	}

	// The same pre-prepare again is a retransmission, not an equivocation.
	c.injectNow(0, 1, c.prePrepareAs(0, 0, 1, a))
	if len(c.dropped(1, "equivocating")) != 1 || len(c.sentFor(1, MsgPrepare, 1)) != 1 {
		t.Fatalf("a repeated identical pre-prepare was refused or prepared twice: drops %+v", c.drops[1])
	}

	// Commits for the refused digest, and fewer than 2f prepares for it, do not make it
	// prepared or committed here.
	c.injectNow(2, 1, c.prepareAs(2, 0, 1, dB))
	for _, j := range []int{0, 2, 3} {
		c.injectNow(j, 1, c.commitAs(j, 0, 1, dB))
	}
	if cm := c.sentFor(1, MsgCommit, 1); len(cm) != 0 || len(c.apps[1].batches) != 0 {
		t.Fatalf("replica 1 committed %+v (executed %v) on f prepares for the refused digest", cm, c.apps[1].batches)
	}
	if e := c.reps[1].log[1]; e == nil || e.digest != dA || e.pp.PrePrepare.Digest != dA {
		t.Fatalf("replica 1's log entry for n=1 no longer holds the first pre-prepare")
	}
	// 2f prepares from distinct backups for the other digest: it prepared without
	// replica 1, and the first never can (switchToAlt). Replica 1 commits and executes
	// it, and never signs a second PREPARE for the slot.
	c.injectNow(3, 1, c.prepareAs(3, 0, 1, dB))
	cm := c.sentFor(1, MsgCommit, 1)
	if len(cm) != 1 || cm[0].Digest != dB {
		t.Fatalf("replica 1 committed %+v after 2f prepares for the other digest, want one commit for it", cm)
	}
	if preps := c.sentFor(1, MsgPrepare, 1); len(preps) != 1 || preps[0].Digest != dA {
		t.Fatalf("replica 1 prepared %+v, want only its first prepare", preps)
	}
	if len(c.apps[1].batches) != 1 || c.apps[1].digests[1] != dB {
		t.Fatalf("replica 1 executed %v, want the batch that prepared", c.apps[1].digests)
	}
}

func TestPrePrepareFromNonPrimaryIsRefused(t *testing.T) {
	c := newCluster(t, 4)
	a := c.request(1, "a")

	// Replica 2 is a backup in view 0.
	c.injectNow(2, 1, c.prePrepareAs(2, 0, 1, a))
	if len(c.dropped(1, "not from the primary")) != 1 {
		t.Fatalf("pre-prepare from backup 2: drops %+v", c.drops[1])
	}
	// Replica 1 is the primary of view 1, not of the current view 0.
	c.injectNow(1, 2, c.prePrepareAs(1, 1, 1, a))
	if len(c.dropped(2, "another view")) != 1 {
		t.Fatalf("pre-prepare of view 1 in view 0: drops %+v", c.drops[2])
	}
	// Replica 3 signs a pre-prepare claiming view 0 with itself as sender.
	c.injectNow(3, 2, c.prePrepareAs(3, 0, 2, a))
	if len(c.dropped(2, "not from the primary")) != 1 {
		t.Fatalf("pre-prepare from backup 3: drops %+v", c.drops[2])
	}
	for _, i := range []int{1, 2} {
		if p := c.sent(i, MsgPrepare); len(p) != 0 {
			t.Fatalf("replica %d prepared %+v after refused pre-prepares", i, p)
		}
		if s := c.reps[i].Status(); s.LogSize != 0 {
			t.Fatalf("replica %d logged a refused pre-prepare: %+v", i, s)
		}
	}
}

func TestPrePrepareOutsideWatermarksIsRefused(t *testing.T) {
	c := newCluster(t, 4) // h = 0, L = 8: 0 < n <= 8
	for i, seq := range []uint64{0, 9, 16, 1 << 32, math.MaxUint64 - 7, math.MaxUint64} {
		c.injectNow(0, 1, c.prePrepareAs(0, 0, seq, c.request(1, fmt.Sprint("out", i))))
	}
	if got := len(c.dropped(1, "outside the watermarks")); got != 6 {
		t.Fatalf("pre-prepares outside (0, 8]: %d refused, want 6; drops %+v", got, c.drops[1])
	}
	if p := c.sent(1, MsgPrepare); len(p) != 0 {
		t.Fatalf("replica 1 prepared %+v outside the watermarks", p)
	}
	c.injectNow(0, 1, c.prePrepareAs(0, 0, 8, c.request(2, "high mark")))
	if p := c.sentFor(1, MsgPrepare, 8); len(p) != 1 {
		t.Fatalf("pre-prepare at the high watermark n=8 was not accepted; drops %+v", c.drops[1])
	}

	// After a stable checkpoint at 4 the window is (4, 12].
	c2 := newCluster(t, 4)
	c2.submitAndRun(c2.requests(4, 2, "w")...)
	for i := range c2.n {
		if s := c2.reps[i].Status(); s.LowMark != 4 {
			t.Fatalf("replica %d: low mark %d after 4 requests, want 4", i, s.LowMark)
		}
	}
	for _, seq := range []uint64{3, 4, 13} {
		c2.injectNow(0, 1, c2.prePrepareAs(0, 0, seq, c2.request(3, fmt.Sprint("x", seq))))
	}
	if got := len(c2.dropped(1, "outside the watermarks")); got != 3 {
		t.Fatalf("after h=4, pre-prepares at 3, 4 and 13: %d refused, want 3; drops %+v", got, c2.drops[1])
	}
	c2.injectNow(0, 1, c2.prePrepareAs(0, 0, 12, c2.request(3, "x12")))
	if p := c2.sentFor(1, MsgPrepare, 12); len(p) != 1 {
		t.Fatalf("after h=4, pre-prepare at n=12 was not accepted; drops %+v", c2.drops[1])
	}
}

// ---- prepared and committed-local (steps 4 and 5) ----

func TestPrepareFromPrimaryDoesNotCountTowardsPrepared(t *testing.T) {
	c := newCluster(t, 4) // 2f = 2 prepares from backups
	a := c.request(1, "a")
	d := batchDigestOf(a)

	c.injectNow(0, 1, c.prePrepareAs(0, 0, 1, a)) // own prepare: 1
	c.injectNow(0, 1, c.prepareAs(0, 0, 1, d))    // from the primary: must not count
	if len(c.dropped(1, "prepare from the primary")) != 1 {
		t.Fatalf("prepare from the primary not refused: drops %+v", c.drops[1])
	}
	if cm := c.sent(1, MsgCommit); len(cm) != 0 {
		t.Fatalf("backup prepared with the primary's prepare counted: sent %+v", cm)
	}
	c.injectNow(2, 1, c.prepareAs(2, 0, 1, d)) // second backup: 2 = 2f
	if cm := c.sentFor(1, MsgCommit, 1); len(cm) != 1 || cm[0].Digest != d {
		t.Fatalf("backup with 2f backup prepares did not commit: sent %+v", cm)
	}

	// The primary too needs 2f prepares from backups; its pre-prepare is no prepare.
	p := newCluster(t, 4)
	p.holdIf = isType(MsgPrepare)
	b := p.request(1, "b")
	p.submit(0, b)
	p.run()
	if pp := p.sentFor(0, MsgPrePrepare, 1); len(pp) != 1 {
		t.Fatalf("primary did not pre-prepare: %+v", p.sent(0, MsgPrePrepare))
	}
	p.holdIf = nil
	p.release(func(m tMsg) bool { return m.to == 0 && m.from == 1 })
	p.run()
	if cm := p.sent(0, MsgCommit); len(cm) != 0 {
		t.Fatalf("primary committed with one backup prepare: %+v", cm)
	}
	p.release(func(m tMsg) bool { return m.to == 0 && m.from == 2 })
	p.runWhere(func(m tMsg) bool { return m.to == 0 })
	if cm := p.sentFor(0, MsgCommit, 1); len(cm) != 1 {
		t.Fatalf("primary did not commit with 2f backup prepares: %+v", cm)
	}
}

func TestPreparedNeedsTwoFMatchingPreparesFromDistinctBackups(t *testing.T) {
	c := newCluster(t, 7) // f = 2: the pre-prepare and 4 matching prepares from distinct backups
	a, b := c.request(1, "a"), c.request(2, "b")
	d, dB := batchDigestOf(a), batchDigestOf(b)
	noCommit := func(stage string) {
		t.Helper()
		if cm := c.sentFor(1, MsgCommit, 1); len(cm) != 0 {
			t.Fatalf("%s: replica 1 committed early: %+v", stage, cm)
		}
	}

	c.injectNow(0, 1, c.prePrepareAs(0, 0, 1, a)) // own prepare: 1
	c.injectNow(2, 1, c.prepareAs(2, 0, 1, d))    // 2
	c.injectNow(2, 1, c.prepareAs(2, 0, 1, d))    // duplicate: still 2
	noCommit("duplicate prepare from 2")
	c.injectNow(1, 1, c.prepareAs(1, 0, 1, d)) // a copy of its own prepare: still 2
	noCommit("echo of own prepare")
	c.injectNow(3, 1, c.prepareAs(3, 0, 1, dB)) // another digest
	c.injectNow(4, 1, c.prepareAs(4, 2, 1, d))  // another view
	c.injectNow(5, 1, c.prepareAs(5, 0, 2, d))  // another seq
	noCommit("mismatching prepares")
	if len(c.dropped(1, "prepare for another view")) != 1 {
		t.Fatalf("prepare of another view not refused: drops %+v", c.drops[1])
	}
	// Replica 3 signs a second digest: evidence that it is faulty, kept and counted for
	// that digest (a first-come slot would let it veto wherever its other vote came
	// first); a third digest from it is dropped.
	c.injectNow(3, 1, c.prepareAs(3, 0, 1, d)) // 3
	if len(c.dropped(1, "conflicting prepare")) != 1 {
		t.Fatalf("second prepare from 3 with another digest not counted as a conflict: drops %+v", c.drops[1])
	}
	c.injectNow(3, 1, c.prepareAs(3, 0, 1, crypto.Digest{3}))
	if len(c.dropped(1, "prepare: more digests from one replica")) != 1 {
		t.Fatalf("third prepare from 3 with another digest not refused: drops %+v", c.drops[1])
	}
	noCommit("2f-1 matching prepares, replica 3's second digest among them")
	c.injectNow(4, 1, c.prepareAs(4, 0, 1, d)) // 4 = 2f
	if cm := c.sentFor(1, MsgCommit, 1); len(cm) != 1 || cm[0].Digest != d || cm[0].View != 0 {
		t.Fatalf("replica 1 did not commit once on 2f matching prepares: %+v", cm)
	}
	c.injectNow(5, 1, c.prepareAs(5, 0, 1, d))
	c.injectNow(6, 1, c.prepareAs(6, 0, 1, d))
	if cm := c.sentFor(1, MsgCommit, 1); len(cm) != 1 {
		t.Fatalf("replica 1 committed again on a further prepare: %+v", cm)
	}

	// Prepares that arrive before the pre-prepare count once it arrives, if they match.
	c.injectNow(3, 2, c.prepareAs(3, 0, 1, d))
	c.injectNow(4, 2, c.prepareAs(4, 0, 1, d))
	c.injectNow(5, 2, c.prepareAs(5, 0, 1, dB))
	c.injectNow(6, 2, c.prepareAs(6, 0, 1, dB))
	c.injectNow(0, 2, c.prePrepareAs(0, 0, 1, a)) // own prepare: 3 matching
	if cm := c.sentFor(2, MsgCommit, 1); len(cm) != 0 {
		t.Fatalf("replica 2 committed with 2f-1 matching prepares: %+v", cm)
	}
	c.injectNow(1, 2, c.prepareAs(1, 0, 1, d))
	if cm := c.sentFor(2, MsgCommit, 1); len(cm) != 1 || cm[0].Digest != d {
		t.Fatalf("replica 2 did not commit on 2f matching prepares: %+v", cm)
	}
}

func TestRequestExecutesOnlyOnceCommittedLocal(t *testing.T) {
	c := newCluster(t, 4) // 2f+1 = 3 matching commits, own included
	a, other := c.request(1, "a"), c.request(2, "other")
	d, dO := batchDigestOf(a), batchDigestOf(other)
	noExec := func(i int, stage string) {
		t.Helper()
		if len(c.apps[i].batches) != 0 {
			t.Fatalf("%s: replica %d executed %v", stage, i, c.apps[i].batches)
		}
	}

	c.injectNow(0, 1, c.prePrepareAs(0, 0, 1, a))
	c.injectNow(2, 1, c.prepareAs(2, 0, 1, d)) // prepared: own commit, 1
	if len(c.sentFor(1, MsgCommit, 1)) != 1 {
		t.Fatalf("replica 1 did not prepare")
	}
	c.injectNow(0, 1, c.commitAs(0, 0, 1, d)) // 2 = 2f
	noExec(1, "2f commits")
	c.injectNow(0, 1, c.commitAs(0, 0, 1, d)) // duplicate
	c.injectNow(2, 1, c.commitAs(2, 0, 1, dO))
	c.injectNow(3, 1, c.commitAs(3, 1, 1, d))
	noExec(1, "duplicate, another digest, another view")
	if len(c.dropped(1, "commit for another view")) != 1 {
		t.Fatalf("commit of another view not refused: drops %+v", c.drops[1])
	}
	c.injectNow(3, 1, c.commitAs(3, 0, 1, d)) // 3 = 2f+1
	if !slices.Equal(c.apps[1].batches, []uint64{1}) || c.apps[1].runs[reqKey{1, 1}] != 1 {
		t.Fatalf("replica 1 did not execute n=1 once committed-local: batches %v", c.apps[1].batches)
	}
	if r := c.repliesTo(1, 1); len(r) != 1 || r[0].from != 1 {
		t.Fatalf("replies after execution: %+v", r)
	}

	// The commit certificate rule: 2f+1 matching commits from distinct replicas mean f+1
	// correct ones prepared the batch, so it is committed. Replica 2, not prepared
	// itself, executes it on them, and signs no commit of its own; 2f do not suffice.
	c.injectNow(0, 2, c.prePrepareAs(0, 0, 1, a)) // own prepare only
	for _, j := range []int{0, 1} {
		c.injectNow(j, 2, c.commitAs(j, 0, 1, d))
	}
	noExec(2, "2f commits without prepared")
	c.injectNow(3, 2, c.commitAs(3, 0, 1, d))
	if !slices.Equal(c.apps[2].batches, []uint64{1}) {
		t.Fatalf("replica 2 did not execute on a commit certificate: %v", c.apps[2].batches)
	}
	if cm := c.sentFor(2, MsgCommit, 1); len(cm) != 0 {
		t.Fatalf("replica 2 signed %+v without being prepared", cm)
	}
}

func TestBatchesExecuteInSequenceOrder(t *testing.T) {
	c := newCluster(t, 4)
	a, b := c.request(1, "a"), c.request(2, "b")
	c.submit(0, a)
	c.submit(0, b)
	c.runWhere(isType(MsgRequest))
	if pp := c.sent(0, MsgPrePrepare); len(pp) != 2 || pp[0].Seq != 1 || pp[1].Seq != 2 {
		t.Fatalf("primary pre-prepared %+v, want n=1 and n=2", pp)
	}
	c.runWhere(func(m tMsg) bool { return m.info().Seq == 2 })
	for i := range c.n {
		e := c.reps[i].log[2]
		if e == nil || !e.committed {
			t.Fatalf("replica %d: n=2 not committed-local after all its messages: %s", i, c.reps[i].debugString())
		}
		if len(c.apps[i].batches) != 0 {
			t.Fatalf("replica %d executed %v before n=1 committed", i, c.apps[i].batches)
		}
	}
	c.run()
	for i := range c.n {
		if !slices.Equal(c.apps[i].batches, []uint64{1, 2}) {
			t.Fatalf("replica %d executed %v, want [1 2]", i, c.apps[i].batches)
		}
		if c.apps[i].digests[1] != batchDigestOf(a) || c.apps[i].digests[2] != batchDigestOf(b) {
			t.Fatalf("replica %d executed the wrong batches", i)
		}
	}
	c.requireAgreement(c.all()...)
}

// ---- exactly-once (step 7) ----

func TestOldTimestampIsNeverExecutedTwice(t *testing.T) {
	c := newCluster(t, 4) // ReplyWindow 4
	var reqs []*Envelope
	for i := 0; i < 6; i++ {
		reqs = append(reqs, c.request(1, fmt.Sprint("op", i)))
	}
	c.submitAndRun(reqs...)
	for i := range c.n {
		if c.apps[i].ops != 6 {
			t.Fatalf("replica %d ran %d operations, want 6", i, c.apps[i].ops)
		}
	}
	first := c.repliesTo(1, 6)
	if len(first) != c.n {
		t.Fatalf("replies for t=6: %d, want one per replica", len(first))
	}

	// A retransmission of an executed request gets the cached reply, not a re-execution.
	for i := range c.n {
		c.submit(i, reqs[5])
	}
	c.run()
	again := c.repliesTo(1, 6)
	if len(again) != 2*c.n {
		t.Fatalf("replies for the retransmitted t=6: %d, want %d", len(again), 2*c.n)
	}
	for _, r := range again[c.n:] {
		if !bytes.Equal(r.reply.Result, first[r.from].reply.Result) {
			t.Fatalf("replica %d answered the retransmission with another result", r.from)
		}
	}

	// Timestamps at or below the window's low mark (6 - 4 = 2) are dropped: the executed
	// t=1 and a never-seen request with the old timestamp 2 alike.
	stale := c.requestAt(1, 2, "never seen")
	for i := range c.n {
		c.submit(i, reqs[0])
		c.submit(i, stale)
	}
	c.run()
	for i := range c.n {
		if c.apps[i].ops != 6 {
			t.Fatalf("replica %d ran %d operations after retransmissions, want 6", i, c.apps[i].ops)
		}
		if got := len(c.dropped(i, "superseded")); got != 2 {
			t.Fatalf("replica %d dropped %d stale requests, want 2: %+v", i, got, c.drops[i])
		}
	}
	if r := c.repliesTo(1, 1); len(r) != c.n {
		t.Fatalf("stale t=1 was answered again: %d replies", len(r))
	}
	if len(c.sent(0, MsgPrePrepare)) != 6 {
		t.Fatalf("primary ordered retransmitted requests again: %+v", c.sent(0, MsgPrePrepare))
	}
	c.requireExactlyOnce()
}

func TestRequestOrderedTwiceByFaultyPrimaryRunsOnce(t *testing.T) {
	c := newCluster(t, 4)
	c.isolate(0) // the adversary holds replica 0's key: the primary of view 0
	a := c.request(1, "a")
	d := batchDigestOf(a)
	for seq := uint64(1); seq <= 2; seq++ {
		for _, j := range []int{1, 2, 3} {
			c.inject(0, j, c.prePrepareAs(0, 0, seq, a))
			c.inject(0, j, c.commitAs(0, 0, seq, d))
		}
	}
	c.run()
	for _, i := range []int{1, 2, 3} {
		if !slices.Equal(c.apps[i].batches, []uint64{1, 2}) {
			t.Fatalf("replica %d executed %v, want [1 2]", i, c.apps[i].batches)
		}
		if c.apps[i].runs[reqKey{1, 1}] != 1 || c.apps[i].ops != 1 {
			t.Fatalf("replica %d ran the request %d times", i, c.apps[i].runs[reqKey{1, 1}])
		}
	}
	// The repeat was answered from the cache: two replies per replica, equal.
	for _, i := range []int{1, 2, 3} {
		var res [][]byte
		for _, r := range c.repliesTo(1, 1) {
			if int(r.from) == i {
				res = append(res, r.reply.Result)
			}
		}
		if len(res) != 2 || !bytes.Equal(res[0], res[1]) {
			t.Fatalf("replica %d replies for the repeated request: %d", i, len(res))
		}
	}
	c.requireAgreement(1, 2, 3)
}

func TestRequestTwiceInOneBatchRunsOnce(t *testing.T) {
	c := newCluster(t, 4, func(cfg *Config) { cfg.MaxBatchRequests = 4 })
	c.isolate(0)
	a, b := c.request(1, "a"), c.request(2, "b")
	pp := c.prePrepareAs(0, 0, 1, a, b, a)
	for _, j := range []int{1, 2, 3} {
		c.inject(0, j, pp)
		c.inject(0, j, c.commitAs(0, 0, 1, infoOf(pp).Digest))
	}
	c.run()
	for _, i := range []int{1, 2, 3} {
		if c.apps[i].ops != 2 || c.apps[i].runs[reqKey{1, 1}] != 1 || c.apps[i].runs[reqKey{2, 1}] != 1 {
			t.Fatalf("replica %d ran %d ops for a batch [a b a]: %v", i, c.apps[i].ops, c.apps[i].runs)
		}
	}
	c.requireAgreement(1, 2, 3)
}

func TestPrePrepareWithBatchOverConfiguredSizeIsRefused(t *testing.T) {
	c := newCluster(t, 4, func(cfg *Config) { cfg.MaxBatchRequests = 2 })
	c.injectNow(0, 1, c.prePrepareAs(0, 0, 1, c.requests(3, 3, "big")...))
	if len(c.dropped(1, "over the configured size")) != 1 || len(c.sent(1, MsgPrepare)) != 0 {
		t.Fatalf("batch of 3 with a bound of 2: drops %+v", c.drops[1])
	}
	c.injectNow(0, 1, c.prePrepareAs(0, 0, 1, c.requests(2, 2, "ok")...))
	if len(c.sentFor(1, MsgPrepare, 1)) != 1 {
		t.Fatalf("batch of 2 refused: %+v", c.drops[1])
	}
}

func TestExecutedRejectsResultsOutOfOrder(t *testing.T) {
	c := newCluster(t, 4)
	c.async[1] = true
	c.submitAndRun(c.requests(3, 3, "x")...)
	r := c.reps[1]
	if len(c.pendingExec[1]) != 3 {
		t.Fatalf("replica 1 was handed %d batches, want 3", len(c.pendingExec[1]))
	}
	if err := r.Executed(Executed{Seq: 2, Results: [][]byte{{1}}}); err == nil {
		t.Fatalf("result for n=2 accepted before n=1")
	}
	if err := r.Executed(Executed{Seq: 1, Results: nil}); err == nil {
		t.Fatalf("result for n=1 with no result for its request accepted")
	}
	if err := r.Executed(Executed{Seq: 4, Results: [][]byte{{1}}}); err == nil {
		t.Fatalf("result for n=4, never handed out, accepted")
	}
	if s := r.Status(); s.Executed != 0 {
		t.Fatalf("refused results moved execution: %+v", s)
	}
	c.execute(1, -1)
	if s := r.Status(); s.Executed != 3 || c.stateDigest(1) != c.stateDigest(0) {
		t.Fatalf("after the real results: %+v", s)
	}
	if err := r.Executed(Executed{Seq: 3, Results: [][]byte{{1}}}); err == nil {
		t.Fatalf("second result for n=3 accepted")
	}
	c.requireAgreement(c.all()...)
}

// ---- requests reaching a backup (step 1) ----

func TestBackupForwardsRequestToPrimary(t *testing.T) {
	c := newCluster(t, 4)
	a := c.request(1, "a")
	c.submit(2, a)
	c.deliverNext()
	fw := c.queued(func(tMsg) bool { return true })
	if len(fw) != 1 || fw[0].from != 2 || fw[0].to != 0 {
		t.Fatalf("backup 2 sent %d frames, want the request to primary 0 only", len(fw))
	}
	if env := fw[0].env(); env.Msg.Type != MsgRequest || !bytes.Equal(Marshal(env.Msg), Marshal(a.Msg)) {
		t.Fatalf("forwarded frame is not the client's signed request")
	}
	if s := c.reps[2].Status(); s.Pending != 0 || len(c.sent(2, MsgPrePrepare)) != 0 {
		t.Fatalf("backup queued or proposed the request itself: %+v", s)
	}
	c.run()
	for i := range c.n {
		if c.apps[i].runs[reqKey{1, 1}] != 1 {
			t.Fatalf("replica %d did not execute the forwarded request", i)
		}
	}
	if len(c.sent(0, MsgPrePrepare)) != 1 {
		t.Fatalf("primary pre-prepared %d times", len(c.sent(0, MsgPrePrepare)))
	}
}

// ---- primary pacing ----

func TestPrimaryKeepsAtMostMaxInFlightBatches(t *testing.T) {
	c := newCluster(t, 4, func(cfg *Config) { cfg.MaxInFlightBatches = 2 })
	c.holdIf = isType(MsgPrepare)
	reqs := c.requests(5, 5, "f")
	c.submitAndRun(reqs...)
	if pp := c.sent(0, MsgPrePrepare); len(pp) != 2 {
		t.Fatalf("primary has %d batches in flight, bound is 2", len(pp))
	}
	if s := c.reps[0].Status(); s.Pending != 3 {
		t.Fatalf("primary pending %d, want 3", s.Pending)
	}
	c.holdIf = nil
	c.release(nil)
	c.run()
	for i := range c.n {
		if c.apps[i].ops != 5 {
			t.Fatalf("replica %d ran %d of 5 requests", i, c.apps[i].ops)
		}
	}
}

func TestPrimaryBatchesWaitingRequests(t *testing.T) {
	c := newCluster(t, 4, func(cfg *Config) { cfg.MaxInFlightBatches = 1; cfg.MaxBatchRequests = 3 })
	c.holdIf = isType(MsgPrepare)
	c.submitAndRun(c.requests(7, 7, "b")...)
	c.holdIf = nil
	c.release(nil)
	c.run()
	pp := c.sent(0, MsgPrePrepare)
	// The first request goes alone; the others wait, then fill batches of at most 3.
	if len(pp) != 3 {
		t.Fatalf("primary sent %d pre-prepares for 7 requests (1, then 3, 3): %+v", len(pp), pp)
	}
	for i := range c.n {
		if c.apps[i].ops != 7 || c.executed(i) != 3 {
			t.Fatalf("replica %d ran %d requests in %d batches", i, c.apps[i].ops, c.executed(i))
		}
	}
	c.requireAgreement(c.all()...)
}

// ---- quorum arithmetic, and a normal-case round for several cluster sizes ----

func TestQuorumSizesForClusterSizes(t *testing.T) {
	// The quorum is the smallest size of which any two sets share f+1 replicas (one of
	// them correct), and the correct replicas alone must make one.
	for n := 1; n <= 40; n++ {
		q, _ := NewQuorum(n)
		if s := q.Strong(); 2*s-n < q.F+1 || s > n-q.F || 2*(s-1)-n >= q.F+1 || q.Prepared() != s-1 {
			t.Fatalf("n=%d f=%d: quorum %d (prepared %d) is not the smallest whose sets share f+1 and at most n-f", n, q.F, s, q.Prepared())
		}
	}
	for _, tc := range []struct{ n, f, strong, weak int }{
		{4, 1, 3, 2}, {5, 1, 4, 2}, {6, 1, 4, 2}, {7, 2, 5, 3}, {10, 3, 7, 4},
	} {
		t.Run(fmt.Sprint("n=", tc.n), func(t *testing.T) {
			q, err := NewQuorum(tc.n)
			if err != nil {
				t.Fatal(err)
			}
			if q.F != tc.f || q.Strong() != tc.strong || q.Weak() != tc.weak {
				t.Fatalf("n=%d: f=%d strong=%d weak=%d, want %d %d %d", tc.n, q.F, q.Strong(), q.Weak(), tc.f, tc.strong, tc.weak)
			}
			for v := uint64(0); v < uint64(2*tc.n); v++ {
				if q.Primary(v) != ReplicaID(v%uint64(tc.n)) {
					t.Fatalf("primary of view %d is %d", v, q.Primary(v))
				}
			}
			c := newCluster(t, tc.n)
			reqs := c.requests(6, 3, "q")
			c.submitAndRun(reqs...)
			for i := range c.n {
				if c.executed(i) != 6 || c.apps[i].ops != 6 {
					t.Fatalf("replica %d executed up to %d (%d ops), want 6", i, c.executed(i), c.apps[i].ops)
				}
			}
			c.requireAgreement(c.all()...)
			c.requireExactlyOnce()
			// The client gets a reply from every replica, all matching: f+1 suffice.
			for k := range reqs {
				cl, ts := ClientID(1+k%3), uint64(1+k/3)
				rs := c.repliesTo(cl, ts)
				if len(rs) != tc.n {
					t.Fatalf("request %d: %d replies", k, len(rs))
				}
				for _, r := range rs {
					if !bytes.Equal(r.reply.Result, rs[0].reply.Result) {
						t.Fatalf("request %d: replicas disagree on the result", k)
					}
				}
			}
		})
	}
	for _, n := range []int{0, 2, 3} {
		cfg := DefaultConfig(0, n, &KeySigner{})
		if err := cfg.Validate(); err == nil {
			t.Fatalf("n=%d accepted", n)
		}
	}
}

// With n = 5 and f = 1 a quorum is 4, not 2f+1 = 3: two sets of 3 share one replica,
// which may be the faulty primary. An equivocating primary that shows each digest to
// two backups (and votes for both) gets neither prepared anywhere. Found by the
// simulator's swarm runs, which draw n = 5: with quorums of 3 it broke agreement.
func TestQuorumOfFiveReplicasSurvivesAnEquivocatingPrimary(t *testing.T) {
	c := newCluster(t, 5)
	c.isolate(0)
	a, b := c.request(1, "a"), c.request(2, "b")
	dA, dB := batchDigestOf(a), batchDigestOf(b)
	split := map[int]*Envelope{1: a, 2: a, 3: b, 4: b}
	for i, req := range split {
		c.inject(0, i, c.prePrepareAs(0, 0, 1, req))
	}
	for _, i := range []int{1, 2, 3, 4} {
		c.inject(0, i, c.commitAs(0, 0, 1, dA))
		c.inject(0, i, c.commitAs(0, 0, 1, dB))
	}
	c.run()
	for _, i := range []int{1, 2, 3, 4} {
		if cm := c.sentFor(i, MsgCommit, 1); len(cm) != 0 {
			t.Fatalf("replica %d committed %+v on a split of two backups per digest", i, cm)
		}
		if c.executed(i) != 0 {
			t.Fatalf("replica %d executed n=1 on a split of two backups per digest", i)
		}
	}
}

// ---- Byzantine robustness ----

// byzantineFuzz drives rounds of random, well-formed, validly signed messages from the
// adversary's replicas into the correct ones, interleaved with client requests, ticks
// and replays of real traffic.
type byzantineFuzz struct {
	c       *tCluster
	rng     *rand.Rand
	bad     []int // replicas whose keys the adversary holds
	good    []int
	targets []int       // replicas the random messages go to; good when empty
	seen    []*Envelope // real replica messages observed, to replay and cite in proofs
	reqs    []*Envelope
	digests []crypto.Digest
}

func (z *byzantineFuzz) pick(xs []uint64) uint64 { return xs[z.rng.IntN(len(xs))] }

func (z *byzantineFuzz) view() uint64 {
	return z.pick([]uint64{0, 0, 0, 1, 2, 3, uint64(z.rng.IntN(8)), 1 << 32, 1 << 63, math.MaxUint64 - 1, math.MaxUint64})
}

func (z *byzantineFuzz) seq() uint64 {
	h := z.c.reps[z.good[0]].Status().LowMark
	return z.pick([]uint64{
		0, 1, h, h + 1, h + 4, h + 8, h + 9, h + uint64(z.rng.IntN(12)), uint64(z.rng.IntN(40)),
		1<<32 - 1, 1 << 32, 1<<32 + 4, 1 << 63, math.MaxUint64 - 4, math.MaxUint64 - 3, math.MaxUint64 - 1, math.MaxUint64,
		z.rng.Uint64(),
	})
}

func (z *byzantineFuzz) digest() crypto.Digest {
	switch z.rng.IntN(4) {
	case 0:
		return crypto.Digest{}
	case 1:
		var d crypto.Digest
		for i := range d {
			d[i] = byte(z.rng.Uint32())
		}
		return d
	default:
		if len(z.digests) == 0 {
			return crypto.Digest{1}
		}
		return z.digests[z.rng.IntN(len(z.digests))]
	}
}

func (z *byzantineFuzz) observe() {
	for _, i := range z.good {
		for _, ob := range z.c.out[i] {
			s := ob.Env.Msg
			switch s.Type {
			case MsgPrePrepare, MsgPrepare, MsgCommit, MsgCheckpoint:
				z.seen = append(z.seen, ob.Env)
				z.digests = append(z.digests, infoOf(ob.Env).Digest)
			}
		}
	}
	if len(z.seen) > 400 {
		z.seen = z.seen[len(z.seen)-400:]
	}
	if len(z.digests) > 400 {
		z.digests = z.digests[len(z.digests)-400:]
	}
}

func (z *byzantineFuzz) message(from int) *Envelope {
	c := z.c
	switch z.rng.IntN(9) {
	case 0:
		var batch []*Envelope
		for k := z.rng.IntN(3); k > 0 && len(z.reqs) > 0; k-- {
			batch = append(batch, z.reqs[z.rng.IntN(len(z.reqs))])
		}
		return c.prePrepareAs(from, z.view(), z.seq(), batch...)
	case 1:
		return c.prepareAs(from, z.view(), z.seq(), z.digest())
	case 2:
		return c.commitAs(from, z.view(), z.seq(), z.digest())
	case 3:
		seq := z.seq()
		if z.rng.IntN(2) == 0 {
			seq -= seq % c.cfgs[0].CheckpointInterval
		}
		return c.checkpointAs(from, seq, z.digest())
	case 4:
		return &Envelope{Msg: c.signAs(from, MsgStateRequest, StateRequest{Seq: z.seq()})}
	case 5:
		// A state response citing real checkpoints, forged ones, or both.
		seq := z.seq()
		var proof []Signed
		used := map[uint32]bool{}
		for _, e := range z.seen {
			s := e.Msg
			var cp Checkpoint
			if s.Type == MsgCheckpoint && !used[s.From] && z.rng.IntN(2) == 0 && Unmarshal(s.Body, &cp) == nil {
				seq, proof, used[s.From] = cp.Seq, append(proof, s), true
			}
		}
		for _, b := range z.bad {
			if !used[uint32(b)] {
				proof = append(proof, c.signAs(b, MsgCheckpoint, Checkpoint{Seq: seq, State: z.digest()}))
			}
		}
		// Keep only entries naming seq: the verifier refuses the others.
		proof = slices.DeleteFunc(proof, func(s Signed) bool {
			var cp Checkpoint
			return Unmarshal(s.Body, &cp) != nil || cp.Seq != seq
		})
		state := make([]byte, z.rng.IntN(64))
		for i := range state {
			state[i] = byte(z.rng.Uint32())
		}
		if z.rng.IntN(2) == 0 {
			state = Marshal(CheckpointState{App: state})
		}
		return &Envelope{Msg: c.signAs(from, MsgStateResponse, StateResponse{Seq: seq, Proof: proof, State: state})}
	case 6:
		if len(z.reqs) > 0 {
			return z.reqs[z.rng.IntN(len(z.reqs))] // replay a client request
		}
		return c.prepareAs(from, 0, 1, z.digest())
	default:
		if len(z.seen) > 0 {
			return z.seen[z.rng.IntN(len(z.seen))] // replay real traffic
		}
		return c.commitAs(from, 0, 1, z.digest())
	}
}

func (z *byzantineFuzz) round(clients int) {
	c := z.c
	// A couple of fresh client requests to the primary, when it is correct, else to all.
	for k := 0; k < 2; k++ {
		r := c.request(ClientID(1+z.rng.IntN(clients)), fmt.Sprint("fuzz", z.rng.Uint64()))
		z.reqs = append(z.reqs, r)
		if slices.Contains(z.good, 0) {
			c.submit(0, r)
		} else {
			for _, g := range z.good {
				c.submit(g, r)
			}
		}
	}
	for k := 0; k < 20; k++ {
		from := z.bad[z.rng.IntN(len(z.bad))]
		targets := z.targets
		if len(targets) == 0 {
			targets = z.good
		}
		to := targets[z.rng.IntN(len(targets))]
		c.inject(from, to, z.message(from))
		if z.rng.IntN(4) == 0 {
			c.deliverNext()
		}
	}
	c.run()
	if z.rng.IntN(3) == 0 {
		c.tickAll(1 + z.rng.IntN(4))
	}
	z.observe()
}

func TestStepNeverPanicsOnByzantineInput(t *testing.T) {
	t.Run("nil message", func(t *testing.T) {
		c := newCluster(t, 4)
		c.reps[1].Step(nil)
		c.process(1)
	})
	t.Run("byzantine backup", func(t *testing.T) {
		c := newCluster(t, 4)
		c.isolate(3) // the adversary holds replica 3's key; its honest core is cut off
		z := &byzantineFuzz{c: c, rng: rand.New(rand.NewPCG(1, 2)), bad: []int{3}, good: []int{0, 1, 2}}
		for round := 0; round < 60; round++ {
			z.round(4)
		}
		// Liveness with one faulty backup: every request executed everywhere correct.
		if !c.runUntil(200, func() bool {
			for _, i := range z.good {
				if c.apps[i].ops != len(z.reqs) {
					return false
				}
			}
			return true
		}) {
			t.Fatalf("correct replicas did not run all %d requests:%s", len(z.reqs), c.debug())
		}
		c.requireAgreement(z.good...)
		c.requireExactlyOnce()
		if c.reps[0].Status().LowMark == 0 {
			t.Fatalf("no checkpoint became stable during the run")
		}
	})
	t.Run("byzantine backup, slow applications", func(t *testing.T) {
		// Slow applications let requests pile up: clients here keep up to 64 in flight,
		// so the reply window (which also bounds the primary's queue) must allow it.
		c := newCluster(t, 4, func(cfg *Config) { cfg.ReplyWindow = 64 })
		c.isolate(2)
		c.async[1], c.async[3] = true, true
		z := &byzantineFuzz{c: c, rng: rand.New(rand.NewPCG(7, 8)), bad: []int{2}, good: []int{0, 1, 3}}
		for round := 0; round < 60; round++ {
			z.round(4)
			for _, i := range []int{1, 3} {
				c.execute(i, z.rng.IntN(4))
			}
			c.run()
		}
		if !c.runUntil(200, func() bool {
			for _, i := range z.good {
				c.execute(i, -1)
			}
			c.run()
			for _, i := range z.good {
				if c.apps[i].ops != len(z.reqs) && len(c.apps[i].installs) == 0 {
					return false
				}
			}
			return c.allExecuted(c.executed(0), z.good...)
		}) {
			t.Fatalf("correct replicas did not run all %d requests:%s", len(z.reqs), c.debug())
		}
		c.requireAgreement(z.good...)
		c.requireExactlyOnce()
	})
	t.Run("byzantine primary", func(t *testing.T) {
		c := newCluster(t, 4)
		c.isolate(0) // the adversary holds the key of the primary of view 0
		z := &byzantineFuzz{c: c, rng: rand.New(rand.NewPCG(3, 4)), bad: []int{0}, good: []int{1, 2, 3}, targets: []int{3}}
		L := c.cfgs[1].LogWindow
		seq := uint64(0)
		echoed := map[uint64]bool{}
		for round := 0; round < 40; round++ {
			// The faulty primary proposes in order to 1 and 2, so that the cluster moves,
			// and to 3 the same batch, another one (equivocation) or nothing. Its random
			// messages all go to 3.
			for k := 0; k < 2 && seq+1 <= c.reps[1].Status().LowMark+L; k++ {
				seq++
				x := c.request(ClientID(1+z.rng.IntN(4)), fmt.Sprint("x", seq))
				y := c.request(ClientID(1+z.rng.IntN(4)), fmt.Sprint("y", seq))
				z.reqs = append(z.reqs, x, y)
				ppx, ppy := c.prePrepareAs(0, 0, seq, x), c.prePrepareAs(0, 0, seq, y)
				for _, g := range []int{1, 2} {
					c.inject(0, g, ppx)
					c.inject(0, g, c.commitAs(0, 0, seq, batchDigestOf(x)))
				}
				switch z.rng.IntN(3) {
				case 0:
					c.inject(0, 3, ppy)
					c.inject(0, 3, c.commitAs(0, 0, seq, batchDigestOf(y)))
				case 1:
				default:
					c.inject(0, 3, ppx)
				}
			}
			z.round(4)
			// It signs the correct replicas' checkpoints too, or none would become stable
			// while replica 3 lags.
			for _, m := range c.sent(1, MsgCheckpoint) {
				if !echoed[m.Seq] {
					echoed[m.Seq] = true
					for _, g := range z.good {
						c.inject(0, g, c.checkpointAs(0, m.Seq, m.Digest))
					}
				}
			}
			c.run()
		}
		if !c.runUntil(100, func() bool { return c.allExecuted(seq, 1, 2) && c.executed(3) >= c.reps[1].Status().LowMark }) {
			t.Fatalf("replicas 1 and 2 did not execute everything proposed to them consistently, or 3 did not catch up:%s", c.debug())
		}
		if c.reps[1].Status().LowMark < 40 || len(c.apps[3].installs) == 0 {
			t.Fatalf("the run checks little: low mark %d, installs at 3: %v", c.reps[1].Status().LowMark, c.apps[3].installs)
		}
		// Safety: no two correct replicas execute different batches at one seq.
		c.requireAgreement(z.good...)
		c.requireExactlyOnce()
	})
	t.Run("two of seven byzantine", func(t *testing.T) {
		c := newCluster(t, 7)
		c.isolate(5)
		c.isolate(6)
		z := &byzantineFuzz{c: c, rng: rand.New(rand.NewPCG(5, 6)), bad: []int{5, 6}, good: []int{0, 1, 2, 3, 4}}
		for round := 0; round < 30; round++ {
			z.round(4)
		}
		if !c.runUntil(200, func() bool {
			for _, i := range z.good {
				if c.apps[i].ops != len(z.reqs) {
					return false
				}
			}
			return true
		}) {
			t.Fatalf("correct replicas did not run all %d requests:%s", len(z.reqs), c.debug())
		}
		c.requireAgreement(z.good...)
		c.requireExactlyOnce()
	})
}

// ---- determinism and the Ready contract ----

// deterministicScenario mixes normal operation, a lagging replica, drops, ticks and
// Byzantine input; it returns the trace of every replica output.
func deterministicScenario(t *testing.T) [][]byte {
	c := newCluster(t, 4)
	c.submitAndRun(c.requests(5, 3, "d")...)
	c.isolate(3)
	c.submitAndRun(c.requests(14, 3, "e")...)
	c.reconnect(3)
	// Lose one frame in seven for a while.
	k := 0
	c.dropIf = func(tMsg) bool { k++; return k%7 == 0 }
	c.submitAndRun(c.requests(4, 3, "g")...)
	c.tickAll(5)
	c.dropIf = nil
	z := &byzantineFuzz{c: c, rng: rand.New(rand.NewPCG(9, 9)), bad: []int{2}, good: []int{0, 1, 3}}
	for round := 0; round < 10; round++ {
		z.round(3)
	}
	c.runUntil(100, func() bool { return c.allExecuted(c.executed(0), 3) })
	c.tickAll(10)
	return c.trace
}

func TestCoreIsDeterministic(t *testing.T) {
	first := deterministicScenario(t)
	for run := 0; run < 2; run++ {
		again := deterministicScenario(t)
		if len(again) != len(first) {
			t.Fatalf("run %d: %d outputs, first run %d", run+2, len(again), len(first))
		}
		for i := range first {
			if !bytes.Equal(first[i], again[i]) {
				t.Fatalf("run %d: output %d differs:\n%q\n%q", run+2, i, first[i], again[i])
			}
		}
	}
	if len(first) < 1000 {
		t.Fatalf("scenario too small to mean anything: %d outputs", len(first))
	}
}

func TestOwnVotesArePersistedBeforeTheyAreSent(t *testing.T) {
	c := newCluster(t, 4)
	c.submitAndRun(c.requests(10, 3, "p")...)
	c.holdIf = isType(MsgCommit)
	c.submitAndRun(c.requests(2, 3, "q")...)
	c.holdIf = nil
	c.tickAll(10) // retransmissions resend persisted votes
	c.release(nil)
	c.run()
	if len(c.unpersisted) > 0 {
		t.Fatalf("votes sent before being persisted:\n%v", c.unpersisted)
	}
	for i := range c.n {
		if len(c.persisted[i]) == 0 {
			t.Fatalf("replica %d persisted nothing", i)
		}
	}
}

func TestLostMessagesAreRecoveredByRetransmission(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			c := newCluster(t, 4)
			rng := rand.New(rand.NewPCG(seed, 42))
			lossy := true
			c.dropIf = func(tMsg) bool { return lossy && rng.IntN(5) == 0 } // one frame in five
			// Closed-loop clients: each waits for f+1 matching replies before its next
			// request and retransmits to every replica after a timeout.
			const clients, perClient, timeout = 5, 8, 6
			type clientState struct {
				req   *Envelope
				sent  int // requests issued
				since int // ticks waiting
			}
			cs := make([]*clientState, clients)
			for k := range cs {
				cs[k] = &clientState{}
			}
			done := func() bool {
				for _, s := range cs {
					if s.sent < perClient || !c.completed(s.req) {
						return false
					}
				}
				return true
			}
			for tick := 0; !done(); tick++ {
				if tick == 400 {
					lossy = false // the network heals
				}
				if tick > 2000 {
					t.Fatalf("clients did not complete:%s", c.debug())
				}
				for k, s := range cs {
					switch {
					case s.req == nil || (c.completed(s.req) && s.sent < perClient):
						s.req, s.since = c.request(ClientID(k+1), fmt.Sprint("lossy", k, s.sent)), 0
						s.sent++
						c.submit(0, s.req)
					case !c.completed(s.req):
						if s.since++; s.since%timeout == 0 {
							for i := range c.n {
								c.submit(i, s.req)
							}
						}
					}
				}
				c.run()
				c.tickAll(1)
			}
			if !c.runUntil(200, func() bool { return c.allExecuted(c.executed(0), c.all()...) }) {
				t.Fatalf("replicas did not converge:%s", c.debug())
			}
			if c.executed(0) == 0 || c.reps[0].Status().LowMark == 0 {
				t.Fatalf("nothing happened")
			}
			c.requireAgreement(c.all()...)
			c.requireExactlyOnce()
		})
	}
}

func TestConfigValidateRejectsOutOfRangeFields(t *testing.T) {
	signer := &KeySigner{}
	good := DefaultConfig(1, 4, signer)
	if err := good.Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for name, mutate := range map[string]func(*Config){
		"id not a replica":       func(c *Config) { c.ID = 4 },
		"n = 3":                  func(c *Config) { c.N, c.ID = 3, 0 },
		"no checkpoint interval": func(c *Config) { c.CheckpointInterval = 0 },
		"window below interval":  func(c *Config) { c.LogWindow = c.CheckpointInterval / 2 },
		"window not a multiple":  func(c *Config) { c.LogWindow = c.CheckpointInterval*2 + 1 },
		"no batch requests":      func(c *Config) { c.MaxBatchRequests = 0 },
		"no batch bytes":         func(c *Config) { c.MaxBatchBytes = 0 },
		"no in-flight batches":   func(c *Config) { c.MaxInFlightBatches = 0 },
		"no reply window":        func(c *Config) { c.ReplyWindow = 0 },
		"no retransmit period":   func(c *Config) { c.RetransmitTicks = 0 },
		"no signer":              func(c *Config) { c.Signer = nil },
	} {
		cfg := good
		mutate(&cfg)
		if err := cfg.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if _, err := NewReplica(cfg); err == nil {
			t.Errorf("%s: NewReplica accepted", name)
		}
	}
}

// The core refuses a message naming a sender outside the cluster even when the
// Verifier in front of it was configured with another n: it drops, never panics.
func TestStepDropsSenderOutsideClusterWithoutPanicking(t *testing.T) {
	c := newCluster(t, 4)
	r := c.reps[1]
	for _, m := range []Message{
		&CommitMsg{Signed: Signed{Type: MsgCommit, From: 9}, Commit: Commit{Seq: 1}},
		&PrepareMsg{Signed: Signed{Type: MsgPrepare, From: 1 << 31}, Prepare: Prepare{Seq: 1}},
		&CheckpointMsg{Signed: Signed{Type: MsgCheckpoint, From: 4}, Checkpoint: Checkpoint{Seq: 8}},
		&StateRequestMsg{Signed: Signed{Type: MsgStateRequest, From: 77}},
	} {
		r.Step(m)
		rd := r.Ready()
		if len(rd.Drops) != 1 || !strings.Contains(rd.Drops[0].Reason, "outside the cluster") {
			t.Fatalf("%T from %d: drops %+v", m, m.Raw().From, rd.Drops)
		}
	}
}

// The primary's queue of waiting requests is bounded per client by the reply window.
func TestPrimaryQueueIsBoundedPerClient(t *testing.T) {
	c := newCluster(t, 4, func(cfg *Config) { cfg.ReplyWindow = 4; cfg.MaxInFlightBatches = 1; cfg.MaxBatchRequests = 1 })
	// Hold everything between replicas so nothing executes and requests pile up.
	c.holdIf = func(tMsg) bool { return true }
	for ts := uint64(1); ts <= 20; ts++ {
		c.injectNow(clientNode, 0, c.requestAt(1, ts, fmt.Sprint("op", ts)))
	}
	if n := c.reps[0].Status().Pending; n > 4 {
		t.Fatalf("primary queued %d requests of one client, reply window is 4", n)
	}
	if len(c.dropped(0, "too many requests waiting")) == 0 {
		t.Fatalf("no drop reported for the requests over the bound")
	}
}

// Under load the primary fills batches (each costs O(n²) votes whatever its size); an
// idle primary proposes at once.
func TestPrimaryFillsBatchesUnderLoadButNotWhenIdle(t *testing.T) {
	c := newCluster(t, 4, func(cfg *Config) { cfg.MaxInFlightBatches, cfg.MaxBatchRequests = 4, 8 })
	c.holdIf = isType(MsgCommit) // nothing executes: batches stay in flight
	reqs := c.requests(4, 4, "load")
	sizes := func() []int {
		var out []int
		for _, ob := range c.out[0] {
			if ob.Env.Msg.Type == MsgPrePrepare {
				out = append(out, len(ob.Env.Batch))
			}
		}
		return out
	}
	c.submitAndRun(reqs[0])
	if got := sizes(); len(got) != 1 || got[0] != 1 {
		t.Fatalf("an idle primary should propose a lone request at once: batches %v", got)
	}
	// One in flight: the next needs 1/4 of a batch of 8, so two requests.
	c.submitAndRun(reqs[1])
	if got := sizes(); len(got) != 1 {
		t.Fatalf("a lone request left with a batch in flight: batches %v", got)
	}
	c.submitAndRun(reqs[2])
	if got := sizes(); len(got) != 2 || got[1] != 2 {
		t.Fatalf("want a second batch of two requests: batches %v", got)
	}
	// Two in flight: a lone request waits again, until a batch executes.
	c.submitAndRun(reqs[3])
	if got := sizes(); len(got) != 2 {
		t.Fatalf("a lone request left with two batches in flight: batches %v", got)
	}
	c.holdIf = nil
	c.release(nil)
	if !c.runUntil(20, func() bool { return c.allExecuted(3, c.all()...) }) {
		t.Fatalf("batches did not execute:%s", c.debug())
	}
	if got := sizes(); len(got) != 3 || got[2] != 1 {
		t.Fatalf("the waiting request should leave once a batch executed: batches %v", got)
	}
	c.requireAgreement(c.all()...)
}

// A replica never prepares, at a seq it committed or executed, another digest than
// the one it committed there, in whichever view. Here a NEW-VIEW that omits seq 1
// (impossible with at most f faulty replicas: the harness signs the VIEW-CHANGEs of
// replicas 0, 2 and 3 to build it) is followed by a pre-prepare for seq 1 with another
// batch; replica 1, which executed seq 1, refuses it.
func TestReplicaNeverPreparesAnotherDigestAtADecidedSeq(t *testing.T) {
	c := newCluster(t, 4)
	c.submitAndRun(c.request(1, "decided"))
	if c.executed(1) != 1 {
		t.Fatalf("replica 1 at n=%d, want 1", c.executed(1))
	}
	vcs := []Signed{c.viewChangeAs(0, 2, 0, nil), c.viewChangeAs(2, 2, 0, nil), c.viewChangeAs(3, 2, 0, nil)}
	c.injectNow(2, 1, c.newViewAs(2, 2, vcs, 1))
	c.requireView(2, true, 1)
	c.injectNow(2, 1, c.prePrepareAs(2, 2, 1, c.request(2, "rewrite")))
	for _, p := range c.sentFor(1, MsgPrepare, 1) {
		if p.View == 2 {
			t.Fatalf("replica 1 prepared another digest at its executed seq 1: %+v", p)
		}
	}
	if len(c.dropped(1, "committed with another batch")) != 1 {
		t.Fatalf("replica 1 did not refuse another digest at its executed seq 1: drops %+v", c.drops[1])
	}
}

// The relayed pre-prepare rule: a backup resends the primary's signed PRE-PREPARE (with
// its batch) of an entry it committed to a backup that has shown no vote for it. With
// the primary gone silent after the commit, replica 3, cut off meanwhile, still gets the
// entry from the other backups and executes it.
func TestBackupRelaysTheCommittedPrePrepareToALaggingBackup(t *testing.T) {
	c := newCluster(t, 4)
	c.isolate(3)
	req := c.request(1, "relay")
	c.submitAndRun(req)
	if c.executed(1) != 1 || c.executed(3) != 0 {
		t.Fatalf("replicas 1 and 3 at %d and %d, want 1 and 0", c.executed(1), c.executed(3))
	}
	c.isolate(0)
	c.reconnect(3)
	c.holdIf = func(m tMsg) bool { return m.to == 3 && m.info().Type == MsgPrePrepare }
	for k := 0; k < 2*int(c.cfgs[1].RetransmitTicks) && len(c.held) == 0; k++ {
		c.tick(1, 2)
		c.run()
	}
	relayed := false
	for _, m := range c.held {
		relayed = relayed || (m.from != 0 && m.info().From == 0 && m.info().Seq == 1)
	}
	if !relayed {
		t.Fatalf("no backup relayed the primary's pre-prepare for n=1 to replica 3")
	}
	c.holdIf = nil
	c.release(nil)
	if !c.runUntil(20, func() bool { return c.executed(3) == 1 }) {
		t.Fatalf("replica 3 did not execute the relayed entry:%s", c.debug())
	}
	c.requireAgreement(1, 2, 3)
}
