package pbft

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"slices"
	"testing"

	"github.com/pbftkit/pbft/crypto"
)

// ---- stable checkpoints and garbage collection ----

func TestCheckpointBecomesStableAtTwoFPlusOneMatchingMessages(t *testing.T) {
	c := newCluster(t, 4) // K = 4, L = 8, 2f+1 = 3
	c.holdIf = isType(MsgCheckpoint)
	c.submitAndRun(c.requests(4, 2, "c")...)
	c.holdIf = nil
	r := c.reps[1]
	if s := r.Status(); s.Executed != 4 || s.LowMark != 0 || s.LogSize != 4 {
		t.Fatalf("before any checkpoint message: %+v", s)
	}
	own := r.ckpts[4].ownDigest
	if own != c.stateDigest(1) {
		t.Fatalf("own checkpoint digest is not the digest of app state and client table")
	}
	heldFrom := func(j int) func(tMsg) bool {
		return func(m tMsg) bool { return m.from == j && m.to == 1 }
	}

	// A checkpoint at a sequence number that is not a multiple of K is refused.
	c.injectNow(2, 1, c.checkpointAs(2, 3, own))
	if len(c.dropped(1, "not a checkpoint")) != 1 {
		t.Fatalf("checkpoint at n=3 not refused: %+v", c.drops[1])
	}
	// Own + replica 2 = 2f matching: not stable.
	c.release(heldFrom(2))
	c.run()
	if s := r.Status(); s.LowMark != 0 || len(c.stables[1]) != 0 {
		t.Fatalf("stable on 2f matching checkpoints: %+v", s)
	}
	// The same checkpoint again counts once; a checkpoint with another digest does not
	// count for ours.
	c.injectNow(2, 1, c.checkpointAs(2, 4, own))
	c.injectNow(3, 1, c.checkpointAs(3, 4, crypto.Digest{0xba, 0xd}))
	c.run()
	if s := r.Status(); s.LowMark != 0 || len(c.stables[1]) != 0 {
		t.Fatalf("stable with a duplicate and a mismatching checkpoint: %+v", s)
	}

	// Replica 0's matching checkpoint makes 2f+1.
	c.release(heldFrom(0))
	c.run()
	s := r.Status()
	if s.LowMark != 4 || s.LogSize != 0 {
		t.Fatalf("after 2f+1 matching checkpoints: %+v, want low mark 4 and an empty log", s)
	}
	if len(c.stables[1]) != 1 {
		t.Fatalf("Ready.Stable reported %d times, want once", len(c.stables[1]))
	}
	sc := c.stables[1][0]
	if sc.Seq != 4 || sc.State != own || len(sc.Proof) != 3 {
		t.Fatalf("stable checkpoint %+v, want n=4 with a 3-message proof of the own digest", sc)
	}
	signers := map[uint32]bool{}
	for _, p := range sc.Proof {
		m, err := c.vers[2].Open(&Envelope{Msg: p})
		if err != nil {
			t.Fatalf("proof entry does not verify: %v", err)
		}
		cp := m.(*CheckpointMsg).Checkpoint
		if cp.Seq != 4 || cp.State != own || signers[p.From] {
			t.Fatalf("proof entry %+v from %d", cp, p.From)
		}
		signers[p.From] = true
	}
	if signers[3] {
		t.Fatalf("the mismatching checkpoint of replica 3 is in the proof")
	}
	for n := range r.ckpts {
		if n <= 4 {
			t.Fatalf("checkpoint votes at n=%d kept after n=4 became stable", n)
		}
	}
	// The window moved to (4, 12].
	c.injectNow(0, 1, c.prePrepareAs(0, 0, 12, c.request(5, "n12")))
	c.injectNow(0, 1, c.prePrepareAs(0, 0, 4, c.request(5, "n4")))
	if len(c.sentFor(1, MsgPrepare, 12)) != 1 || len(c.sentFor(1, MsgPrepare, 4)) != 1 {
		t.Fatalf("after h=4: prepares %+v, want n=12 accepted and n=4 refused", c.sent(1, MsgPrepare))
	}
}

// PBFT TOCS §4.3 counts a checkpoint's votes per digest. A replica that signed two
// digests for one seq (its lie first, then the truth) cannot veto stability: both are
// kept as evidence, the conflict is counted, and its true vote counts for its digest.
func TestCheckpointSignedWithTwoDigestsCannotVetoStability(t *testing.T) {
	c := newCluster(t, 4)
	c.holdIf = isType(MsgCheckpoint)
	c.submitAndRun(c.requests(4, 2, "c")...)
	c.holdIf = nil
	r := c.reps[1]
	own := r.ckpts[4].ownDigest
	lie := crypto.Digest{0x11, 0xe}
	c.injectNow(3, 1, c.checkpointAs(3, 4, lie))
	c.injectNow(2, 1, c.checkpointAs(2, 4, own))
	if s := r.Status(); s.LowMark != 0 {
		t.Fatalf("stable on own + one matching checkpoint: %+v", s)
	}
	c.injectNow(3, 1, c.checkpointAs(3, 4, own))
	if s := r.Status(); s.LowMark != 4 {
		t.Fatalf("replica 3's true checkpoint, after its lie, was not counted: %+v", s)
	}
	if len(c.dropped(1, "conflicting checkpoint")) != 1 {
		t.Fatalf("replica 3 signing two digests was not counted as a conflict: %+v", c.drops[1])
	}
	sc := c.stables[1][0]
	if sc.State != own || len(sc.Proof) != 3 {
		t.Fatalf("stable checkpoint %+v, want the own digest with a 3-message proof", sc)
	}
	// Memory stays bounded: a third digest and more from one sender are not kept.
	c.injectNow(2, 1, c.checkpointAs(2, 8, lie))
	for k := byte(1); k <= 5; k++ {
		c.injectNow(2, 1, c.checkpointAs(2, 8, crypto.Digest{k}))
	}
	if cv := r.ckpts[8]; cv == nil || len(cv.digests) != maxDigestsPerSender {
		t.Fatalf("checkpoint votes at n=8 after 6 digests from one replica: %+v", cv)
	}
	if len(c.dropped(1, "more digests from one replica")) != 4 {
		t.Fatalf("digests beyond %d from one replica not refused: %+v", maxDigestsPerSender, c.drops[1])
	}
}

func TestGarbageCollectionKeepsLogWithinWindow(t *testing.T) {
	c := newCluster(t, 4)
	L := int(c.cfgs[0].LogWindow)
	K := int(c.cfgs[0].CheckpointInterval)
	total := 0
	for round := 0; round < 12; round++ {
		// Bursts larger than the window: the primary fills it and must wait for
		// checkpoints; commits are held for a while so entries pile up.
		c.holdIf = isType(MsgCommit)
		c.submitAndRun(c.requests(10, 5, fmt.Sprint("gc", round))...)
		c.holdIf = nil
		c.release(nil)
		c.run()
		total += 10
		c.tickAll(2)
	}
	if !c.runUntil(50, func() bool {
		for i := range c.n {
			if c.apps[i].ops != total {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("not every request executed:%s", c.debug())
	}
	if c.maxLog[0] != L {
		t.Fatalf("the primary's log never filled the window (max %d of %d): the test checks little", c.maxLog[0], L)
	}
	for i := range c.n {
		if c.maxLog[i] > L {
			t.Fatalf("replica %d held %d log entries, window is %d", i, c.maxLog[i], L)
		}
		if c.maxCkpts[i] > L/K+c.n {
			t.Fatalf("replica %d held checkpoint votes for %d seqs", i, c.maxCkpts[i])
		}
		s := c.reps[i].Status()
		if s.Executed != uint64(total) || s.LowMark != s.Executed-s.Executed%uint64(K) {
			t.Fatalf("replica %d: low mark %d after executing %d: garbage collection lags", i, s.LowMark, s.Executed)
		}
		for _, ce := range c.reps[i].clients.clients {
			if len(ce.replies) > c.cfgs[i].ReplyWindow {
				t.Fatalf("replica %d caches %d replies for one client", i, len(ce.replies))
			}
		}
	}
	c.requireAgreement(c.all()...)
	c.requireExactlyOnce()

	// Checkpoints far above the window from a faulty replica take bounded memory.
	r := c.reps[1]
	h := r.Status().LowMark
	for k := uint64(1); k <= 50; k++ {
		seq := h + 1000*uint64(K) + k*uint64(K)
		if k%2 == 0 {
			seq = h + 1000*uint64(K) - k*uint64(K)
		}
		c.injectNow(3, 1, c.checkpointAs(3, seq, crypto.Digest{byte(k)}))
	}
	if len(r.ckpts) > L/K+c.n {
		t.Fatalf("50 high checkpoints from one replica: %d checkpoint seqs held", len(r.ckpts))
	}
}

func TestPrimaryProposesOnlyInsideWatermarks(t *testing.T) {
	c := newCluster(t, 4) // L = 8
	c.holdIf = isType(MsgCheckpoint)
	c.submitAndRun(c.requests(12, 4, "w")...)
	pp := c.sent(0, MsgPrePrepare)
	if len(pp) != 8 || pp[7].Seq != 8 {
		t.Fatalf("primary proposed %d batches without a stable checkpoint, window is 8", len(pp))
	}
	if s := c.reps[0].Status(); s.Pending != 4 || s.Executed != 8 || s.LowMark != 0 {
		t.Fatalf("primary: %+v", s)
	}
	c.holdIf = nil
	c.release(nil)
	c.run()
	for i := range c.n {
		if s := c.reps[i].Status(); s.Executed != 12 || s.LowMark != 12 {
			t.Fatalf("replica %d after checkpoints: %+v", i, s)
		}
	}
	c.requireAgreement(c.all()...)
}

// ---- state transfer ----

func TestLaggingReplicaInstallsCertifiedCheckpointState(t *testing.T) {
	c := newCluster(t, 4)
	early := c.requests(4, 4, "early")
	c.submitAndRun(early...)
	c.isolate(3)
	mid := c.requests(16, 4, "mid")
	c.submitAndRun(mid...)
	for i := range 3 {
		if s := c.reps[i].Status(); s.Executed != 20 || s.LowMark != 20 {
			t.Fatalf("replica %d without 3: %+v", i, s)
		}
	}
	if s := c.reps[3].Status(); s.Executed != 4 || s.LowMark != 4 {
		t.Fatalf("isolated replica: %+v", s)
	}
	c.reconnect(3)
	c.submit(0, c.request(1, "late"))
	if !c.runUntil(100, func() bool { return c.allExecuted(21, c.all()...) }) {
		t.Fatalf("lagging replica did not catch up:%s", c.debug())
	}
	a3 := c.apps[3]
	if len(a3.installs) != 1 || a3.installs[0] != 20 {
		t.Fatalf("replica 3 installed %v, want the checkpoint at 20", a3.installs)
	}
	if a3.ops != 5 || slices.Contains(a3.batches, 5) {
		t.Fatalf("replica 3 ran %d ops (batches %v): it should have run early and late only", a3.ops, a3.batches)
	}
	for i := range c.n {
		if c.stateDigest(i) != c.stateDigest(0) || !bytes.Equal(c.apps[i].state, c.apps[0].state) {
			t.Fatalf("replica %d state differs after state transfer", i)
		}
	}

	// Exactly-once survives the transfer: old requests are answered from the installed
	// client table (or dropped when below its low mark), never run again.
	ops := make([]int, c.n)
	for i := range c.n {
		ops[i] = c.apps[i].ops
	}
	orig := c.repliesTo(4, 5) // mid[15]: client 4, t=5, inside the reply window
	c.submit(3, mid[15])
	c.submit(0, mid[15])
	c.submit(3, early[0]) // client 1, t=1: below the low mark
	c.run()
	for i := range c.n {
		if c.apps[i].ops != ops[i] {
			t.Fatalf("replica %d ran a retransmitted old request", i)
		}
	}
	var from3 []tReply
	for _, r := range c.repliesTo(4, 5) {
		if r.from == 3 {
			from3 = append(from3, r)
		}
	}
	if len(from3) != 1 || !bytes.Equal(from3[0].reply.Result, orig[0].reply.Result) {
		t.Fatalf("replica 3 answered the retransmission with %d replies, want the cached result", len(from3))
	}
	if len(c.dropped(3, "superseded")) != 1 {
		t.Fatalf("replica 3 did not drop the request below the low mark: %+v", c.drops[3])
	}
	c.requireExactlyOnce()

	// Replica 3 is a full member again: without replica 1 the cluster needs it for every
	// quorum, its checkpoints included.
	c.isolate(1)
	c.submitAndRun(c.requests(8, 4, "after")...)
	for _, i := range []int{0, 2, 3} {
		if s := c.reps[i].Status(); s.Executed != 29 || s.LowMark != 28 {
			t.Fatalf("replica %d with 1 isolated: %+v", i, s)
		}
	}
	c.requireAgreement(0, 2, 3)
	if c.maxLog[3] > int(c.cfgs[3].LogWindow) {
		t.Fatalf("replica 3 held %d log entries", c.maxLog[3])
	}
}

func TestStateFromByzantinePeerThatDoesNotMatchCertifiedDigestIsRejected(t *testing.T) {
	c := newCluster(t, 4)
	c.isolate(3)
	c.submitAndRun(c.requests(16, 4, "s")...)
	sc, good := c.reps[0].stable, c.reps[0].stableState
	if sc == nil || sc.Seq != 16 || len(sc.Proof) != 3 {
		t.Fatalf("replica 0 stable checkpoint %+v", sc)
	}
	c.reconnect(3)
	c.holdIf = isType(MsgStateRequest)
	// The certified checkpoint reaches replica 3, which starts fetching state: any
	// certified state beyond what it executed (n=0), the one at 16 included.
	for _, s := range sc.Proof {
		c.injectNow(int(s.From), 3, &Envelope{Msg: s})
	}
	if len(c.held) != 1 || c.held[0].from != 3 || c.held[0].info().Seq != 1 {
		t.Fatalf("replica 3 did not ask for state above n=0: held %d frames", len(c.held))
	}

	// The adversary holds replica 2's key and answers with the valid proof but a state
	// that is not the certified one.
	var cs CheckpointState
	if err := Unmarshal(good, &cs); err != nil {
		t.Fatal(err)
	}
	wrongApp := CheckpointState{App: []byte("not the state"), Clients: cs.Clients}
	wrongTable := CheckpointState{App: cs.App, Clients: slices.Clone(cs.Clients)}
	wrongTable.Clients[0].Replies = slices.Clone(wrongTable.Clients[0].Replies)
	wrongTable.Clients[0].Replies[0].Result = []byte("forged cached reply")
	respond := func(st []byte, proof []Signed) {
		c.injectNow(2, 3, &Envelope{Msg: c.signAs(2, MsgStateResponse, StateResponse{Seq: 16, Proof: proof, State: st})})
	}
	respond(Marshal(wrongApp), sc.Proof)
	respond(Marshal(wrongTable), sc.Proof)
	if d := c.dropped(3, "does not match the certified digest"); len(d) != 2 || d[0].From != 2 || d[0].Type != MsgStateResponse {
		t.Fatalf("state not matching the certified digest: drops %+v", c.drops[3])
	}
	respond([]byte{0xff}, sc.Proof)
	if len(c.dropped(3, "malformed state")) != 1 {
		t.Fatalf("malformed state not refused: %+v", c.drops[3])
	}
	// Proofs short of 2f+1 matching checkpoints certify nothing, whatever the state.
	respond(good, sc.Proof[:2])
	fake := StateDigest(wrongApp.App, wrongApp.Clients)
	respond(Marshal(wrongApp), []Signed{sc.Proof[0], sc.Proof[1], c.signAs(2, MsgCheckpoint, Checkpoint{Seq: 16, State: fake})})
	respond(Marshal(wrongApp), []Signed{c.signAs(2, MsgCheckpoint, Checkpoint{Seq: 16, State: fake})})
	if len(c.dropped(3, "without a 2f+1 checkpoint proof")) != 3 {
		t.Fatalf("state responses without a quorum proof: drops %+v", c.drops[3])
	}
	if len(c.apps[3].installs) != 0 || c.reps[3].Status().LowMark != 0 {
		t.Fatalf("replica 3 installed unverified state: %v", c.apps[3].installs)
	}

	// The correct peers' answers install the certified state.
	c.holdIf = nil
	c.release(nil)
	if !c.runUntil(50, func() bool { return len(c.apps[3].installs) > 0 }) {
		t.Fatalf("certified state never installed:%s", c.debug())
	}
	if !slices.Equal(c.apps[3].installs, []uint64{16}) || !bytes.Equal(c.apps[3].state, cs.App) {
		t.Fatalf("replica 3 installed %v", c.apps[3].installs)
	}
	if c.stateDigest(3) != sc.State || c.reps[3].Status().LowMark != 16 {
		t.Fatalf("replica 3 after install: %+v", c.reps[3].Status())
	}
}

func TestReplicaWhoseCheckpointDisagreesFetchesCertifiedState(t *testing.T) {
	c := newCluster(t, 4)
	c.submitAndRun(c.requests(2, 2, "x")...)
	// Replica 1's application state gets corrupted (a local fault, e.g. a bad disk).
	bad := sha256.Sum256([]byte("corrupted"))
	c.apps[1].state = bad[:]
	c.submitAndRun(c.requests(2, 2, "y")...)
	if len(c.dropped(1, "own state disagrees")) != 1 {
		t.Fatalf("replica 1 did not notice that its checkpoint disagrees with 2f+1 others: %+v", c.drops[1])
	}
	// A replica that executed past a checkpoint on a wrong state must still install the
	// certified state: its own digest disagreeing with 2f+1 others is what tells it so.
	if !c.runUntil(50, func() bool { return len(c.apps[1].installs) > 0 }) {
		t.Fatalf("replica 1 never installed the certified state at 4: %+v", c.reps[1].Status())
	}
	if c.apps[1].installs[0] != 4 || c.stateDigest(1) != c.stateDigest(0) {
		t.Fatalf("replica 1 installed %v but its state still differs", c.apps[1].installs)
	}
	c.submitAndRun(c.requests(8, 2, "z")...)
	for i := range c.n {
		if s := c.reps[i].Status(); s.Executed != 12 || s.LowMark != 12 {
			t.Fatalf("replica %d: %+v", i, s)
		}
	}
	c.requireAgreement(c.all()...)
}

func TestSlowApplicationDefersInstallUntilBatchesReturn(t *testing.T) {
	c := newCluster(t, 4)
	c.async[3] = true // replica 3's application runs nothing until told
	c.submitAndRun(c.requests(20, 4, "slow")...)
	for i := range 3 {
		if s := c.reps[i].Status(); s.Executed != 20 || s.LowMark != 20 {
			t.Fatalf("replica %d: %+v", i, s)
		}
	}
	r3 := c.reps[3]
	// Execution stops at the checkpoint batch until its snapshot is back.
	if len(c.pendingExec[3]) != 4 || c.pendingExec[3][3].Seq != 4 || !c.pendingExec[3][3].Checkpoint {
		t.Fatalf("replica 3 was handed %d batches, want 1..4 ending with the checkpoint", len(c.pendingExec[3]))
	}
	// Its peers certified checkpoints past its window: it fetches one while its
	// application still has batches to run.
	c.tickAll(20)
	if r3.pendingInstall == nil && r3.transfer == nil {
		t.Fatalf("replica 3 does not fetch state although the cluster is far ahead:%s", c.debug())
	}
	c.execute(3, 2)
	if len(c.apps[3].installs) != 0 {
		t.Fatalf("state installed while batches were still executing")
	}
	c.execute(3, -1)
	if !c.runUntil(50, func() bool {
		c.execute(3, -1)
		return len(c.apps[3].installs) > 0
	}) {
		t.Fatalf("replica 3 never installed the certified state:%s", c.debug())
	}
	if got := c.apps[3].installs[0]; got != 20 {
		t.Fatalf("installed %d, want 20", got)
	}
	if c.stateDigest(3) != c.stateDigest(0) || r3.Status().LowMark != 20 {
		t.Fatalf("replica 3 after install: %+v", r3.Status())
	}
	// It keeps up from there, its application still lagging behind the core.
	c.submitAndRun(c.requests(6, 4, "more")...)
	c.execute(3, -1)
	c.run()
	c.execute(3, -1)
	if !c.allExecuted(26, c.all()...) {
		t.Fatalf("not all at 26:%s", c.debug())
	}
	c.requireAgreement(c.all()...)
	c.requireExactlyOnce()
}

func TestOlderCertifiedStateIsNeverInstalledOverNewer(t *testing.T) {
	c := newCluster(t, 4)
	c.submitAndRun(c.requests(4, 2, "a")...)
	old, oldState := c.reps[0].stable, c.reps[0].stableState
	c.submitAndRun(c.requests(5, 2, "b")...)
	for i := range c.n {
		if s := c.reps[i].Status(); s.LowMark != 8 || s.Executed != 9 {
			t.Fatalf("replica %d: %+v", i, s)
		}
	}
	before := c.stateDigest(1)
	// A replay of the (validly certified) state at 4, from any replica, changes nothing.
	resp := StateResponse{Seq: old.Seq, Proof: old.Proof, State: oldState}
	c.injectNow(2, 1, &Envelope{Msg: c.signAs(2, MsgStateResponse, resp)})
	for _, s := range old.Proof {
		c.injectNow(int(s.From), 1, &Envelope{Msg: s})
	}
	c.run()
	if len(c.apps[1].installs) != 0 || c.reps[1].Status().LowMark != 8 || c.stateDigest(1) != before {
		t.Fatalf("an older checkpoint moved replica 1 back: installs %v, %+v", c.apps[1].installs, c.reps[1].Status())
	}
}

// A valid but older certified state never replaces a newer one waiting to install: a
// replayed stale state response would otherwise undo the newer transfer.
func TestOlderCertifiedStateNeverReplacesPendingNewerInstall(t *testing.T) {
	c := newCluster(t, 4)
	c.async[3] = true
	c.holdIf = isType(MsgStateRequest, MsgStateResponse)
	c.submitAndRun(c.requests(16, 4, "a")...)
	sc16, st16 := c.reps[0].stable, c.reps[0].stableState
	c.submitAndRun(c.requests(4, 4, "b")...)
	sc20, st20 := c.reps[0].stable, c.reps[0].stableState
	if sc16 == nil || sc20 == nil || sc20.Seq <= sc16.Seq {
		t.Fatalf("setup: stable checkpoints %v, %v", sc16, sc20)
	}
	c.holdIf, c.held = nil, nil
	r3 := c.reps[3]
	c.injectNow(0, 3, &Envelope{Msg: c.signAs(0, MsgStateResponse, StateResponse{Seq: sc20.Seq, Proof: sc20.Proof, State: st20})})
	if r3.pendingInstall == nil || r3.pendingInstall.sc.Seq != sc20.Seq {
		t.Fatalf("setup: replica 3 does not wait to install %d", sc20.Seq)
	}
	// A Byzantine replica replays the older, validly certified state.
	c.injectNow(2, 3, &Envelope{Msg: c.signAs(2, MsgStateResponse, StateResponse{Seq: sc16.Seq, Proof: sc16.Proof, State: st16})})
	c.holdIf = isType(MsgStateRequest, MsgStateResponse)
	c.execute(3, -1)
	if !slices.Equal(c.apps[3].installs, []uint64{sc20.Seq}) {
		t.Fatalf("replica 3 installed %v, want [%d]", c.apps[3].installs, sc20.Seq)
	}
}

// A replica that missed everything up to a stable checkpoint, and then sees the cluster
// go idle (no new request, so no new message that would reveal its lag), still catches
// up: peers send the stable proof to replicas that showed nothing at or beyond it.
func TestReplicaThatMissedStableCheckpointCatchesUpWhileClusterIsIdle(t *testing.T) {
	c := newCluster(t, 4)
	c.submitAndRun(c.requests(2, 2, "before")...)
	c.isolate(3)
	c.submitAndRun(c.requests(10, 2, "during")...) // checkpoints 4 and 8 become stable without 3
	if c.reps[0].Status().LowMark < 8 || c.executed(3) >= 4 {
		t.Fatalf("setup: replica 0 %+v, replica 3 %+v", c.reps[0].Status(), c.reps[3].Status())
	}
	c.reconnect(3)
	// No more requests: only ticks (retransmission) can tell replica 3 it is behind.
	if !c.runUntil(40, func() bool { return c.executed(3) == c.executed(0) }) {
		t.Fatalf("idle cluster left replica 3 behind: %s", c.debug())
	}
	if len(c.apps[3].installs) == 0 || c.stateDigest(3) != c.stateDigest(0) {
		t.Fatalf("replica 3 caught up without the certified state: installs %v", c.apps[3].installs)
	}
}

// A state larger than one chunk arrives in chunks, at most a window of them asked at a
// time, is assembled, checked against the certified digest as a whole, and installed.
func TestStateTransfersInChunks(t *testing.T) {
	c := newCluster(t, 4, func(cfg *Config) { cfg.StateChunkBytes = 32 })
	c.submitAndRun(c.requests(4, 4, "early")...)
	c.isolate(3)
	c.submitAndRun(c.requests(16, 4, "mid")...)
	chunks := (len(c.reps[0].stableState) + 31) / 32
	if chunks < 3*stateWindow {
		t.Fatalf("setup: the state is only %d chunks", chunks)
	}
	c.reconnect(3)
	c.submit(0, c.request(1, "late"))
	if !c.runUntil(100, func() bool { return c.allExecuted(21, c.all()...) }) {
		t.Fatalf("lagging replica did not catch up through %d chunks:%s", chunks, c.debug())
	}
	if a3 := c.apps[3]; len(a3.installs) != 1 || a3.installs[0] != 20 || c.stateDigest(3) != c.stateDigest(0) {
		t.Fatalf("replica 3 installed %v, state equal: %v", a3.installs, c.stateDigest(3) == c.stateDigest(0))
	}
	asked := map[uint32]int{}
	for _, m := range c.sent(3, MsgStateRequest) {
		asked[m.Chunk]++
	}
	if len(asked) != chunks {
		t.Fatalf("replica 3 asked for %d distinct chunks, the state has %d", len(asked), chunks)
	}
}

// A stalled replica's probe for a seq above a peer's stable checkpoint is answered with
// the commit certificates the peer holds (the primary's pre-prepare with its batch and
// a quorum of matching COMMITs, relayed), from which the prober executes: the commit
// certificate rule, for a replica whose own votes never made a quorum.
func TestProbeAboveTheStableCheckpointIsAnsweredWithCommitCertificates(t *testing.T) {
	c := newCluster(t, 4)
	c.isolate(3)
	c.submitAndRun(c.requests(2, 2, "cert")...)
	if c.executed(1) != 2 || c.executed(3) != 0 {
		t.Fatalf("replicas 1 and 3 at %d and %d, want 2 and 0", c.executed(1), c.executed(3))
	}
	c.isolate(0)
	c.isolate(2)
	c.reconnect(3)
	c.injectNow(3, 1, &Envelope{Msg: c.signAs(3, MsgStateRequest, StateRequest{Seq: 1})})
	var commits, pps int
	for _, m := range c.queue {
		if m.to == 3 && m.from == 1 {
			switch i := m.info(); i.Type {
			case MsgCommit:
				commits++
			case MsgPrePrepare:
				pps++
			}
		}
	}
	if pps != 2 || commits < 2*3 {
		t.Fatalf("replica 1 answered the probe with %d pre-prepares and %d commits, want 2 and a quorum for each", pps, commits)
	}
	c.run()
	if c.executed(3) != 2 {
		t.Fatalf("replica 3 did not execute on the commit certificates:%s", c.debug())
	}
	if cm := c.sentFor(3, MsgCommit, 1); len(cm) != 0 {
		t.Fatalf("replica 3 signed %+v without being prepared", cm)
	}
	c.requireAgreement(1, 3)
}

// PBFT TOCS §4.3: a replica keeps the state of each checkpoint it signs until the
// checkpoint is garbage-collected, crash or not. Here the only replicas that ever held
// the state at n=8 are 0, 1 and 2; 3 never got there. 0 and 1 crash before checkpoint 8
// became stable anywhere, and 2 stays down. Once 0 and 1 hold a proof of checkpoint 8,
// no peer can serve its state: each must install the state from its own records.
func TestReplicaInstallsACheckpointItSignedFromItsOwnRecordsAfterACrash(t *testing.T) {
	c := newCluster(t, 4)
	c.submitAndRun(c.requests(4, 2, "a")...)
	if !c.allExecuted(4, c.all()...) {
		t.Fatalf("setup: not all executed 4:%s", c.debug())
	}
	c.isolate(3)
	c.dropIf = func(m tMsg) bool { return m.env().Msg.Type == MsgCheckpoint }
	c.submitAndRun(c.requests(4, 2, "b")...)
	if !c.allExecuted(8, 0, 1, 2) {
		t.Fatalf("setup: 0, 1, 2 did not execute 8:%s", c.debug())
	}
	want := c.stateDigest(0)
	var proof []*Envelope
	for i := 0; i < 3; i++ {
		if st := c.reps[i].Status(); st.LowMark != 4 {
			t.Fatalf("setup: replica %d has stable checkpoint %d, want 4 (checkpoint 8 must not be stable)", i, st.LowMark)
		}
		for _, ob := range c.out[i] {
			if ob.Env.Msg.Type == MsgCheckpoint && ob.Env.Msg.From == uint32(i) && infoOf(ob.Env).Seq == 8 {
				proof = append(proof, ob.Env)
			}
		}
	}
	if len(proof) != 3 {
		t.Fatalf("setup: %d CHECKPOINTs at 8 signed, want 3", len(proof))
	}
	c.dropIf = nil
	c.crash(0)
	c.crash(1)
	c.crash(2)
	c.restart(0)
	c.restart(1)
	for _, i := range []int{0, 1} {
		if st := c.reps[i].Status(); st.Executed != 4 {
			t.Fatalf("replica %d restarted at n=%d, want its stable checkpoint 4", i, st.Executed)
		}
		for _, env := range proof {
			if env.Msg.From != uint32(i) {
				c.injectNow(int(env.Msg.From), i, env)
			}
		}
	}
	c.run()
	for _, i := range []int{0, 1} {
		st := c.reps[i].Status()
		if st.LowMark != 8 || st.Executed != 8 {
			t.Fatalf("replica %d, holding a proof of checkpoint 8 it signed, is at stable %d, executed %d; want 8, 8:%s",
				i, st.LowMark, st.Executed, c.debug())
		}
		if c.stateDigest(i) != want {
			t.Fatalf("replica %d installed another state than the one it signed at 8", i)
		}
	}
}

// A state is checked only once its last chunk is in, so a faulty peer could claim the
// most chunks allowed and drip them forever, each one looking like progress. A peer
// gets a budget of ticks for the whole state, progress or not (doubling each round over
// the peers); past it the replica asks the next peer. Found by the red team's
// rt-slowloris strategy (liveness lost in 64-131 of 200 seeds per configuration).
func TestStateTransferMovesOnFromAPeerThatDripsChunksPastItsBudget(t *testing.T) {
	c := newCluster(t, 4)
	c.isolate(3)
	c.submitAndRun(c.requests(16, 4, "s")...)
	sc := c.reps[0].stable
	if sc == nil || sc.Seq != 16 {
		t.Fatalf("replica 0 stable checkpoint %+v", sc)
	}
	c.reconnect(3)
	// Replica 2 turns faulty: its own core says nothing to replica 3, and the adversary
	// with its key answers unasked with the valid proof, one new chunk a tick of the most a state may have (1 GiB in 1 MiB chunks).
	c.dropIf = func(m tMsg) bool { return m.from == 2 && m.to == 3 }
	chunk := uint32(0)
	drip := func() {
		c.injectNow(2, 3, &Envelope{Msg: c.signAs(2, MsgStateResponse, StateResponse{Seq: 16, Proof: sc.Proof,
			Chunk: chunk, Chunks: 1024, State: bytes.Repeat([]byte{byte(chunk)}, 16)})})
		chunk++
	}
	drip()
	if tr := c.reps[3].transfer; tr == nil || tr.peer != 2 {
		t.Fatalf("setup: replica 3 did not start assembling from the dripping peer: %+v", tr)
	}
	budget := stateBudgetPeriods * c.cfgs[3].RetransmitTicks
	for k := 0; k < 3*budget && len(c.apps[3].installs) == 0; k++ {
		drip()
		c.tickAll(1)
	}
	if !slices.Equal(c.apps[3].installs, []uint64{16}) || c.stateDigest(3) != sc.State {
		t.Fatalf("replica 3, fed a chunk a tick by a faulty peer for %d ticks (budget %d), installed %v:%s",
			3*budget, budget, c.apps[3].installs, c.debug())
	}
}
