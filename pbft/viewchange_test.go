package pbft

import (
	"fmt"
	"slices"
	"testing"

	"github.com/pbftkit/pbft/crypto"
)

// ---- helpers for view-change scenarios ----

// vcTicks sets the initial view-change timeout T.
func vcTicks(t int) func(*Config) { return func(c *Config) { c.ViewChangeTicks = t } }

// inflight sets the primary's bound on proposed but not executed batches.
func inflightBound(k int) func(*Config) { return func(c *Config) { c.MaxInFlightBatches = k } }

func (c *tCluster) primaryOf(v uint64) int { return int(c.reps[0].q.Primary(v)) }

// vcViewsSent returns the new view of every VIEW-CHANGE replica i emitted, in order,
// retransmissions included.
func (c *tCluster) vcViewsSent(i int) []uint64 {
	var out []uint64
	for _, ob := range c.out[i] {
		if s := ob.Env.Msg; s.Type == MsgViewChange && s.From == uint32(i) {
			var vc ViewChange
			if err := Unmarshal(s.Body, &vc); err != nil {
				c.t.Fatalf("replica %d sent an undecodable view change: %v", i, err)
			}
			out = append(out, vc.NewView)
		}
	}
	return out
}

// newViewsSent returns the NEW-VIEWs replica i emitted (forwards included).
func (c *tCluster) newViewsSent(i int) []NewView {
	var out []NewView
	for _, ob := range c.out[i] {
		if s := ob.Env.Msg; s.Type == MsgNewView && s.From == uint32(i) {
			var nv NewView
			if err := Unmarshal(s.Body, &nv); err != nil {
				c.t.Fatalf("replica %d sent an undecodable new view: %v", i, err)
			}
			out = append(out, nv)
		}
	}
	return out
}

// prePreparesOf decodes the pre-prepares O of a NEW-VIEW.
func (c *tCluster) prePreparesOf(nv NewView) []PrePrepare {
	out := make([]PrePrepare, len(nv.PrePrepares))
	for i, s := range nv.PrePrepares {
		if err := Unmarshal(s.Body, &out[i]); err != nil {
			c.t.Fatalf("undecodable pre-prepare in a new view: %v", err)
		}
	}
	return out
}

// ppAs signs a bare pre-prepare (no batch) as replica from.
func (c *tCluster) ppAs(from int, view, seq uint64, d crypto.Digest) Signed {
	return c.signAs(from, MsgPrePrepare, PrePrepare{View: view, Seq: seq, Digest: d})
}

// certAs builds a prepared certificate for (view, seq, d): the pre-prepare of view's
// primary and a prepare from each of preparers.
func (c *tCluster) certAs(view, seq uint64, d crypto.Digest, preparers ...int) PreparedCert {
	pc := PreparedCert{PrePrepare: c.ppAs(c.primaryOf(view), view, seq, d)}
	for _, j := range preparers {
		pc.Prepares = append(pc.Prepares, c.signAs(j, MsgPrepare, Prepare{View: view, Seq: seq, Digest: d}))
	}
	return pc
}

// viewChangeAs signs a VIEW-CHANGE of replica from.
func (c *tCluster) viewChangeAs(from int, newView, stable uint64, proof []Signed, certs ...PreparedCert) Signed {
	return c.signAs(from, MsgViewChange, ViewChange{NewView: newView, StableSeq: stable, CheckpointProof: proof, Prepared: certs})
}

// newViewAs builds a NEW-VIEW signed by from whose pre-prepares (also signed by from)
// carry the given digests from seq first on.
func (c *tCluster) newViewAs(from int, view uint64, vcs []Signed, first uint64, digests ...crypto.Digest) *Envelope {
	nv := NewView{View: view, ViewChanges: vcs}
	for i, d := range digests {
		nv.PrePrepares = append(nv.PrePrepares, c.ppAs(from, view, first+uint64(i), d))
	}
	return &Envelope{Msg: c.signAs(from, MsgNewView, nv)}
}

func short(d crypto.Digest) []byte { return d[:4] }

func env(s Signed) *Envelope { return &Envelope{Msg: s} }

// requireView fails unless every listed replica is in view v with the given activity.
func (c *tCluster) requireView(v uint64, active bool, ids ...int) {
	c.t.Helper()
	for _, i := range ids {
		if s := c.reps[i].Status(); s.View != v || s.Active != active {
			c.t.Fatalf("replica %d: %+v, want view %d active=%v%s", i, s, v, active, c.debug())
		}
	}
}

// tickUntilViewChange ticks the given replicas one tick at a time (delivering after each)
// until one of them sends a VIEW-CHANGE for a view above from; it returns the ticks taken.
func (c *tCluster) ticksUntilViewChange(limit int, from uint64, ids ...int) int {
	c.t.Helper()
	for k := 1; k <= limit; k++ {
		c.tick(ids...)
		for _, i := range ids {
			if c.reps[i].Status().View > from {
				c.run()
				return k
			}
		}
		c.run()
	}
	c.t.Fatalf("no view change within %d ticks:%s", limit, c.debug())
	return 0
}

func noteDrops(c *tCluster, i int, substr string) int { return len(c.dropped(i, substr)) }

// ---- the view change itself (PBFT §4.4) ----

func TestSilentPrimaryIsReplacedAndRequestsExecuteInNewView(t *testing.T) {
	const T = 10
	c := newCluster(t, 4, vcTicks(T))
	backups := []int{1, 2, 3}
	c.isolate(0) // the primary of view 0 says nothing and hears nothing
	reqs := c.requests(3, 3, "silent")
	for _, r := range reqs {
		for _, i := range backups {
			c.submit(i, r)
		}
	}
	c.run()
	for k := 1; k < T; k++ {
		c.tick(backups...)
		c.run()
	}
	for _, i := range backups {
		if vcs := c.vcViewsSent(i); len(vcs) != 0 {
			t.Fatalf("replica %d sent view changes %v before its timer (T=%d) expired", i, vcs, T)
		}
		c.requireView(0, true, i)
	}
	c.tick(backups...) // the T-th tick
	for _, i := range backups {
		if vcs := c.vcViewsSent(i); len(vcs) != 1 || vcs[0] != 1 {
			t.Fatalf("replica %d sent view changes %v at its timeout, want one for view 1", i, vcs)
		}
	}
	c.run()
	nvs := c.newViewsSent(1)
	if len(nvs) != 1 || nvs[0].View != 1 || len(nvs[0].ViewChanges) != 3 || len(nvs[0].PrePrepares) != 0 {
		t.Fatalf("replica 1 (primary of view 1) sent new views %+v, want one for view 1 with 3 view changes and no pre-prepares", nvs)
	}
	for _, i := range []int{2, 3} {
		if nv := c.newViewsSent(i); len(nv) != 0 {
			t.Fatalf("backup %d sent a NEW-VIEW: %+v", i, nv)
		}
	}
	if !c.runUntil(5*T, func() bool { return c.allExecuted(3, backups...) }) {
		t.Fatalf("requests did not execute in view 1:%s", c.debug())
	}
	c.requireView(1, true, backups...)
	for _, r := range reqs {
		if !c.completed(r) {
			t.Fatalf("request %x did not complete", short(reqDigest(r)))
		}
		var q Request
		_ = Unmarshal(r.Msg.Body, &q)
		for _, rep := range c.repliesTo(q.Client, q.Timestamp) {
			if rep.reply.View != 1 {
				t.Fatalf("reply %+v from %d: want view 1", rep.reply, rep.from)
			}
		}
	}
	for _, i := range backups {
		if c.apps[i].ops != 3 {
			t.Fatalf("replica %d ran %d operations, want 3", i, c.apps[i].ops)
		}
	}
	c.requireAgreement(backups...)
	c.requireExactlyOnce()
}

// PBFT §4.4: the view-change timer stops when the backup no longer waits for the
// request it timed, not whenever a batch executes. A faulty primary that keeps the
// sequence numbers moving with batches of nothing, while a client's request waits, is
// replaced after the timeout like a silent one.
func TestViewChangeTimerIgnoresBatchesWithoutTheRequestsItWaitsFor(t *testing.T) {
	const T = 10
	c := newCluster(t, 4, vcTicks(T))
	backups := []int{1, 2, 3}
	c.isolate(0) // the primary's own traffic is forged below: null batches only
	for _, i := range backups {
		c.submit(i, c.request(1, "waits"))
	}
	c.run()
	seq := uint64(0)
	for k := 0; k < 3*T; k++ {
		if k%2 == 0 {
			seq++
			for _, i := range backups {
				c.inject(0, i, c.prePrepareAs(0, 0, seq))
			}
		}
		c.run()
		if len(c.vcViewsSent(1)) > 0 {
			break
		}
		c.tick(backups...)
	}
	if c.executed(1) < 2 {
		t.Fatalf("the null batches did not execute (replica 1 at n=%d): the test checks little", c.executed(1))
	}
	for _, i := range backups {
		if vcs := c.vcViewsSent(i); len(vcs) != 1 || vcs[0] != 1 {
			t.Fatalf("replica %d sent view changes %v after %d null batches, want one for view 1 at its timeout", i, vcs, seq)
		}
	}
	if seq > T/2+2 {
		t.Fatalf("the timer fired after %d null batches (%d ticks), not at its timeout of %d ticks", seq, 2*seq, T)
	}
}

func TestPreparedRequestSurvivesViewChange(t *testing.T) {
	const T = 10
	c := newCluster(t, 4, vcTicks(T))
	a, b, cc, d := c.request(1, "a"), c.request(2, "b"), c.request(3, "c"), c.request(4, "d")
	dA, dB, dC, dD := batchDigestOf(a), batchDigestOf(b), batchDigestOf(cc), batchDigestOf(d)
	// No commit of view 0 ever arrives; the pre-prepare for n=2 is lost.
	c.dropIf = func(m tMsg) bool {
		i := m.info()
		return (i.Type == MsgCommit && i.View == 0) || (i.Type == MsgPrePrepare && i.View == 0 && i.Seq == 2)
	}
	c.submitAndRun(a, b, cc)
	for i := 0; i < 4; i++ {
		r := c.reps[i]
		if r.prepared[1] == nil || r.prepared[1].digest != dA || r.prepared[3] == nil || r.prepared[3].digest != dC || r.prepared[2] != nil {
			t.Fatalf("replica %d: want a and c prepared at n=1 and n=3 and nothing at n=2:%s", i, c.debug())
		}
		if c.executed(i) != 0 {
			t.Fatalf("replica %d executed without commits", i)
		}
	}
	c.isolate(0)
	backups := []int{1, 2, 3}
	for _, i := range backups {
		c.submit(i, b) // the client of b retransmits to every replica
		c.submit(i, d)
	}
	c.run()
	c.ticksUntilViewChange(2*T, 0, backups...)
	c.run()
	nvs := c.newViewsSent(1)
	if len(nvs) == 0 {
		t.Fatalf("no NEW-VIEW from replica 1:%s", c.debug())
	}
	pps := c.prePreparesOf(nvs[0])
	want := []crypto.Digest{dA, nullDigest, dC}
	if len(pps) != len(want) {
		t.Fatalf("NEW-VIEW pre-prepares %+v, want n=1..3", pps)
	}
	for k, pp := range pps {
		if pp.View != 1 || pp.Seq != uint64(k+1) || pp.Digest != want[k] {
			t.Fatalf("NEW-VIEW pre-prepare %d = %+v, want (v=1, n=%d, %x)", k, pp, k+1, want[k][:4])
		}
	}
	if !c.runUntil(5*T, func() bool { return c.allExecuted(5, backups...) }) {
		t.Fatalf("did not execute up to 5 in view 1:%s", c.debug())
	}
	c.requireView(1, true, backups...)
	for _, i := range backups {
		got := c.apps[i].digests
		if got[1] != dA || got[2] != nullDigest || got[3] != dC {
			t.Fatalf("replica %d ran %x/%x/%x at n=1..3, want a, null, c", i, short(got[1]), short(got[2]), short(got[3]))
		}
		if (got[4] != dB || got[5] != dD) && (got[4] != dD || got[5] != dB) {
			t.Fatalf("replica %d ran %x/%x at n=4,5, want b and d", i, short(got[4]), short(got[5]))
		}
	}
	for _, rep := range c.repliesTo(1, 1) {
		if rep.reply.View != 1 {
			t.Fatalf("a was answered in view %d by %d, want view 1", rep.reply.View, rep.from)
		}
	}
	for _, r := range []*Envelope{a, b, cc, d} {
		if !c.completed(r) {
			t.Fatalf("request %x did not complete", short(reqDigest(r)))
		}
	}
	c.requireAgreement(backups...)
	c.requireExactlyOnce()
}

// nvFixture is a set of valid VIEW-CHANGEs for view 2 (primary 2) whose NEW-VIEW must
// carry, for n=1..3: the digest of the view-1 certificate (not the view-0 one), a null
// request, and the digest of the only certificate for n=3.
type nvFixture struct {
	c          *tCluster
	dA, dB, dC crypto.Digest
	vcs        []Signed // from 0, 1 and 2
	want       []crypto.Digest
}

func newNVFixture(t *testing.T) *nvFixture {
	c := newCluster(t, 4)
	f := &nvFixture{c: c}
	f.dA = batchDigestOf(c.request(1, "a"))
	f.dB = batchDigestOf(c.request(2, "b"))
	f.dC = batchDigestOf(c.request(3, "c"))
	low := c.certAs(0, 1, f.dA, 2, 3)  // n=1 prepared in view 0 with a
	high := c.certAs(1, 1, f.dB, 0, 2) // n=1 prepared again in view 1 with b
	third := c.certAs(0, 3, f.dC, 1, 2)
	f.vcs = []Signed{
		c.viewChangeAs(0, 2, 0, nil, low),
		c.viewChangeAs(1, 2, 0, nil, high, third),
		c.viewChangeAs(2, 2, 0, nil),
	}
	f.want = []crypto.Digest{f.dB, nullDigest, f.dC}
	return f
}

func TestNewViewWhosePrePreparesDoNotMatchIsRejectedAndCounted(t *testing.T) {
	f := newNVFixture(t)
	c := f.c
	null := nullDigest
	bad := []struct {
		name string
		nv   *Envelope
	}{
		{"another digest for one seq", c.newViewAs(2, 2, f.vcs, 1, f.dB, null, f.dA)},
		{"a missing seq", c.newViewAs(2, 2, f.vcs, 1, f.dB, f.dC)},
		{"the null request left out", c.newViewAs(2, 2, f.vcs, 1, f.dB)},
		{"a missing seq replaced by one above max-s", c.newViewAs(2, 2, f.vcs, 1, f.dB, f.dC, null)},
		{"the digest of the lower-view certificate", c.newViewAs(2, 2, f.vcs, 1, f.dA, null, f.dC)},
		{"an extra seq", c.newViewAs(2, 2, f.vcs, 1, f.dB, null, f.dC, f.dA)},
		{"no pre-prepares at all", c.newViewAs(2, 2, f.vcs, 1)},
		{"seqs shifted by one", c.newViewAs(2, 2, f.vcs, 2, f.dB, null, f.dC)},
		{"a real request instead of the null one", c.newViewAs(2, 2, f.vcs, 1, f.dB, f.dA, f.dC)},
	}
	// A pre-prepare of the wrong view, and one signed by another replica.
	wrongView := c.newViewAs(2, 2, f.vcs, 1, f.want...)
	{
		var nv NewView
		_ = Unmarshal(wrongView.Msg.Body, &nv)
		nv.PrePrepares[0] = c.ppAs(2, 1, 1, f.dB)
		wrongView = env(c.signAs(2, MsgNewView, nv))
		bad = append(bad, struct {
			name string
			nv   *Envelope
		}{"a pre-prepare of another view", wrongView})
		nv.PrePrepares[0] = c.ppAs(1, 2, 1, f.dB)
		bad = append(bad, struct {
			name string
			nv   *Envelope
		}{"a pre-prepare not signed by the new primary", env(c.signAs(2, MsgNewView, nv))})
	}
	for k, b := range bad {
		before := noteDrops(c, 3, "do not match")
		c.injectNow(2, 3, b.nv)
		got := c.dropped(3, "do not match")
		if len(got) != before+1 || got[len(got)-1].From != 2 || got[len(got)-1].Type != MsgNewView {
			t.Fatalf("NEW-VIEW with %s: drops %+v, want it refused as not matching", b.name, c.drops[3])
		}
		c.requireView(0, true, 3)
		if p := c.sent(3, MsgPrepare); len(p) != 0 {
			t.Fatalf("NEW-VIEW with %s (case %d): replica 3 prepared %+v", b.name, k, p)
		}
	}
	if c.reps[3].newView != nil {
		t.Fatalf("a refused NEW-VIEW was kept to forward")
	}
	// The NEW-VIEW the rule computes is accepted.
	c.injectNow(2, 3, c.newViewAs(2, 2, f.vcs, 1, f.want...))
	c.requireView(2, true, 3)
	preps := c.sent(3, MsgPrepare)
	if len(preps) != 3 {
		t.Fatalf("after the valid NEW-VIEW replica 3 prepared %+v, want n=1..3", preps)
	}
	for k, p := range preps {
		if p.View != 2 || p.Seq != uint64(k+1) || p.Digest != f.want[k] {
			t.Fatalf("prepare %+v, want (v=2, n=%d, %x)", p, k+1, f.want[k][:4])
		}
	}
	if len(c.dropped(3, "")) != len(bad) {
		t.Fatalf("unexpected drops: %+v", c.drops[3])
	}
}

func TestNewViewWithFewerThanTwoFPlusOneViewChangesIsRejected(t *testing.T) {
	f := newNVFixture(t)
	c := f.c
	// The first two view changes alone plan n=1 from view 1 and n=2 null... the pre-prepares
	// are computed from exactly the view changes given, so only the count is at fault.
	two := f.vcs[:2]
	plan := []crypto.Digest{f.dB, nullDigest, f.dC}
	cases := []struct {
		name, reason string
		nv           *Envelope
	}{
		{"two view changes", "fewer than 2f+1", c.newViewAs(2, 2, two, 1, plan...)},
		{"one view change counted twice", "counted twice", c.newViewAs(2, 2, []Signed{f.vcs[0], f.vcs[1], f.vcs[1]}, 1, plan...)},
		{"the same sender for two views", "another view", c.newViewAs(2, 2, []Signed{f.vcs[0], f.vcs[1], c.viewChangeAs(2, 3, 0, nil)}, 1, plan...)},
		{"no view changes", "fewer than 2f+1", c.newViewAs(2, 2, nil, 1)},
		{"an invalid view change", "invalid view change", c.newViewAs(2, 2, []Signed{f.vcs[0], f.vcs[1], c.viewChangeAs(2, 2, 0, nil, c.certAs(0, 2, f.dA, 1))}, 1, plan...)},
	}
	for _, k := range cases {
		before := noteDrops(c, 3, k.reason)
		c.injectNow(2, 3, k.nv)
		if got := noteDrops(c, 3, k.reason); got != before+1 {
			t.Fatalf("NEW-VIEW with %s: drops %+v, want one containing %q", k.name, c.drops[3], k.reason)
		}
		c.requireView(0, true, 3)
	}
	if p := c.sent(3, MsgPrepare); len(p) != 0 {
		t.Fatalf("replica 3 prepared %+v after refused NEW-VIEWs", p)
	}
}

func TestNewViewNotFromPrimaryIsRejected(t *testing.T) {
	f := newNVFixture(t)
	c := f.c
	// View 2's primary is 2; replicas 1 and 3 sign NEW-VIEWs for it.
	for _, from := range []int{1, 3} {
		to := 0
		c.injectNow(from, to, c.newViewAs(from, 2, f.vcs, 1, f.want...))
		if got := c.dropped(to, "not from the primary"); len(got) == 0 || got[len(got)-1].From != uint32(from) {
			t.Fatalf("NEW-VIEW for view 2 from %d: drops %+v", from, c.drops[to])
		}
		c.requireView(0, true, to)
	}
	// A NEW-VIEW from the right sender whose pre-prepares another replica signed.
	nv := NewView{View: 2, ViewChanges: f.vcs}
	for k, d := range f.want {
		nv.PrePrepares = append(nv.PrePrepares, c.ppAs(3, 2, uint64(k+1), d))
	}
	c.injectNow(2, 0, env(c.signAs(2, MsgNewView, nv)))
	if len(c.dropped(0, "do not match")) != 1 {
		t.Fatalf("NEW-VIEW with pre-prepares signed by 3: drops %+v", c.drops[0])
	}
	c.requireView(0, true, 0)
	if p := c.sent(0, MsgPrepare); len(p) != 0 {
		t.Fatalf("replica 0 prepared %+v", p)
	}
}

func TestViewChangeWithInvalidCertificateIsRejected(t *testing.T) {
	c := newCluster(t, 4) // f = 1: a certificate needs 2 prepares from backups of its view
	dA := batchDigestOf(c.request(1, "a"))
	dB := batchDigestOf(c.request(2, "b"))
	prep := func(from int, v, n uint64, d crypto.Digest) Signed {
		return c.signAs(from, MsgPrepare, Prepare{View: v, Seq: n, Digest: d})
	}
	cert := func(pp Signed, prepares ...Signed) PreparedCert {
		return PreparedCert{PrePrepare: pp, Prepares: prepares}
	}
	// A stable checkpoint at 4 and proofs of it.
	st := crypto.Digest{4}
	ck := func(from int, n uint64, d crypto.Digest) Signed {
		return c.signAs(from, MsgCheckpoint, Checkpoint{Seq: n, State: d})
	}
	goodProof := []Signed{ck(0, 4, st), ck(2, 4, st), ck(3, 4, st)}

	cases := []struct {
		name, reason string
		vc           Signed
	}{
		{"the primary's prepare counted", "fewer than 2f",
			c.viewChangeAs(2, 1, 0, nil, cert(c.ppAs(0, 0, 1, dA), prep(0, 0, 1, dA), prep(2, 0, 1, dA)))},
		{"fewer than 2f prepares", "fewer than 2f",
			c.viewChangeAs(2, 1, 0, nil, c.certAs(0, 1, dA, 3))},
		{"one backup's prepare twice", "fewer than 2f",
			c.viewChangeAs(2, 1, 0, nil, cert(c.ppAs(0, 0, 1, dA), prep(3, 0, 1, dA), prep(3, 0, 1, dA)))},
		{"prepares for another digest", "fewer than 2f",
			c.viewChangeAs(2, 1, 0, nil, cert(c.ppAs(0, 0, 1, dA), prep(2, 0, 1, dA), prep(3, 0, 1, dB)))},
		{"prepares for another seq", "fewer than 2f",
			c.viewChangeAs(2, 1, 0, nil, cert(c.ppAs(0, 0, 1, dA), prep(2, 0, 1, dA), prep(3, 0, 2, dA)))},
		{"prepares for another view", "fewer than 2f",
			c.viewChangeAs(2, 2, 0, nil, cert(c.ppAs(0, 0, 1, dA), prep(2, 0, 1, dA), prep(3, 1, 1, dA)))},
		{"a certificate from the new view itself", "own or a later view",
			c.viewChangeAs(2, 1, 0, nil, c.certAs(1, 1, dA, 0, 2))},
		{"a certificate from a later view", "own or a later view",
			c.viewChangeAs(2, 1, 0, nil, c.certAs(2, 1, dA, 0, 1))},
		{"a pre-prepare not from its view's primary", "not from its primary",
			c.viewChangeAs(2, 1, 0, nil, cert(c.ppAs(3, 0, 1, dA), prep(1, 0, 1, dA), prep(2, 0, 1, dA)))},
		{"a certificate at the stable checkpoint", "outside its window",
			c.viewChangeAs(2, 1, 4, goodProof, c.certAs(0, 4, dA, 1, 2))},
		{"a certificate at seq 0", "outside its window",
			c.viewChangeAs(2, 1, 0, nil, c.certAs(0, 0, dA, 1, 2))},
		{"a certificate above the window", "outside its window",
			c.viewChangeAs(2, 1, 0, nil, c.certAs(0, 9, dA, 1, 2))},
		{"two certificates for one seq", "two certificates",
			c.viewChangeAs(2, 2, 0, nil, c.certAs(0, 1, dA, 1, 2), c.certAs(1, 1, dB, 0, 2))},
		{"a view change to view 0", "view 0",
			c.viewChangeAs(2, 0, 0, nil)},
		{"a checkpoint proof of 2f", "without a 2f+1",
			c.viewChangeAs(2, 1, 4, goodProof[:2])},
		{"a checkpoint proof with a mismatching digest", "without a 2f+1",
			c.viewChangeAs(2, 1, 4, []Signed{ck(0, 4, st), ck(2, 4, st), ck(3, 4, crypto.Digest{5})})},
		{"a stable seq that is not a checkpoint", "not a checkpoint",
			c.viewChangeAs(2, 1, 3, []Signed{ck(0, 3, st), ck(2, 3, st), ck(3, 3, st)})},
		{"a proof for checkpoint 0", "checkpoint 0",
			c.viewChangeAs(2, 1, 0, []Signed{ck(0, 0, st), ck(2, 0, st), ck(3, 0, st)})},
	}
	for _, k := range cases {
		for _, from := range []int{2, 3} {
			vc := k.vc
			if from == 3 { // the same content from another sender: invalid ones never add up to f+1
				var b ViewChange
				_ = Unmarshal(vc.Body, &b)
				vc = c.signAs(3, MsgViewChange, b)
			}
			before := noteDrops(c, 1, k.reason)
			c.injectNow(from, 1, env(vc))
			if got := c.dropped(1, k.reason); len(got) != before+1 || got[len(got)-1].From != uint32(from) || got[len(got)-1].Type != MsgViewChange {
				t.Fatalf("view change with %s from %d: drops %+v, want one containing %q", k.name, from, c.drops[1], k.reason)
			}
			if c.reps[1].viewChanges[from] != nil {
				t.Fatalf("view change with %s was stored", k.name)
			}
		}
		c.requireView(0, true, 1)
	}
	if vcs := c.vcViewsSent(1); len(vcs) != 0 {
		t.Fatalf("replica 1 joined a view change on invalid view changes: %v", vcs)
	}
	// The valid ones count: a stable checkpoint with its proof and a certificate above it.
	c.injectNow(2, 1, env(c.viewChangeAs(2, 1, 4, goodProof, c.certAs(0, 5, dA, 1, 3))))
	if vc := c.reps[1].viewChanges[2]; vc == nil || vc.sum.stableSeq != 4 || vc.sum.certs[5].digest != dA {
		t.Fatalf("a valid view change was not stored: drops %+v", c.drops[1])
	}
	c.requireView(0, true, 1)
	// A second valid one makes f+1: replica 1, primary of view 1, joins and starts the view
	// from the highest checkpoint (4) with the certificate above it.
	c.injectNow(3, 1, env(c.viewChangeAs(3, 1, 0, nil, c.certAs(0, 1, dA, 1, 2))))
	c.requireView(1, true, 1)
	nvs := c.newViewsSent(1)
	if len(nvs) != 1 {
		t.Fatalf("replica 1 sent %d NEW-VIEWs", len(nvs))
	}
	if pps := c.prePreparesOf(nvs[0]); len(pps) != 1 || pps[0].Seq != 5 || pps[0].Digest != dA {
		t.Fatalf("NEW-VIEW pre-prepares %+v, want n=5 with a", pps)
	}
}

// The NEW-VIEW timer starts once 2f+1 replicas asked for this view or a later one
// (PBFT TOCS §4.5.2 counts those for this view; a replica that has moved on to a later
// one gave up on this one too). Else, with the primary of view 1 gone ahead to view 2
// (it restarted, was cut off, timed out) and the primary of view 0 silent, the other
// correct replicas wait in view 1 forever: 2f view changes for it, and one replica
// ahead, short of the f+1 rule.
func TestNewViewTimerCountsViewChangesForLaterViews(t *testing.T) {
	const T = 10
	c := newCluster(t, 4, vcTicks(T))
	c.isolate(0)
	c.isolate(1)
	for _, i := range []int{2, 3} {
		c.submit(i, c.request(1, "waits"))
	}
	c.run()
	for k := 0; k < T && len(c.vcViewsSent(2)) == 0; k++ {
		c.tick(2, 3)
		c.run()
	}
	c.requireView(1, false, 2, 3)
	// Replica 1, primary of view 1, asks for view 2 without ever having made view 1.
	for _, i := range []int{2, 3} {
		c.injectNow(1, i, env(c.viewChangeAs(1, 2, 0, nil)))
	}
	c.requireView(1, false, 2, 3)
	for k := 0; k < 4*T; k++ {
		c.tick(2, 3)
		c.run()
	}
	for _, i := range []int{2, 3} {
		if vcs := c.vcViewsSent(i); !slices.Contains(vcs, 2) {
			t.Fatalf("replica %d sent view changes %v: still waiting for the NEW-VIEW of view 1", i, vcs)
		}
	}
	// With replica 1's view change for view 2, replica 2, its primary, starts it.
	if nvs := c.newViewsSent(2); len(nvs) == 0 || nvs[0].View != 2 {
		t.Fatalf("replica 2 sent %d new views, want the one for view 2", len(nvs))
	}
	c.requireView(2, true, 2, 3)
}

// ---- joining view changes (the f+1 rule) ----

func TestReplicaJoinsSmallestViewAfterFPlusOneViewChanges(t *testing.T) {
	c := newCluster(t, 4) // f+1 = 2; the default timeout is far away and no request waits
	c.injectNow(2, 1, env(c.viewChangeAs(2, 3, 0, nil)))
	c.requireView(0, true, 1)
	c.injectNow(3, 1, env(c.viewChangeAs(3, 2, 0, nil)))
	c.requireView(2, false, 1)
	if vcs := c.vcViewsSent(1); len(vcs) != 1 || vcs[0] != 2 {
		t.Fatalf("replica 1 sent view changes %v, want one for view 2 (the smallest)", vcs)
	}
	if c.reps[1].ticks != 0 {
		t.Fatalf("ticks passed")
	}
}

func TestFViewChangesDoNotMakeAReplicaJoin(t *testing.T) {
	c := newCluster(t, 7) // f = 2, f+1 = 3
	c.injectNow(2, 1, env(c.viewChangeAs(2, 1, 0, nil)))
	c.injectNow(3, 1, env(c.viewChangeAs(3, 4, 0, nil)))
	// A sender repeating itself, for another view, still counts once.
	c.injectNow(3, 1, env(c.viewChangeAs(3, 5, 0, nil)))
	c.injectNow(2, 1, env(c.viewChangeAs(2, 2, 0, nil)))
	// One for the current view is no evidence of anything ahead.
	c.injectNow(4, 1, env(c.viewChangeAs(4, 0, 0, nil)))
	c.requireView(0, true, 1)
	if vcs := c.vcViewsSent(1); len(vcs) != 0 {
		t.Fatalf("replica 1 joined on f view changes: sent %v", vcs)
	}
	c.injectNow(5, 1, env(c.viewChangeAs(5, 3, 0, nil)))
	c.requireView(2, false, 1) // views 2 (from 2), 5 (from 3) and 3 (from 5): the smallest is 2
	if vcs := c.vcViewsSent(1); len(vcs) != 1 || vcs[0] != 2 {
		t.Fatalf("replica 1 sent %v, want one view change for view 2", vcs)
	}
}

func TestReplicaNeverMovesBackwardsInViews(t *testing.T) {
	c := newCluster(t, 4)
	vcs1 := []Signed{c.viewChangeAs(0, 1, 0, nil), c.viewChangeAs(1, 1, 0, nil), c.viewChangeAs(2, 1, 0, nil)}
	vcs2 := []Signed{c.viewChangeAs(0, 2, 0, nil), c.viewChangeAs(1, 2, 0, nil), c.viewChangeAs(2, 2, 0, nil)}
	// Replica 3 joins view 2 on f+1 view changes for it.
	c.injectNow(1, 3, env(vcs2[1]))
	c.injectNow(2, 3, env(vcs2[2]))
	c.requireView(2, false, 3)
	// A valid NEW-VIEW and a view change for view 1 change nothing now.
	c.injectNow(1, 3, c.newViewAs(1, 1, vcs1, 1))
	c.requireView(2, false, 3)
	c.injectNow(0, 3, env(vcs1[0]))
	c.requireView(2, false, 3)
	if c.reps[3].viewChanges[0] != nil {
		t.Fatalf("a view change for a lower view was stored")
	}
	c.injectNow(1, 3, c.prePrepareAs(1, 1, 1, c.request(1, "v1")))
	c.requireView(2, false, 3)
	if p := c.sent(3, MsgPrepare); len(p) != 0 {
		t.Fatalf("replica 3 prepared %+v for view 1 while changing to view 2", p)
	}
	// View 2 starts; then view 1's messages still change nothing.
	c.injectNow(2, 3, c.newViewAs(2, 2, vcs2, 1))
	c.requireView(2, true, 3)
	c.injectNow(1, 3, c.newViewAs(1, 1, vcs1, 1))
	c.injectNow(0, 3, env(vcs1[0]))
	c.injectNow(1, 3, c.prePrepareAs(1, 1, 1, c.request(1, "v1 again")))
	c.requireView(2, true, 3)
	if p := c.sent(3, MsgPrepare); len(p) != 0 {
		t.Fatalf("replica 3 prepared %+v for view 1 in view 2", p)
	}
	if nv := c.reps[3].newView; nv == nil || infoOf(nv).From != 2 {
		t.Fatalf("replica 3 keeps the wrong NEW-VIEW")
	}
	// Its view never decreases whatever else happens.
	c.tickAll(40)
	for i := range c.n {
		if s := c.reps[i].Status(); i == 3 && s.View < 2 {
			t.Fatalf("replica 3 went back to view %d", s.View)
		}
	}
}

// ---- timeouts ----

// Each view change the timer forces without an execution in between doubles the
// timeout; an execution brings it back to T (PBFT TOCS §4.5.2).
func TestViewChangeTimeoutDoublesWithoutProgressAndResetsOnExecution(t *testing.T) {
	const T = 8
	// n = 7 (f = 2): replica 6 is a backup in views 0..5. It is cut off; the test plays the
	// others: for each view it asks for, 2f other replicas ask for it too (so 2f+1 want
	// it, and the wait for the NEW-VIEW starts at once), but no NEW-VIEW comes.
	c := newCluster(t, 7, vcTicks(T))
	const me = 6
	c.isolate(me)
	req := c.request(1, "stuck")
	c.injectNow(clientNode, me, req)
	othersAsk := func(v uint64) {
		for _, j := range []int{0, 1, 2, 3} {
			c.injectNow(j, me, env(c.viewChangeAs(j, v, 0, nil)))
		}
	}
	var gaps []int
	for v := uint64(0); v < 4; v++ {
		gaps = append(gaps, c.ticksUntilViewChange(100*T, v, me))
		c.requireView(v+1, false, me)
		if vcs := c.vcViewsSent(me); vcs[len(vcs)-1] != v+1 {
			t.Fatalf("replica %d sent view changes %v, want the last for view %d", me, vcs, v+1)
		}
		if v < 3 {
			othersAsk(v + 1)
		}
	}
	// T until the request is suspect, then T, 2T, 4T waiting for the NEW-VIEWs of views 1..3.
	// T for the request, then each view change the timer forces waits twice as long.
	if want := []int{T, 2 * T, 4 * T, 8 * T}; fmt.Sprint(gaps) != fmt.Sprint(want) {
		t.Fatalf("ticks between view changes %v, want %v", gaps, want)
	}
	// View 4 starts (primary 4) and the request executes in it: progress.
	othersAsk(4)
	var vcs4 []Signed
	for _, j := range []int{0, 1, 2, 3, 4} {
		vcs4 = append(vcs4, c.viewChangeAs(j, 4, 0, nil))
	}
	c.injectNow(4, me, c.newViewAs(4, 4, vcs4, 1))
	c.requireView(4, true, me)
	c.injectNow(4, me, c.prePrepareAs(4, 4, 1, req))
	d := batchDigestOf(req)
	for _, j := range []int{0, 1, 2, 3} {
		c.injectNow(j, me, c.prepareAs(j, 4, 1, d))
	}
	for _, j := range []int{0, 1, 2, 3} {
		c.injectNow(j, me, c.commitAs(j, 4, 1, d))
	}
	if c.executed(me) != 1 {
		t.Fatalf("request did not execute in view 4:%s", c.debug())
	}
	if c.reps[me].vcTimeout != T {
		t.Fatalf("timeout %d after execution, want T=%d", c.reps[me].vcTimeout, T)
	}
	// A new request that the primary of view 4 never orders: suspect after T again.
	c.injectNow(clientNode, me, c.request(2, "next"))
	if got := c.ticksUntilViewChange(100*T, 4, me); got != T {
		t.Fatalf("view change %d ticks after the request, want T=%d after progress", got, T)
	}
	c.requireView(5, false, me)
}

// ---- laggards ----

func TestReplicaThatMissedNewViewIsBroughtIntoTheView(t *testing.T) {
	const T = 10
	reqsTo := func(c *tCluster, ids []int, reqs []*Envelope) {
		for _, r := range reqs {
			for _, i := range ids {
				c.submit(i, r)
			}
		}
		c.run()
	}
	t.Run("it retransmits its view change", func(t *testing.T) {
		c := newCluster(t, 4, vcTicks(T))
		backups := []int{1, 2, 3}
		c.isolate(0)
		c.dropIf = func(m tMsg) bool { return m.to == 3 && m.info().Type == MsgNewView }
		reqs := c.requests(2, 2, "nv")
		reqsTo(c, backups, reqs)
		c.ticksUntilViewChange(2*T, 0, backups...)
		c.run()
		c.requireView(1, true, 1, 2)
		c.requireView(1, false, 3)
		c.dropIf = nil
		// Well before its own timer would move it to view 2, it is in view 1.
		if !c.runUntil(T/2, func() bool { return c.reps[3].Status().Active }) {
			t.Fatalf("replica 3 was not brought into view 1:%s", c.debug())
		}
		c.requireView(1, true, backups...)
		if !c.runUntil(2*T, func() bool { return c.allExecuted(2, backups...) }) {
			t.Fatalf("replica 3 did not execute in view 1:%s", c.debug())
		}
		c.requireView(1, true, backups...)
		c.requireAgreement(backups...)
		c.requireExactlyOnce()
	})
	t.Run("its peers retransmit to it", func(t *testing.T) {
		c := newCluster(t, 4, vcTicks(T))
		// Primary 0 censors: its pre-prepares never arrive, yet it takes part in the view
		// change. Replica 3 is cut off throughout and never sends a view change.
		c.dropIf = func(m tMsg) bool {
			i := m.info()
			return i.Type == MsgPrePrepare && i.From == 0 && i.View == 0
		}
		c.isolate(3)
		reqs := c.requests(2, 2, "nv")
		reqsTo(c, []int{0, 1, 2}, reqs)
		if !c.runUntil(3*T, func() bool { return c.allExecuted(2, 0, 1, 2) }) {
			t.Fatalf("0, 1, 2 did not execute in view 1:%s", c.debug())
		}
		c.requireView(1, true, 0, 1, 2)
		c.requireView(0, true, 3)
		if vcs := c.vcViewsSent(3); len(vcs) != 0 {
			t.Fatalf("replica 3 sent view changes %v", vcs)
		}
		c.reconnect(3)
		c.dropIf = nil
		if !c.runUntil(3*T, func() bool { return c.allExecuted(2, 3) }) {
			t.Fatalf("replica 3 did not catch up:%s", c.debug())
		}
		c.requireView(1, true, c.all()...)
		c.requireAgreement(c.all()...)
		c.requireExactlyOnce()
	})
}

func TestMissingBatchIsFetchedAfterNewView(t *testing.T) {
	const T = 10
	c := newCluster(t, 4, vcTicks(T))
	a := c.request(1, "a")
	dA := batchDigestOf(a)
	// Replica 3 never sees view 0's pre-prepare (nor the request); no commit of view 0
	// arrives anywhere.
	c.dropIf = func(m tMsg) bool {
		i := m.info()
		return (i.Type == MsgPrePrepare && m.to == 3 && i.View == 0) || (i.Type == MsgCommit && i.View == 0)
	}
	c.submitAndRun(a)
	if c.reps[1].prepared[1] == nil || c.reps[2].prepared[1] == nil || c.reps[3].prepared[1] != nil {
		t.Fatalf("want a prepared at 1 and 2 only:%s", c.debug())
	}
	c.isolate(0)
	b := c.request(2, "b")
	for _, i := range []int{1, 2, 3} {
		c.submit(i, b)
	}
	c.run()
	c.ticksUntilViewChange(2*T, 0, 1, 2, 3)
	if !c.runUntil(3*T, func() bool { return c.allExecuted(2, 1, 2, 3) }) {
		t.Fatalf("did not execute in view 1:%s", c.debug())
	}
	fetched := false
	for _, m := range c.out[3] {
		if m.Env.Msg.Type == MsgFetchBatch {
			var fb FetchBatch
			_ = Unmarshal(m.Env.Msg.Body, &fb)
			fetched = fetched || (fb.Seq == 1 && fb.Digest == dA)
		}
	}
	if !fetched {
		t.Fatalf("replica 3 did not fetch the batch of n=1")
	}
	if c.apps[3].digests[1] != dA || c.apps[3].runs[reqKey{1, 1}] != 1 {
		t.Fatalf("replica 3 did not run a at n=1")
	}
	c.requireView(1, true, 1, 2, 3)
	c.requireAgreement(1, 2, 3)
	c.requireExactlyOnce()
}

// ---- many view changes ----

func TestHundredConsecutiveViewChangesKeepMemoryBounded(t *testing.T) {
	const T, clients = 6, 4
	c := newCluster(t, 4, vcTicks(T))
	L := int(c.cfgs[0].LogWindow)
	rw := c.cfgs[0].ReplyWindow
	var all []*Envelope
	view := func() uint64 { // the cluster's view: a replica may lag while it is idle
		v := uint64(0)
		for i := range c.n {
			v = max(v, c.reps[i].Status().View)
		}
		return v
	}
	for k := 0; k < 100; k++ {
		v := view()
		p := c.primaryOf(v)
		// Two requests in flight; the primary receives them, then goes silent.
		reqs := []*Envelope{
			c.request(ClientID(1+k%clients), fmt.Sprint("hundred-a-", k)),
			c.request(ClientID(1+(k+1)%clients), fmt.Sprint("hundred-b-", k)),
		}
		all = append(all, reqs...)
		for _, r := range reqs {
			for i := range c.n {
				c.submit(i, r)
			}
		}
		c.isolate(p)
		others := make([]int, 0, c.n-1)
		for i := range c.n {
			if i != p {
				others = append(others, i)
			}
		}
		if !c.runUntil(10*T, func() bool {
			for _, i := range others {
				if s := c.reps[i].Status(); s.View != v+1 || !s.Active {
					return false
				}
			}
			return true
		}) {
			t.Fatalf("round %d: no view change away from %d:%s", k, p, c.debug())
		}
		c.reconnect(p)
		if !c.runUntil(20*T, func() bool {
			for _, r := range reqs {
				if !c.completed(r) {
					return false
				}
			}
			e := c.executed(0)
			for i := range c.n {
				s := c.reps[i].Status()
				if s.Executed != e || (i != p && (s.View != v+1 || !s.Active)) {
					return false
				}
			}
			// The old primary rejoins by state transfer; if the cluster went idle after
			// garbage-collecting the new view's entries, it learns of the view only with
			// the next traffic, so it may still be in view v here.
			return c.reps[p].Status().View >= v
		}) {
			t.Fatalf("round %d: cluster did not settle in view %d:%s", k, v+1, c.debug())
		}
		for i, r := range c.reps {
			vcs := 0
			for _, vc := range r.viewChanges {
				if vc != nil {
					vcs++
				}
			}
			switch {
			case len(r.log) > L:
				t.Fatalf("round %d: replica %d holds %d log entries, window %d", k, i, len(r.log), L)
			case len(r.prepared) > L:
				t.Fatalf("round %d: replica %d holds %d prepared certificates", k, i, len(r.prepared))
			case len(r.batches) > L:
				t.Fatalf("round %d: replica %d holds %d batches", k, i, len(r.batches))
			case vcs > c.n:
				t.Fatalf("round %d: replica %d holds %d view changes", k, i, vcs)
			case r.waiting.len() > clients*rw:
				t.Fatalf("round %d: replica %d watches %d requests", k, i, r.waiting.len())
			case r.waiting.len() != 0:
				t.Fatalf("round %d: replica %d still watches %d executed requests", k, i, r.waiting.len())
			case r.pending.len() > clients*rw || len(r.inflight) > clients*rw:
				t.Fatalf("round %d: replica %d: %d pending, %d in flight", k, i, r.pending.len(), len(r.inflight))
			case len(r.ckpts) > 2*L/int(c.cfgs[0].CheckpointInterval)+c.n:
				t.Fatalf("round %d: replica %d holds %d checkpoints", k, i, len(r.ckpts))
			case r.vcTimeout != T:
				t.Fatalf("round %d: replica %d timeout %d after progress", k, i, r.vcTimeout)
			}
		}
		c.requireAgreement(c.all()...)
		c.requireExactlyOnce()
	}
	if v := view(); v != 100 {
		t.Fatalf("ended in view %d, want 100", v)
	}
	for _, r := range all {
		if !c.completed(r) {
			t.Fatalf("a request did not complete")
		}
	}
	// Old primaries catch up partly by state transfer, so compare states, not op counts.
	for i := range c.n {
		if c.maxLog[i] > L || c.stateDigest(i) != c.stateDigest(0) {
			t.Fatalf("replica %d: max log %d (window %d), state equal to replica 0's: %v", i, c.maxLog[i], L, c.stateDigest(i) == c.stateDigest(0))
		}
	}
}

func TestRequestsInFlightAtViewChangeAreNotLost(t *testing.T) {
	const T = 10
	c := newCluster(t, 4, vcTicks(T))
	// Closed-loop clients send to the primary they know (0) and, after a timeout, to all.
	const clients, perClient, timeout = 4, 4, 5
	type clientState struct {
		req   *Envelope
		sent  int
		since int
	}
	cs := make([]*clientState, clients)
	for k := range cs {
		cs[k] = &clientState{}
	}
	var all []*Envelope
	done := func() bool {
		for _, s := range cs {
			if s.sent < perClient || !c.completed(s.req) {
				return false
			}
		}
		return true
	}
	// The primary's pre-prepares of the second round are lost, then it crashes.
	c.dropIf = func(m tMsg) bool { i := m.info(); return i.Type == MsgPrePrepare && i.From == 0 && i.Seq > clients }
	for tick := 0; !done(); tick++ {
		if tick == 3 {
			c.isolate(0)
		}
		if tick > 50*T {
			t.Fatalf("clients did not complete:%s", c.debug())
		}
		for k, s := range cs {
			switch {
			case s.req == nil || (c.completed(s.req) && s.sent < perClient):
				s.req, s.since = c.request(ClientID(k+1), fmt.Sprint("flight", k, s.sent)), 0
				s.sent++
				all = append(all, s.req)
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
	for _, i := range []int{1, 2, 3} {
		if s := c.reps[i].Status(); s.View == 0 || !s.Active {
			t.Fatalf("replica %d: %+v, want a later view", i, s)
		}
	}
	for _, r := range all {
		var q Request
		_ = Unmarshal(r.Msg.Body, &q)
		for _, i := range []int{1, 2, 3} {
			if n := c.apps[i].runs[reqKey{q.Client, q.Timestamp}]; n != 1 {
				t.Fatalf("replica %d ran (client %d, t=%d) %d times", i, q.Client, q.Timestamp, n)
			}
		}
	}
	c.requireAgreement(1, 2, 3)
	c.requireExactlyOnce()
}

// ---- defects found while writing these tests ----

// A batch the application is still executing when the view changes completes: its
// result is matched to the requests handed out, whatever the new view did to the log.
func TestBatchStillExecutingAtViewChangeCompletes(t *testing.T) {
	const T = 10
	c := newCluster(t, 4, vcTicks(T))
	c.async[3] = true
	a := c.request(1, "slow")
	c.submitAndRun(a)
	if len(c.pendingExec[3]) != 1 || c.executed(3) != 0 {
		t.Fatalf("replica 3 should be executing n=1:%s", c.debug())
	}
	c.isolate(0)
	b := c.request(2, "next")
	for _, i := range []int{1, 2, 3} {
		c.submit(i, b)
	}
	c.run()
	c.ticksUntilViewChange(2*T, 0, 1, 2, 3)
	c.run()
	c.requireView(1, true, 1, 2, 3)
	// The application now returns n=1's result.
	batch := c.pendingExec[3][0]
	c.pendingExec[3] = c.pendingExec[3][1:]
	if err := c.reps[3].Executed(c.apps[3].run(batch)); err != nil {
		t.Fatalf("result of a batch that was executing during the view change refused: %v", err)
	}
	c.process(3)
	if !c.runUntil(3*T, func() bool { c.execute(3, -1); return c.allExecuted(2, 1, 2, 3) }) {
		t.Fatalf("did not execute in view 1:%s", c.debug())
	}
	c.requireAgreement(1, 2, 3)
	c.requireExactlyOnce()
}

// A request superseded by another with the same client and timestamp (which ran) is
// no longer waited for: it can never run and must not keep the cluster changing views.
func TestRequestSupersededBySameTimestampDoesNotKeepChangingViews(t *testing.T) {
	const T = 10
	c := newCluster(t, 4, vcTicks(T), inflightBound(1))
	a := c.requestAt(1, 1, "A")
	aPrime := c.requestAt(1, 1, "A-prime")
	c.submit(0, a)
	for _, i := range []int{1, 2, 3} {
		c.submit(i, aPrime)
	}
	if !c.runUntil(T, func() bool { return c.allExecuted(1, c.all()...) }) {
		t.Fatalf("A did not execute:%s", c.debug())
	}
	watched := make([]int, c.n)
	for i := range c.n {
		watched[i] = c.reps[i].waiting.len()
	}
	c.tickAll(20 * T)
	for i := range c.n {
		if s := c.reps[i].Status(); s.View != 0 || !s.Active {
			t.Fatalf("replica %d: %+v after %d idle ticks, want view 0; after A executed the replicas watched %v requests that can never execute; view changes sent by %d: %v",
				i, s, 20*T, watched, i, c.vcViewsSent(i))
		}
	}
}

// A re-elected primary continues numbering right after max-s: seqs it used in an
// earlier term of its own may never have prepared, and proposing above them would leave
// a gap no pre-prepare of the new view fills (nothing above it could execute).
func TestReelectedPrimaryProposesRightAfterMaxS(t *testing.T) {
	const T = 10
	c := newCluster(t, 4, vcTicks(T))
	// View 1 with primary 1: request r1 runs at n=1.
	c.isolate(0)
	r1 := c.request(1, "r1")
	for _, i := range []int{1, 2, 3} {
		c.submit(i, r1)
	}
	c.run()
	c.ticksUntilViewChange(2*T, 0, 1, 2, 3)
	if !c.runUntil(3*T, func() bool { return c.allExecuted(1, 1, 2, 3) }) {
		t.Fatalf("r1 did not execute in view 1:%s", c.debug())
	}
	c.reconnect(0)
	c.runUntil(3*T, func() bool { return c.allExecuted(1, 0) })
	// Primary 1 proposes r2 at n=2; nobody gets it, then 1 is cut off.
	c.dropIf = func(m tMsg) bool { return m.from == 1 && m.info().Type == MsgPrePrepare }
	r2 := c.request(2, "r2")
	c.submit(1, r2)
	c.run()
	if pp := c.sentFor(1, MsgPrePrepare, 2); len(pp) != 1 {
		t.Fatalf("replica 1 did not propose r2 at n=2: %+v", c.sent(1, MsgPrePrepare))
	}
	c.dropIf = nil
	// Views 2, 3 and 4 fail; 0, 2 and 3 ask for view 5, whose primary is 1 again. Their
	// view changes carry r1's certificate for n=1 from view 1.
	cert := c.reps[2].prepared[1]
	if cert == nil || cert.view != 1 {
		t.Fatalf("replica 2 holds no view-1 certificate for n=1")
	}
	for _, j := range []int{0, 2, 3} {
		c.injectNow(j, 1, env(c.viewChangeAs(j, 5, 0, nil, cert.cert)))
	}
	c.requireView(5, true, 1)
	nvs := c.newViewsSent(1)
	pps := c.prePreparesOf(nvs[len(nvs)-1])
	if len(pps) != 1 || pps[0].Seq != 1 {
		t.Fatalf("NEW-VIEW for view 5 re-proposes %+v, want n=1 only (max-s = 1)", pps)
	}
	r3 := c.request(3, "r3")
	c.injectNow(clientNode, 1, r3)
	// It proposes what it still waits for (r2, lost in its earlier term) and r3, at
	// consecutive seqs from max-s+1 = 2.
	var seqs []uint64
	r3At := uint64(0)
	for _, pp := range c.sent(1, MsgPrePrepare) {
		if pp.View == 5 && pp.Seq > 1 {
			seqs = append(seqs, pp.Seq)
			if pp.Digest == batchDigestOf(r3) {
				r3At = pp.Seq
			}
		}
	}
	slices.Sort(seqs)
	for i, n := range seqs {
		if n != uint64(2+i) {
			t.Fatalf("re-elected primary 1 proposed at %v in view 5: not consecutive from max-s+1 = 2", seqs)
		}
	}
	if r3At == 0 {
		t.Fatalf("re-elected primary 1 did not propose r3 in view 5: %v", seqs)
	}
}

// A replica primary again orders a request it proposed in an earlier term whose
// proposal the view change discarded: the old in-flight mark does not hide it.
func TestReelectedPrimaryOrdersRequestLostInItsEarlierView(t *testing.T) {
	const T = 10
	c := newCluster(t, 4, vcTicks(T))
	// Primary 0 proposes r at n=1; nobody gets the pre-prepare.
	c.dropIf = func(m tMsg) bool { return m.from == 0 && m.info().Type == MsgPrePrepare }
	r := c.request(1, "lost")
	c.submit(0, r)
	c.run()
	if pp := c.sentFor(0, MsgPrePrepare, 1); len(pp) != 1 {
		t.Fatalf("replica 0 did not propose r")
	}
	c.dropIf = nil
	// Views 1, 2 and 3 fail; 1, 2 and 3 ask for view 4, whose primary is 0 again.
	for _, j := range []int{1, 2, 3} {
		c.injectNow(j, 0, env(c.viewChangeAs(j, 4, 0, nil)))
	}
	c.requireView(4, true, 0)
	c.injectNow(clientNode, 0, r) // the client retransmits
	proposed := false
	for _, pp := range c.sent(0, MsgPrePrepare) {
		proposed = proposed || (pp.View == 4 && pp.Digest == batchDigestOf(r))
	}
	if !proposed {
		t.Fatalf("re-elected primary 0 ignored a request whose view-0 batch was lost: still marked in flight")
	}
}

// ---- the NEW-VIEW's checkpoint and its pre-prepares (PBFT TOCS §4.4) ----

// newViewFromLiar runs 4 requests (K = 4) at replicas 0, 2 and 3 with their CHECKPOINTs
// held, so checkpoint 4 is stable nowhere, while replica 1 is cut off (it lags). Replica
// 3, faulty and primary of view 3, has told replicas 1 and 2 two false digests for
// checkpoint 4 (filling the slots a lagging replica keeps for it). It returns the NEW-VIEW of view 3 it then sends: from the VIEW-CHANGEs of
// 0, 1 and 3, with min-s = 4 and its proof {0, 2, 3} (3's true vote among them: what
// its own core holds), and no pre-prepares (max-s = 4).
func newViewFromLiar(t *testing.T) (*tCluster, *Envelope) {
	c := newCluster(t, 4)
	c.holdIf = isType(MsgCheckpoint)
	c.isolate(1)
	c.submitAndRun(c.requests(4, 2, "nv")...)
	c.holdIf = nil
	c.held = nil
	if c.executed(0) != 4 || c.executed(1) != 0 {
		t.Fatalf("replicas at %d and %d, want 4 and 0", c.executed(0), c.executed(1))
	}
	c.reconnect(1)
	truth := c.reps[0].ckpts[4].ownDigest
	for _, i := range []int{1, 2} {
		c.injectNow(3, i, c.checkpointAs(3, 4, crypto.Digest{0x11, 0xe}))
		c.injectNow(3, i, c.checkpointAs(3, 4, crypto.Digest{0x11, 0xe, 2}))
	}
	var proof []Signed
	for _, j := range []int{0, 2, 3} {
		proof = append(proof, c.checkpointAs(j, 4, truth).Msg)
	}
	vcs := []Signed{
		c.viewChangeAs(0, 3, 4, proof),
		c.viewChangeAs(1, 3, 0, nil),
		c.viewChangeAs(3, 3, 4, proof),
	}
	return c, c.newViewAs(3, 3, vcs, 5)
}

// A NEW-VIEW's checkpoint proof, checked as a whole, makes min-s stable at a replica
// that executed that far, or starts the state transfer to it at one that did not. It is
// never replayed through per-sender vote slots, where the liar's earlier lie would
// count its true vote out and leave the window below min-s.
func TestNewViewCheckpointProofIsAdoptedAsAWhole(t *testing.T) {
	c, nv := newViewFromLiar(t)
	c.holdIf = isType(MsgStateRequest)
	c.injectNow(3, 2, nv)
	c.injectNow(3, 1, nv)
	c.requireView(3, true, 1, 2)
	if s := c.reps[2].Status(); s.LowMark != 4 {
		t.Fatalf("replica 2, which executed n=4, did not adopt the NEW-VIEW's checkpoint: %+v", s)
	}
	asked := false
	for _, m := range c.held {
		asked = asked || (m.from == 1 && m.info().Type == MsgStateRequest)
	}
	if !asked {
		t.Fatalf("replica 1, lagging, did not start the state transfer to the NEW-VIEW's checkpoint n=4")
	}
}

// After a NEW-VIEW a backup accepts pre-prepares of that view only above max-s, or
// those the NEW-VIEW carries: the liar, primary of view 3, re-proposing seq 2 (below
// its checkpoint, still in the window of lagging replica 1) with another batch is
// refused, while seq 5 is accepted.
func TestNewViewPrePreparesAtOrBelowMaxSComeOnlyFromTheNewView(t *testing.T) {
	c, nv := newViewFromLiar(t)
	c.holdIf = isType(MsgStateRequest) // replica 1 stays behind, h = 0
	c.injectNow(3, 1, nv)
	c.requireView(3, true, 1)
	if s := c.reps[1].Status(); s.LowMark != 0 {
		t.Fatalf("replica 1 at %+v, want it still behind (state transfer held)", s)
	}
	c.injectNow(3, 1, c.prePrepareAs(3, 3, 2, c.request(7, "rewrite")))
	if len(c.dropped(1, "at or below the new view's max-s")) != 1 || len(c.sentFor(1, MsgPrepare, 2)) != 0 {
		t.Fatalf("a re-proposal of seq 2 in view 3 was not refused: drops %+v", c.drops[1])
	}
	c.injectNow(3, 1, c.prePrepareAs(3, 3, 5, c.request(7, "next")))
	if len(c.sentFor(1, MsgPrepare, 5)) != 1 {
		t.Fatalf("a pre-prepare above max-s was not prepared: drops %+v", c.drops[1])
	}
}
