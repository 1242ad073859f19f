package pbft

import (
	"bytes"
	"errors"
	"testing"

	"github.com/pbftkit/pbft/crypto"
)

// Crash and restart: a correct replica that comes back from what it persisted is only a
// slow replica to the others. It catches up, and it never contradicts what it signed
// before the crash.

func TestRestartedBackupCatchesUpAndAgrees(t *testing.T) {
	c := newCluster(t, 4)
	c.submitAndRun(c.requests(6, 3, "before")...)
	if !c.allExecuted(6, c.all()...) {
		t.Fatalf("setup: not all executed 6:%s", c.debug())
	}
	c.crash(3)
	c.submitAndRun(c.requests(14, 3, "during")...)
	if !c.allExecuted(20, 0, 1, 2) {
		t.Fatalf("the three others did not go on without replica 3:%s", c.debug())
	}
	c.restart(3)
	if st := c.reps[3].Status(); st.LowMark != 4 || st.Executed != 4 || st.View != 0 || !st.Active {
		t.Fatalf("restarted replica at %+v, want its stable checkpoint 4 in view 0", st)
	}
	if got := c.apps[3].installs; len(got) != 1 || got[0] != 4 {
		t.Fatalf("restarted replica installed %v, want its checkpoint 4", got)
	}
	c.submitAndRun(c.requests(4, 3, "after")...)
	if !c.runUntil(50, func() bool { return c.allExecuted(24, c.all()...) }) {
		t.Fatalf("restarted replica did not catch up:%s", c.debug())
	}
	if c.stateDigest(3) != c.stateDigest(0) {
		t.Fatalf("restarted replica's state differs from replica 0's")
	}
	c.requireAgreement(c.all()...)
}

func TestRestartedPrimaryNeverReusesASequenceNumber(t *testing.T) {
	c := newCluster(t, 4)
	// Nothing commits: the primary's proposals at n=1..3 stay in its log.
	c.dropIf = isType(MsgPrepare, MsgCommit)
	c.submitAndRun(c.requests(3, 3, "a")...)
	c.crash(0)
	c.restart(0)
	c.dropIf = nil
	d := c.request(4, "d")
	c.submitAndRun(d)
	digests := map[uint64]crypto.Digest{}
	for _, ob := range c.out[0] {
		if ob.Env.Msg.Type != MsgPrePrepare {
			continue
		}
		i := infoOf(ob.Env)
		if prev, ok := digests[i.Seq]; ok && prev != i.Digest {
			t.Fatalf("primary signed two pre-prepares for v=0 n=%d: %x and %x", i.Seq, short(prev), short(i.Digest))
		}
		digests[i.Seq] = i.Digest
	}
	if digests[4] != batchDigestOf(d) {
		t.Fatalf("the request after the restart went to n=4? pre-prepares: %v", digests)
	}
	if !c.runUntil(20, func() bool { return c.allExecuted(4, c.all()...) }) {
		t.Fatalf("n=1..4 did not execute after the restart:%s", c.debug())
	}
	c.requireAgreement(c.all()...)
	c.requireExactlyOnce()
}

func TestRestartedBackupRefusesAConflictingPrePrepare(t *testing.T) {
	c := newCluster(t, 4)
	a, b := c.request(1, "a"), c.request(2, "b")
	// A faulty primary shows backup 1 one batch for n=1, and after 1's restart another.
	c.injectNow(0, 1, c.prePrepareAs(0, 0, 1, a))
	c.crash(1)
	c.restart(1)
	c.injectNow(0, 1, c.prePrepareAs(0, 0, 1, b))
	if len(c.dropped(1, "equivocating pre-prepare")) != 1 {
		t.Fatalf("the second pre-prepare for n=1 was not refused; drops %v", c.drops[1])
	}
	for _, p := range c.sentFor(1, MsgPrepare, 1) {
		if p.Digest != batchDigestOf(a) {
			t.Fatalf("backup 1 prepared %x at n=1 after preparing %x before its crash", short(p.Digest), short(batchDigestOf(a)))
		}
	}
}

func TestRestartedReplicaViewChangeCarriesItsPreparedCertificate(t *testing.T) {
	c := newCluster(t, 4)
	a := c.request(1, "a")
	c.dropIf = isType(MsgCommit) // prepared everywhere, committed nowhere
	c.submitAndRun(a)
	c.crash(2)
	c.restart(2)
	c.reps[2].startViewChange(1)
	c.process(2)
	var vc ViewChange
	for _, ob := range c.out[2] {
		if ob.Env.Msg.Type == MsgViewChange {
			if err := Unmarshal(ob.Env.Msg.Body, &vc); err != nil {
				t.Fatal(err)
			}
		}
	}
	if vc.NewView != 1 || len(vc.Prepared) != 1 {
		t.Fatalf("view change after restart: %+v, want view 1 with the certificate for n=1", vc)
	}
	var pp PrePrepare
	if err := Unmarshal(vc.Prepared[0].PrePrepare.Body, &pp); err != nil || pp.Seq != 1 || pp.Digest != batchDigestOf(a) {
		t.Fatalf("certificate for %+v, want n=1 with a", pp)
	}
}

func TestRestartDuringViewChangeResendsTheSameViewChange(t *testing.T) {
	const T = 10
	c := newCluster(t, 4, vcTicks(T))
	c.submitAndRun(c.request(1, "a"))
	c.reps[2].startViewChange(1)
	c.process(2)
	var before []byte
	for _, ob := range c.out[2] {
		if ob.Env.Msg.Type == MsgViewChange {
			before = Marshal(ob.Env.Msg)
		}
	}
	c.queue = nil // its VIEW-CHANGE is lost in the crash
	c.crash(2)
	mark := len(c.out[2])
	c.restart(2)
	c.requireView(1, false, 2)
	var after [][]byte
	for _, ob := range c.out[2][mark:] {
		if ob.Env.Msg.Type == MsgViewChange {
			after = append(after, Marshal(ob.Env.Msg))
		}
	}
	if len(after) == 0 || !bytes.Equal(after[0], before) {
		t.Fatalf("restarted replica did not resend its view change as it was")
	}
	// The others follow (1 and 3 time out too) and a new view starts with 2 in it
	// (view 1, or 2 if the restarted replica gave up on view 1 first).
	c.isolate(0)
	b := c.request(2, "b")
	for _, i := range []int{1, 3} {
		c.submit(i, b)
	}
	if !c.runUntil(10*T, func() bool { return c.allExecuted(2, 1, 2, 3) }) {
		t.Fatalf("no view started with the restarted replica:%s", c.debug())
	}
	v := c.reps[2].Status().View
	if v == 0 {
		t.Fatalf("still in view 0")
	}
	c.requireView(v, true, 1, 2, 3)
	c.requireAgreement(1, 2, 3)
}

func TestRestartInANewViewStaysInThatView(t *testing.T) {
	const T = 10
	c := newCluster(t, 4, vcTicks(T))
	c.isolate(0)
	a := c.request(1, "a")
	for _, i := range []int{1, 2, 3} {
		c.submit(i, a)
	}
	if !c.runUntil(10*T, func() bool { return c.allExecuted(1, 1, 2, 3) }) {
		t.Fatalf("no view change:%s", c.debug())
	}
	c.requireView(1, true, 1, 2, 3)
	for _, i := range []int{1, 3} { // the new primary and a backup
		c.crash(i)
		c.restart(i)
		c.requireView(1, true, i)
	}
	b := c.request(2, "b")
	for _, i := range []int{1, 2, 3} {
		c.submit(i, b)
	}
	if !c.runUntil(10*T, func() bool { return c.allExecuted(2, 1, 2, 3) }) {
		t.Fatalf("view 1 did not go on after restarts:%s", c.debug())
	}
	c.requireView(1, true, 1, 2, 3)
	c.requireAgreement(1, 2, 3)
}

func TestCompactedRecordsRestoreWhatAllRecordsRestore(t *testing.T) {
	c := newCluster(t, 4)
	c.dropIf = func(m tMsg) bool { i := m.info(); return i.Type == MsgCommit && i.Seq > 38 }
	c.submitAndRun(c.requests(40, 10, "x")...)
	bound := 6*int(c.cfgs[0].LogWindow) + 4
	for i := range c.n {
		if got := len(c.records[i]); got > bound {
			t.Fatalf("replica %d keeps %d records after compaction, want at most %d", i, got, bound)
		}
		if len(c.allRecords[i]) <= len(c.records[i]) {
			t.Fatalf("replica %d: compaction removed nothing", i)
		}
		full, _ := NewReplica(c.cfgs[i])
		compact, _ := NewReplica(c.cfgs[i])
		if err := full.Restore(c.allRecords[i], c.vers[i]); err != nil {
			t.Fatalf("replica %d: restore from all records: %v", i, err)
		}
		if err := compact.Restore(c.records[i], c.vers[i]); err != nil {
			t.Fatalf("replica %d: restore from compacted records: %v", i, err)
		}
		if full.Status() != compact.Status() || full.debugString() != compact.debugString() {
			t.Fatalf("replica %d: restores differ:\n%s\n%s", i, full.debugString(), compact.debugString())
		}
		// n=37..40 prepared after checkpoint 36; 39 and 40 never committed.
		if st := full.Status(); st.LowMark != 36 || st.LogSize != 4 || len(full.prepared) != 4 {
			t.Fatalf("replica %d restored to %+v with %d certificates, want checkpoint 36 and n=37..40 prepared", i, st, len(full.prepared))
		}
	}
}

func TestRestoreRefusesRecordsThatDoNotVerify(t *testing.T) {
	c := newCluster(t, 4)
	c.submitAndRun(c.requests(5, 2, "x")...)
	recs := c.records[1]
	restore := func(recs []Record) error {
		r, _ := NewReplica(c.cfgs[1])
		return r.Restore(recs, c.vers[1])
	}
	if err := restore(recs); err != nil {
		t.Fatalf("untouched records: %v", err)
	}
	tamper := func(kind RecordKind, f func(*Record)) []Record {
		out := make([]Record, len(recs))
		copy(out, recs)
		for i := range out {
			if out[i].Kind == kind {
				rec := Record{}
				if err := Unmarshal(Marshal(out[i]), &rec); err != nil {
					t.Fatal(err)
				}
				f(&rec)
				out[i] = rec
				return out
			}
		}
		t.Fatalf("no %s record", kind)
		return nil
	}
	cases := map[string][]Record{
		"state not matching its proof": tamper(RecordStable, func(r *Record) { r.State = Marshal(CheckpointState{App: []byte("forged")}) }),
		"message with a bad signature": tamper(RecordMessage, func(r *Record) { r.Env.Msg.Sig[0] ^= 1 }),
		"certificate with a bad signature": tamper(RecordPrepared, func(r *Record) {
			r.Cert.Prepares[0].Sig[0] ^= 1
		}),
	}
	for name, recs := range cases {
		if err := restore(recs); err == nil {
			t.Errorf("%s: restored", name)
		}
	}
	used, _ := NewReplica(c.cfgs[1])
	used.Tick()
	if err := used.Restore(recs, c.vers[1]); !errors.Is(err, ErrRestored) {
		t.Fatalf("restore into a replica that ran: %v, want ErrRestored", err)
	}
}

func TestReplicaRestartedInAViewChangeGivesUpOnItInTime(t *testing.T) {
	const T = 10
	c := newCluster(t, 4, vcTicks(T))
	c.reps[2].startViewChange(1)
	c.process(2)
	c.queue = nil
	c.crash(2)
	c.restart(2)
	// Nobody else asks for view 1 any more (they moved on, or never will): the
	// VIEW-CHANGEs that would start its timer never come again.
	c.isolate(2)
	for k := 0; k < 2*T && c.reps[2].Status().View == 1; k++ {
		c.tick(2)
	}
	if st := c.reps[2].Status(); st.View != 2 || st.Active {
		t.Fatalf("restarted replica at %+v after %d ticks, want changing to view 2", st, 2*T)
	}
	// Its next view's timer waits for 2f+1 as usual: it does not run ahead alone.
	for k := 0; k < 10*T; k++ {
		c.tick(2)
	}
	if v := c.reps[2].Status().View; v != 2 {
		t.Fatalf("a replica alone went on to view %d", v)
	}
}

// The whole cluster crashes after a view change whose NEW-VIEW re-proposed prepared
// batches, and restarts from compacted records: the re-proposed batches' requests must
// still be on someone's disk, or their committed digests could never execute.
func TestWholeClusterRestartsAfterAViewChangeFromCompactedRecords(t *testing.T) {
	c := newCluster(t, 4, vcTicks(10))
	// n=5..10 prepare in view 0 but commit only in view 1, re-proposed by its NEW-VIEW.
	c.dropIf = func(m tMsg) bool { i := m.info(); return i.Type == MsgCommit && i.View == 0 && i.Seq >= 5 }
	c.submitAndRun(c.requests(10, 5, "x")...)
	for i := range c.n {
		c.reps[i].startViewChange(1)
		c.process(i)
	}
	c.run()
	if !c.allExecuted(10, c.all()...) {
		t.Fatalf("setup: n=1..10 not executed in view 1:%s", c.debug())
	}
	for i := range c.n {
		if len(c.records[i]) >= len(c.allRecords[i]) {
			t.Fatalf("setup: replica %d compacted nothing", i)
		}
		c.crash(i)
	}
	c.queue = nil
	c.dropIf = nil
	for i := range c.n {
		c.restart(i)
		for n := c.reps[i].h + 1; n <= 10; n++ {
			if e := c.reps[i].log[n]; e == nil || !e.hasBatch {
				t.Fatalf("replica %d restarted without the batch of n=%d:%s", i, n, c.reps[i].debugString())
			}
		}
	}
	more := c.request(6, "after")
	for i := range c.n {
		c.submit(i, more)
	}
	if !c.runUntil(200, func() bool { return c.allExecuted(11, c.all()...) }) {
		t.Fatalf("the restarted cluster is stuck:%s", c.debug())
	}
	c.requireAgreement(c.all()...)
}
