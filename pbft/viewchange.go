package pbft

import (
	"github.com/pbftkit/pbft/crypto"
)

// preparedInfo is this replica's prepared certificate for one sequence number, from the
// highest view in which it prepared: what a VIEW-CHANGE carries in P.
type preparedInfo struct {
	view   uint64
	digest crypto.Digest
	cert   PreparedCert
}

// vcSummary is what a valid VIEW-CHANGE says, once checked.
type vcSummary struct {
	from      ReplicaID
	newView   uint64
	stableSeq uint64
	proof     []*CheckpointMsg // the 2f+1 proof of stableSeq, typed (nil for our own)
	certs     map[uint64]certSummary
}

type certSummary struct {
	view   uint64
	digest crypto.Digest
}

// storedVC is the latest valid VIEW-CHANGE of one replica.
type storedVC struct {
	signed Signed
	sum    *vcSummary
}

// newViewPlan is the outcome of the NEW-VIEW rule over a set of view changes: the
// stable checkpoint to start from and the digest to re-propose at each seq above it.
type newViewPlan struct {
	minS, maxS uint64
	minProof   []*CheckpointMsg
	digests    []crypto.Digest // digests[i] is for seq minS+1+i
}

// nullDigest is the digest of the empty batch: the null request that fills a gap.
var nullDigest = BatchDigest(nil)

// maxViewChangeTimeout caps the doubling, in multiples of the initial timeout.
const maxViewChangeTimeout = 64

// --- view change ---

// startViewChange stops normal operation and asks to move to view v, with this
// replica's stable checkpoint and every certificate prepared above it.
func (r *Replica) startViewChange(v uint64) {
	if v < r.view || (v == r.view && !r.active) {
		return // never backwards
	}
	r.view, r.active = v, false
	r.stopTimer()
	// The latest VIEW-CHANGEs of others may be for this view or the next few (the f+1
	// rule may just have brought us here): they count.
	for _, vc := range r.viewChanges {
		if vc != nil {
			r.storeViewChange(vc)
		}
	}
	vc := ViewChange{NewView: v, StableSeq: r.h}
	sum := &vcSummary{from: r.id, newView: v, stableSeq: r.h, certs: make(map[uint64]certSummary)}
	if r.stable != nil {
		vc.CheckpointProof = r.stable.Proof
	}
	for n := r.h + 1; n <= r.h+r.cfg.LogWindow; n++ {
		if pi := r.prepared[n]; pi != nil {
			vc.Prepared = append(vc.Prepared, pi.cert)
			sum.certs[n] = certSummary{view: pi.view, digest: pi.digest}
		}
	}
	s := r.sign(MsgViewChange, vc)
	r.storeViewChange(&storedVC{signed: s, sum: sum})
	r.persistMsg(&Envelope{Msg: s}, v, 0)
	r.broadcast(s)
	r.startNewViewTimer()
	r.tryNewView()
}

// checkViewChange applies the rules a VIEW-CHANGE must satisfy (PBFT §4.4): a valid
// 2f+1 proof of its stable checkpoint, and prepared certificates above it, each a
// pre-prepare from the primary of an earlier view and 2f matching prepares from
// distinct backups.
func (r *Replica) checkViewChange(m *ViewChangeMsg) (*vcSummary, string) {
	b := &m.ViewChange
	sum := &vcSummary{from: ReplicaID(m.Signed.From), newView: b.NewView, stableSeq: b.StableSeq,
		certs: make(map[uint64]certSummary, len(m.Certs))}
	if b.NewView == 0 {
		return nil, "view change to view 0"
	}
	if b.StableSeq == 0 {
		if len(m.Proof) != 0 {
			return nil, "view change with a proof for checkpoint 0"
		}
	} else {
		if b.StableSeq%r.cfg.CheckpointInterval != 0 {
			return nil, "view change from a seq that is not a checkpoint"
		}
		if r.certifiedBy(b.StableSeq, m.Proof) == nil {
			return nil, "view change without a 2f+1 checkpoint proof"
		}
		sum.proof = m.Proof
	}
	for _, c := range m.Certs {
		pp := &c.PrePrepare.PrePrepare
		n := pp.Seq
		switch {
		case pp.View >= b.NewView:
			return nil, "view change with a certificate from its own or a later view"
		case n <= b.StableSeq || n-b.StableSeq > r.cfg.LogWindow:
			return nil, "view change with a certificate outside its window"
		}
		if _, dup := sum.certs[n]; dup {
			return nil, "view change with two certificates for one seq"
		}
		if bad := r.checkCert(c); bad != "" {
			return nil, "view change with " + bad
		}
		sum.certs[n] = certSummary{view: pp.View, digest: pp.Digest}
	}
	return sum, ""
}

// checkCert is what makes a prepared certificate: a pre-prepare from the primary of its
// view and 2f matching prepares from distinct backups.
func (r *Replica) checkCert(c *PreparedCertMsg) string {
	pp := &c.PrePrepare.PrePrepare
	if ReplicaID(c.PrePrepare.Signed.From) != r.q.Primary(pp.View) {
		return "a pre-prepare not from its primary"
	}
	seen := make([]bool, r.cfg.N)
	count := 0
	for _, p := range c.Prepares {
		from := ReplicaID(p.Signed.From)
		if p.Prepare.View != pp.View || p.Prepare.Seq != pp.Seq || p.Prepare.Digest != pp.Digest ||
			from == r.q.Primary(pp.View) || uint64(from) >= uint64(r.cfg.N) || seen[from] {
			continue
		}
		seen[from] = true
		count++
	}
	if count < r.q.Prepared() {
		return "a certificate of fewer than 2f matching prepares"
	}
	return ""
}

func (r *Replica) onViewChange(m *ViewChangeMsg) {
	from := ReplicaID(m.Signed.From)
	if from == r.id {
		return
	}
	sum, bad := r.checkViewChange(m)
	if sum == nil {
		r.drop(m, bad)
		return
	}
	v := sum.newView
	r.peerView[from] = max(r.peerView[from], v)
	if sum.stableSeq > r.h {
		// Its checkpoint proof, checked as a whole, certifies a checkpoint beyond ours:
		// adopt it (or fetch its state) now rather than at the NEW-VIEW.
		if sc := r.certifiedBy(sum.stableSeq, sum.proof); sc != nil {
			r.adoptCertified(sc)
		}
	}
	if v < r.view || (v == r.view && r.active) {
		// The sender is behind: the NEW-VIEW we hold brings it to our view.
		r.sendNewView(from)
		return
	}
	if !r.storeViewChange(&storedVC{signed: m.Signed, sum: sum}) {
		return
	}
	r.joinIfAhead()
	r.startNewViewTimer()
	r.tryNewView()
}

// viewsKept is how many views from the current one vcFor remembers.
const viewsKept = 4

// storeViewChange records a valid VIEW-CHANGE; false if it is older than what its
// sender already sent.
func (r *Replica) storeViewChange(vc *storedVC) bool {
	from, v := vc.sum.from, vc.sum.newView
	newer := false
	if prev := r.viewChanges[from]; prev == nil || prev.sum.newView < v {
		r.viewChanges[from] = vc
		newer = true
	}
	if v >= r.view && v-r.view < viewsKept {
		if r.vcFor[v] == nil {
			r.vcFor[v] = make([]*storedVC, r.cfg.N)
		}
		if r.vcFor[v][from] == nil {
			r.vcFor[v][from] = vc
			newer = true
		}
	}
	r.pruneViewChanges()
	return newer
}

// pruneViewChanges forgets view changes for views below ours or too far above it.
func (r *Replica) pruneViewChanges() {
	for v := range r.vcFor {
		if v < r.view || v-r.view >= viewsKept || (v == r.view && r.active) {
			delete(r.vcFor, v)
		}
	}
}

// joinIfAhead is the f+1 rule: when f+1 replicas (so at least one correct) ask for views
// above ours, move to the smallest of them without waiting for the timer.
func (r *Replica) joinIfAhead() {
	ahead, smallest := 0, uint64(0)
	for _, vc := range r.viewChanges {
		if vc != nil && vc.sum.newView > r.view {
			ahead++
			if smallest == 0 || vc.sum.newView < smallest {
				smallest = vc.sum.newView
			}
		}
	}
	if ahead >= r.q.Weak() {
		r.startViewChange(smallest)
	}
}

// planNewView is the NEW-VIEW rule, a pure function of the view changes: min-s is the
// highest stable checkpoint among them, max-s the highest prepared seq; each seq
// between gets the digest of its certificate from the highest view, or the null batch.
func (r *Replica) planNewView(sums []*vcSummary) *newViewPlan {
	p := &newViewPlan{}
	for _, s := range sums {
		if s.stableSeq > p.minS || (s.stableSeq == p.minS && p.minProof == nil && s.proof != nil) {
			p.minS, p.minProof = s.stableSeq, s.proof
		}
	}
	p.maxS = p.minS
	for _, s := range sums {
		for n := range s.certs {
			p.maxS = max(p.maxS, n)
		}
	}
	for n := p.minS + 1; n <= p.maxS; n++ {
		best, found := certSummary{}, false
		for _, s := range sums {
			if c, ok := s.certs[n]; ok && (!found || c.view > best.view) {
				best, found = c, true
			}
		}
		d := nullDigest
		if found {
			d = best.digest
		}
		p.digests = append(p.digests, d)
	}
	return p
}

// tryNewView lets the primary of the view being changed to start it once it holds 2f+1
// valid VIEW-CHANGEs for it: the first 2f+1 by sender.
func (r *Replica) tryNewView() {
	if r.active || r.q.Primary(r.view) != r.id {
		return
	}
	var chosen []*storedVC
	for j := 0; j < r.cfg.N && len(chosen) < r.q.Strong(); j++ {
		if vc := r.vcFor[r.view]; vc != nil && vc[j] != nil {
			chosen = append(chosen, vc[j])
		}
	}
	if len(chosen) < r.q.Strong() {
		return
	}
	sums := make([]*vcSummary, len(chosen))
	nv := NewView{View: r.view, ViewChanges: make([]Signed, len(chosen))}
	for i, vc := range chosen {
		sums[i] = vc.sum
		nv.ViewChanges[i] = vc.signed
	}
	plan := r.planNewView(sums)
	pps := make([]*PrePrepareMsg, len(plan.digests))
	for i, d := range plan.digests {
		pp := PrePrepare{View: r.view, Seq: plan.minS + 1 + uint64(i), Digest: d}
		pps[i] = &PrePrepareMsg{Signed: r.sign(MsgPrePrepare, pp), PrePrepare: pp}
		nv.PrePrepares = append(nv.PrePrepares, pps[i].Signed)
	}
	s := r.sign(MsgNewView, nv)
	env := &Envelope{Msg: s}
	r.persistMsg(env, r.view, 0)
	r.send(Destination{Kind: ToAllReplicas}, env)
	r.enterView(env, plan, pps)
}

// onNewView accepts a NEW-VIEW only after recomputing its pre-prepares from its
// VIEW-CHANGEs: a primary cannot smuggle in a digest the rule would not choose.
func (r *Replica) onNewView(m *NewViewMsg) {
	v := m.NewView.View
	switch {
	case ReplicaID(m.Signed.From) != r.q.Primary(v):
		r.drop(m, "new-view not from the primary of its view")
		return
	case v < r.view || (v == r.view && r.active):
		return
	}
	sums := make([]*vcSummary, 0, len(m.ViewChanges))
	seen := make([]bool, r.cfg.N)
	for _, vc := range m.ViewChanges {
		sum, bad := r.checkViewChange(vc)
		if sum == nil {
			r.drop(m, "new-view with an invalid view change: "+bad)
			return
		}
		if sum.newView != v || uint64(sum.from) >= uint64(r.cfg.N) || seen[sum.from] {
			r.drop(m, "new-view with a view change for another view or counted twice")
			return
		}
		seen[sum.from] = true
		sums = append(sums, sum)
	}
	if len(sums) < r.q.Strong() {
		r.drop(m, "new-view with fewer than 2f+1 view changes")
		return
	}
	plan := r.planNewView(sums)
	if len(m.PrePrepares) != len(plan.digests) {
		r.drop(m, "new-view whose pre-prepares do not match its view changes")
		return
	}
	for i, pp := range m.PrePrepares {
		want := PrePrepare{View: v, Seq: plan.minS + 1 + uint64(i), Digest: plan.digests[i]}
		if pp.PrePrepare != want || ReplicaID(pp.Signed.From) != r.q.Primary(v) {
			r.drop(m, "new-view whose pre-prepares do not match its view changes")
			return
		}
	}
	env := &Envelope{Msg: m.Signed}
	r.persistMsg(env, v, 0)
	r.view = v
	r.enterView(env, plan, m.PrePrepares)
}

// enterView starts normal operation in r.view from a NEW-VIEW: the checkpoint it starts
// from, then a pre-prepare (and, at a backup, a prepare) for every seq it re-proposes.
func (r *Replica) enterView(nv *Envelope, plan *newViewPlan, pps []*PrePrepareMsg) {
	r.newView, r.viewMaxS = nv, plan.maxS
	r.stopTimer()
	for n, e := range r.log {
		if e.view < r.view {
			delete(r.log, n)
		}
	}
	for j, vc := range r.viewChanges {
		if vc != nil && vc.sum.newView <= r.view {
			r.viewChanges[j] = nil
		}
	}
	r.pruneViewChanges()
	primary := r.isPrimary()
	// Proposals of earlier views that did not make it into this one are gone: their
	// requests may be proposed again (those the NEW-VIEW re-proposes are marked again
	// as their pre-prepares enter the log).
	clear(r.inflight)
	clear(r.deferred)
	if primary {
		// Continue right after max-s, and set it before anything below can propose:
		// numbers this replica used in an earlier term of its own may not have
		// prepared, and a seq the NEW-VIEW fills must never get a second pre-prepare.
		r.nextSeq = max(plan.maxS, r.h)
	}
	r.active = true
	// The NEW-VIEW's pre-prepares first, then the checkpoint it starts from (which may
	// move the window, and let the primary propose).
	for _, pp := range pps {
		switch n := pp.PrePrepare.Seq; {
		case n <= r.h:
			// Below our stable checkpoint: done.
		case !r.inWindow(n):
			// Beyond our window (we are still to fetch the checkpoint it starts from):
			// kept until a stable checkpoint moves the window over it.
			r.deferred[n] = pp
		default:
			r.acceptNewViewPrePrepare(pp)
		}
	}
	// The NEW-VIEW's checkpoint, its proof checked as a whole: stable here, or the
	// state transfer to it starts (PBFT TOCS §4.4).
	if sc := r.certifiedBy(plan.minS, plan.minProof); sc != nil {
		r.adoptCertified(sc)
	}
	if primary {
		// A new primary proposes what its clients have been waiting for.
		for _, m := range r.waitingInOrder() {
			// Through the queue's one way in, so the per-client bound holds here too.
			if st, _ := r.clients.lookup(m.Request.Client, m.Request.Timestamp); st == reqNew && !r.inflight[m.Digest] {
				r.pending.add(m)
			}
		}
		r.maybePropose()
	} else {
		// Backups hand the new primary the requests they wait for (PBFT §4.4: requests
		// in flight at a view change are not lost).
		for _, m := range r.waitingInOrder() {
			r.sendTo(r.q.Primary(r.view), &Envelope{Msg: m.Signed})
		}
	}
	if r.waiting.len() > 0 {
		r.startTimer()
	}
	r.tryExecute()
}

// notePeerView records the view a replica's valid message was sent in; one from a view
// older than ours means it missed our NEW-VIEW, so it gets it.
func (r *Replica) notePeerView(from ReplicaID, v uint64) {
	if uint64(from) >= uint64(r.cfg.N) {
		return
	}
	r.peerView[from] = max(r.peerView[from], v)
	if v < r.view && r.active {
		r.sendNewView(from)
	}
}

// acceptNewViewPrePrepare enters a pre-prepare of the NEW-VIEW into the log, fetching its
// batch if need be, and (at a backup) prepares it.
func (r *Replica) acceptNewViewPrePrepare(pp *PrePrepareMsg) {
	// A fresh entry: the NEW-VIEW's pre-prepare is the first of its view at this seq.
	n := pp.PrePrepare.Seq
	if d, ok := r.decided[n]; ok && d != pp.PrePrepare.Digest {
		// With at most f faulty replicas no valid NEW-VIEW does this: a seq committed
		// here prepared at f+1 correct replicas, and one of them is in every 2f+1 view
		// changes. Refused, never prepared.
		r.rd.Drops = append(r.rd.Drops, Drop{From: pp.Signed.From, Type: MsgNewView, Reason: "new-view re-proposes a seq this replica committed with another batch"})
		return
	}
	old := r.log[n]
	r.assert(old == nil || old.view < r.view, "a second pre-prepare entered for v=%d n=%d (from the new-view)", r.view, n)
	e := &entry{seq: n, view: r.view, prepares: newVoteSet(r.cfg.N), commits: newVoteSet(r.cfg.N)}
	r.log[n] = e
	e.pp, e.digest = pp, pp.PrePrepare.Digest
	r.attachBatch(e)
	r.persistBatch(e)
	for _, m := range e.batch {
		r.inflight[m.Digest] = true
	}
	if !r.isPrimary() {
		r.prepareEntry(e)
	}
	r.check(e)
}

// applyDeferred enters the NEW-VIEW pre-prepares the window now covers.
func (r *Replica) applyDeferred() {
	if !r.active {
		return
	}
	for n := r.h + 1; n <= r.h+r.cfg.LogWindow && len(r.deferred) > 0; n++ {
		if pp := r.deferred[n]; pp != nil {
			delete(r.deferred, n)
			if pp.PrePrepare.View == r.view {
				r.acceptNewViewPrePrepare(pp)
			}
		}
	}
	for n := range r.deferred {
		if n <= r.h {
			delete(r.deferred, n)
		}
	}
}

// sendNewView forwards the NEW-VIEW that started our view to a replica still asking
// for it; at most once per retransmit period per replica.
func (r *Replica) sendNewView(to ReplicaID) {
	if r.newView == nil || to == r.id || uint64(to) >= uint64(r.cfg.N) {
		return
	}
	if !r.budgets.newView.due(to, r.ticks, uint64(r.cfg.RetransmitTicks)) {
		return
	}
	r.sendTo(to, r.newView)
}

// retransmitViewChange resends this replica's VIEW-CHANGE while it waits for the NEW-VIEW.
func (r *Replica) retransmitViewChange() {
	if r.active {
		return
	}
	if vcs := r.vcFor[r.view]; vcs != nil && vcs[r.id] != nil {
		r.broadcast(vcs[r.id].signed)
	}
}

// gcViewChange discards batches and prepared certificates at or below a stable checkpoint.
func (r *Replica) gcViewChange(n uint64) {
	for s := range r.prepared {
		if s <= n {
			delete(r.prepared, s)
		}
	}
	for d, b := range r.batches {
		if b.seq <= n {
			delete(r.batches, d)
		}
	}
}
