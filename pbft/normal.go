package pbft

import "github.com/pbftkit/pbft/crypto"

// onRequest handles a client request: the primary queues it for a batch, a backup
// forwards it to the primary; one already executed gets its cached reply again.
func (r *Replica) onRequest(m *RequestMsg) {
	req := &m.Request
	switch st, result := r.clients.lookup(req.Client, req.Timestamp); st {
	case reqOld:
		r.drop(m, "request timestamp already superseded")
		r.sendSuperseded(req.Client, req.Timestamp) // else it only times out; cost: see there
		return
	case reqDone:
		r.sendReply(req.Client, req.Timestamp, result)
		return
	case reqExecuting:
		return
	}
	if !r.isPrimary() || !r.active {
		// PBFT §4.2: a backup relays the request to the primary it believes in, and
		// watches it: if it does not execute in time, the primary is suspect.
		if r.active {
			r.sendTo(r.q.Primary(r.view), &Envelope{Msg: m.Signed})
		}
		r.watch(m)
		return
	}
	r.watch(m)
	if r.inflight[m.Digest] {
		return
	}
	if !r.pending.add(m) {
		r.drop(m, "client has too many requests waiting")
		return
	}
	r.maybePropose()
}

// maybePropose lets the primary assign sequence numbers to queued requests while the
// watermark window and the in-flight bound allow.
//
// Every batch costs the same O(n²) signed votes whatever its size, so under load the
// primary fills batches instead of sending many small ones: with k batches already in
// flight, the next leaves only once it holds k/MaxInFlightBatches of a full batch, in
// requests or in bytes, or when a batch in flight executes. An idle primary proposes
// at once. Small batches cost more CPU per request than they save in waiting: on two
// cores this rule gave both a higher peak and a lower latency at half of it than
// proposing whenever a slot is free.
func (r *Replica) maybePropose() {
	if !r.isPrimary() || !r.active {
		return
	}
	for r.pending.len() > 0 && r.inWindow(r.nextSeq+1) &&
		r.nextSeq-r.executed < uint64(r.cfg.MaxInFlightBatches) {
		if k := r.nextSeq - r.executed; k > 0 &&
			uint64(r.pending.len())*uint64(r.cfg.MaxInFlightBatches) < k*uint64(r.cfg.MaxBatchRequests) &&
			uint64(r.pending.queuedBytes())*uint64(r.cfg.MaxInFlightBatches) < k*uint64(r.cfg.MaxBatchBytes) {
			return
		}
		batch := r.pending.take(r.cfg.MaxBatchRequests, r.cfg.MaxBatchBytes, func(m *RequestMsg) bool {
			if st, _ := r.clients.lookup(m.Request.Client, m.Request.Timestamp); st != reqNew || r.inflight[m.Digest] {
				return false
			}
			r.inflight[m.Digest] = true
			return true
		})
		if len(batch) > 0 {
			r.propose(batch)
		}
	}
}

func (r *Replica) propose(batch []*RequestMsg) {
	r.nextSeq++
	for e := r.log[r.nextSeq]; e != nil && e.view == r.view && e.pp != nil; e = r.log[r.nextSeq] {
		// Never a second pre-prepare for a (view, seq): step over one already there.
		r.nextSeq++
	}
	digests := make([]crypto.Digest, len(batch))
	for i, m := range batch {
		digests[i] = m.Digest
	}
	pp := PrePrepare{View: r.view, Seq: r.nextSeq, Digest: BatchDigest(digests)}
	r.assert(pp.Seq > r.viewMaxS && pp.Seq > r.h, "proposing n=%d at or below max-s %d or h %d", pp.Seq, r.viewMaxS, r.h)
	_, decided := r.decided[pp.Seq]
	r.assert(!decided, "proposing n=%d, already decided", pp.Seq)
	m := &PrePrepareMsg{Signed: r.sign(MsgPrePrepare, pp), PrePrepare: pp, Batch: batch, HasBatch: true}
	e := r.getEntry(pp.Seq)
	e.pp, e.digest, e.batch, e.hasBatch = m, pp.Digest, batch, true
	r.rememberBatch(pp.Seq, pp.Digest, batch)
	env := m.Envelope()
	r.persistMsg(env, pp.View, pp.Seq)
	r.send(Destination{Kind: ToAllReplicas}, env)
	r.check(e)
}

// onPrePrepare accepts a backup's pre-prepare (PBFT §4.2): right view, from its primary,
// inside the watermarks, batch present (the Verifier checked it matches the digest), and
// no other digest accepted for the same (view, seq).
func (r *Replica) onPrePrepare(m *PrePrepareMsg) {
	pp := &m.PrePrepare
	switch {
	case ReplicaID(m.Signed.From) != r.q.Primary(pp.View):
		r.drop(m, "pre-prepare not from the primary of its view")
		return
	}
	// In any view: a replica changing view alone must still learn how far the cluster
	// went, or it never asks for the state it lacks (tickStalled).
	r.noteSeq(ReplicaID(m.Signed.From), pp.Seq)
	switch {
	case pp.View != r.view || !r.active:
		r.notePeerView(ReplicaID(m.Signed.From), pp.View)
		r.drop(m, "pre-prepare for another view")
		return
	case r.isPrimary():
		r.drop(m, "pre-prepare sent to the primary")
		return
	}
	switch {
	case !r.inWindow(pp.Seq):
		if pp.Seq <= r.h {
			r.helpLaggard(ReplicaID(m.Signed.From))
		}
		r.drop(m, "pre-prepare outside the watermarks")
		return
	case !m.HasBatch:
		r.drop(m, "pre-prepare without its batch")
		return
	case len(m.Batch) > r.cfg.MaxBatchRequests:
		r.drop(m, "pre-prepare batch over the configured size")
		return
	}
	e := r.log[pp.Seq]
	if e != nil && e.view == r.view && e.pp != nil {
		switch {
		case e.digest != pp.Digest:
			r.drop(m, "equivocating pre-prepare: another digest for this view and seq")
			if e.alt == nil && m.HasBatch && !e.prepared && len(m.Batch) <= r.cfg.MaxBatchRequests {
				e.alt = m
				r.check(e)
			}
		case !e.hasBatch:
			// The NEW-VIEW's pre-prepare, resent by the primary with its batch.
			e.batch, e.hasBatch = m.Batch, true
			r.rememberBatch(e.seq, e.digest, e.batch)
			r.persistBatch(e)
			r.tryExecute()
		}
		return
	}
	if pp.Seq <= r.viewMaxS {
		// PBFT TOCS §4.4: a NEW-VIEW decides every seq up to its max-s (the ones below
		// its checkpoint are done); a pre-prepare of the view for one of them that it does
		// not carry is a primary rewriting history.
		r.drop(m, "pre-prepare at or below the new view's max-s that its NEW-VIEW does not carry")
		return
	}
	if d, ok := r.decided[pp.Seq]; ok && d != pp.Digest {
		r.drop(m, "pre-prepare for a seq this replica committed with another batch")
		return
	}
	e = r.getEntry(pp.Seq)
	r.assert(e.pp == nil, "a second pre-prepare entered for v=%d n=%d", pp.View, pp.Seq)
	e.pp, e.digest = m, pp.Digest
	r.persistMsg(m.Envelope(), pp.View, pp.Seq)
	r.attachBatch(e)
	r.prepareEntry(e)
	r.check(e)
}

// prepareEntry sends this backup's PREPARE for an accepted pre-prepare.
func (r *Replica) prepareEntry(e *entry) {
	r.assertVote(e, e.prepares.by[r.id], "prepare")
	p := Prepare{View: e.view, Seq: e.seq, Digest: e.digest}
	s := r.sign(MsgPrepare, p)
	e.prepares.by[r.id] = vote{has: true, digest: e.digest, msg: s}
	r.persistMsg(&Envelope{Msg: s}, e.view, e.seq)
	r.broadcast(s)
}

func (r *Replica) onPrepare(m *PrepareMsg) {
	p := &m.Prepare
	if ReplicaID(m.Signed.From) == r.q.Primary(p.View) {
		// Pitfall: the primary's pre-prepare stands for its vote; a PREPARE from it
		// must not count towards the 2f.
		r.drop(m, "prepare from the primary")
		return
	}
	r.onVote(m, p.View, p.Seq, p.Digest, func(e *entry) *voteSet { return &e.prepares })
}

func (r *Replica) onCommit(m *CommitMsg) {
	c := &m.Commit
	r.onVote(m, c.View, c.Seq, c.Digest, func(e *entry) *voteSet { return &e.commits })
}

// onVote holds the rules PREPARE and COMMIT share: same view, inside the watermarks,
// counted per digest and sender (voteSet: a second digest from one sender is evidence,
// counted for its digest; the same vote again is a retransmission to answer).
func (r *Replica) onVote(m Message, view, n uint64, d crypto.Digest, votes func(*entry) *voteSet) {
	from := ReplicaID(m.Raw().From)
	kind := m.Raw().Type.String()
	r.notePeerView(from, view)
	r.noteSeq(from, n) // in any view, as for pre-prepares
	if view != r.view || !r.active {
		r.drop(m, kind+" for another view")
		return
	}
	if !r.inWindow(n) {
		if n <= r.h {
			r.helpLaggard(from)
		}
		r.drop(m, kind+" outside the watermarks")
		return
	}
	e := r.getEntry(n)
	var want *crypto.Digest
	if e.pp != nil {
		want = &e.digest
	}
	switch votes(e).add(from, d, *m.Raw(), want) {
	case voteRepeat:
		r.answerRetransmission(e, from)
		return
	case voteConflict:
		r.drop(m, "conflicting "+kind+" from the same replica: both kept, each counts for its digest")
	case voteRefused:
		r.drop(m, kind+": more digests from one replica than are kept")
		return
	}
	r.check(e)
}

// check advances an entry through prepared and committed-local.
func (r *Replica) check(e *entry) {
	if e.pp == nil {
		return
	}
	if !e.prepared && e.alt != nil && e.prepares.count(e.alt.PrePrepare.Digest) >= r.q.Prepared() {
		r.switchToAlt(e)
	}
	// prepared(m, v, n, i): the pre-prepare and 2f matching prepares from distinct
	// backups (the primary never sends one, see onPrepare).
	if !e.prepared && e.prepares.count(e.digest) >= r.q.Prepared() {
		r.assertVote(e, e.commits.by[r.id], "commit")
		e.prepared = true
		r.recordPrepared(e)
		c := Commit{View: e.view, Seq: e.seq, Digest: e.digest}
		s := r.sign(MsgCommit, c)
		e.commits.by[r.id] = vote{has: true, digest: e.digest, msg: s}
		r.persistMsg(&Envelope{Msg: s}, e.view, e.seq)
		r.broadcast(s)
	}
	// committed-local: prepared and 2f+1 matching commits, its own included. Or the
	// commit certificate rule: 2f+1 matching commits from distinct replicas, of which
	// f+1 correct ones prepared the batch, so it is committed (PBFT's committed
	// predicate) whether or not this replica prepared it; a replica that lags, or was
	// split off, executes it without signing anything for it.
	if !e.committed && e.commits.count(e.digest) >= r.q.Strong() {
		e.committed = true
		r.decide(e.seq, e.digest)
		r.tryExecute()
	}
}

// decide records that this replica committed (or executed) digest d at seq n.
func (r *Replica) decide(n uint64, d crypto.Digest) {
	old, ok := r.decided[n]
	r.assert(!ok || old == d, "n=%d decided twice: %s, then %s", n, old.Short(), d.Short())
	r.decided[n] = d
}

// assertVote checks, before this replica signs a vote for entry e, the two promises a
// correct replica keeps: never two different own votes for one (view, seq), and never a
// vote at a decided seq for another digest than the one it decided.
func (r *Replica) assertVote(e *entry, own vote, kind string) {
	r.assert(!own.has || own.digest == e.digest, "a second %s for v=%d n=%d with another digest", kind, e.view, e.seq)
	d, ok := r.decided[e.seq]
	r.assert(!ok || d == e.digest, "a %s for v=%d n=%d with digest %s, decided %s there", kind, e.view, e.seq, e.digest.Short(), d.Short())
}

// switchToAlt is the rule for a backup split off by an equivocating primary: it holds
// the primary's other pre-prepare for (view, seq) and 2f matching prepares from distinct
// backups for it, so that digest is prepared (PBFT's prepared predicate asks for the
// pre-prepare and 2f prepares, not for this replica's own prepare). The digest it
// accepted first never can be: two sets of a pre-prepare and 2f prepares intersect in
// f+1 replicas, one of them a correct backup that would have prepared both. It keeps the
// PREPARE it signed (it never signs another for the slot) and goes on to commit the
// prepared digest with the others, instead of waiting for a checkpoint its lag would
// hold back.
func (r *Replica) switchToAlt(e *entry) {
	alt := e.alt
	d := alt.PrePrepare.Digest
	if old, ok := r.decided[e.seq]; ok && old != d {
		return
	}
	e.alt = nil
	e.pp, e.digest = alt, d
	e.batch, e.hasBatch = alt.Batch, true
	r.rememberBatch(e.seq, d, alt.Batch)
	for _, m := range alt.Batch {
		r.inflight[m.Digest] = true
	}
	r.persistMsg(alt.Envelope(), e.view, e.seq)
}

// recordPrepared keeps the entry's prepared certificate (its pre-prepare and 2f
// matching prepares from distinct backups) for a later VIEW-CHANGE.
func (r *Replica) recordPrepared(e *entry) {
	if pi := r.prepared[e.seq]; pi != nil && pi.view > e.view {
		return
	}
	cert := PreparedCert{PrePrepare: e.pp.Signed, Prepares: e.prepares.signed(e.digest, r.q.Prepared())}
	r.prepared[e.seq] = &preparedInfo{view: e.view, digest: e.digest, cert: cert}
	r.rd.Persist = append(r.rd.Persist, Record{Kind: RecordPrepared, View: e.view, Seq: e.seq, Cert: cert})
}
