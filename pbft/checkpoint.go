package pbft

import "github.com/pbftkit/pbft/crypto"

// maxDigestsPerSender bounds how many different state digests one replica's CHECKPOINTs
// for one seq are kept for. A correct replica signs one; a second is evidence that its
// sender is faulty, kept with the first; more are dropped (and counted), and bound the
// memory a faulty replica can take.
const maxDigestsPerSender = 2

// checkpointVotes gathers the CHECKPOINTs for one sequence number, counted per digest
// (PBFT TOCS §4.3: a checkpoint is stable once 2f+1 replicas signed the same digest). A
// sender's votes are never first-come: a replica that signed two digests counts for
// each, so it cannot veto stability where its lie arrived first. That is safe: two
// digests with 2f+1 signers each would share f+1 signers, one of them correct, and a
// correct replica signs one digest per seq.
type checkpointVotes struct {
	// digests holds, in the order they were first seen, every digest some sender signed,
	// with that digest's CHECKPOINTs by sender.
	digests []digestVotes
	// per counts, by sender, the digests it signed that are kept.
	per []uint8

	// certified is a whole 2f+1 proof of this seq learnt from a NEW-VIEW, a VIEW-CHANGE
	// or a state response, checked as a whole: it makes the checkpoint stable (or starts
	// the state transfer to it) even if this replica never saw those CHECKPOINTs alone.
	certified *StableCheckpoint

	own       *Signed // this replica's CHECKPOINT, once it executed seq
	ownDigest crypto.Digest
	ownState  []byte // CBOR of CheckpointState at seq
}

type digestVotes struct {
	digest crypto.Digest
	votes  []*CheckpointMsg // by sender
}

func (r *Replica) checkpointVotesFor(n uint64) *checkpointVotes {
	cv := r.ckpts[n]
	if cv == nil {
		cv = &checkpointVotes{per: make([]uint8, r.cfg.N)}
		r.ckpts[n] = cv
	}
	return cv
}

// votesFor returns the votes for digest d, adding an empty set if add is true.
func (cv *checkpointVotes) votesFor(d crypto.Digest, n int, add bool) []*CheckpointMsg {
	for i := range cv.digests {
		if cv.digests[i].digest == d {
			return cv.digests[i].votes
		}
	}
	if !add {
		return nil
	}
	cv.digests = append(cv.digests, digestVotes{digest: d, votes: make([]*CheckpointMsg, n)})
	return cv.digests[len(cv.digests)-1].votes
}

// voted reports whether replica from signed digest d for this seq.
func (cv *checkpointVotes) voted(from ReplicaID, d crypto.Digest) bool {
	vs := cv.votesFor(d, 0, false)
	return vs != nil && vs[from] != nil
}

// add records m; it returns a drop reason when m is refused or is evidence of a fault.
// A vote for this replica's own digest always finds room: a faulty sender's earlier
// digests give way to it, so lies sent first never crowd out its true vote here.
func (cv *checkpointVotes) add(m *CheckpointMsg, n int) (reason string, kept bool) {
	from := ReplicaID(m.Signed.From)
	if cv.voted(from, m.Checkpoint.State) {
		return "", false // a retransmission
	}
	if cv.per[from] >= maxDigestsPerSender {
		if cv.own == nil || m.Checkpoint.State != cv.ownDigest {
			return "checkpoint: more digests from one replica than are kept", false
		}
		cv.forget(from) // its lies go; the evidence of two digests stays below
		cv.votesFor(m.Checkpoint.State, n, true)[from] = m
		cv.per[from] = 1
		return "conflicting checkpoint from the same replica: its vote for our digest replaces its others", true
	}
	cv.votesFor(m.Checkpoint.State, n, true)[from] = m
	cv.per[from]++
	if cv.per[from] > 1 {
		// Counted, and kept with the first as evidence; it counts for its own digest.
		return "conflicting checkpoint from the same replica: both kept, each counts for its digest", true
	}
	return "", true
}

// forget drops every vote of replica from.
func (cv *checkpointVotes) forget(from ReplicaID) {
	for i := range cv.digests {
		cv.digests[i].votes[from] = nil
	}
	cv.per[from] = 0
	keep := cv.digests[:0]
	for _, dv := range cv.digests {
		for _, v := range dv.votes {
			if v != nil {
				keep = append(keep, dv)
				break
			}
		}
	}
	cv.digests = keep
}

func (cv *checkpointVotes) empty() bool {
	return len(cv.digests) == 0 && cv.own == nil && cv.certified == nil
}

// stable returns a 2f+1 proof of this seq: from the votes seen one by one, the first
// digest (in the order digests were first seen) that 2f+1 senders signed, or else the
// certified proof.
func (cv *checkpointVotes) stable(q Quorum, seq uint64) *StableCheckpoint {
	for _, dv := range cv.digests {
		var proof []Signed
		for _, v := range dv.votes {
			if v != nil {
				proof = append(proof, v.Signed)
			}
		}
		if len(proof) >= q.Strong() {
			return &StableCheckpoint{Seq: seq, State: dv.digest, Proof: proof}
		}
	}
	return cv.certified
}

// takeCheckpoint digests the state after batch n (application snapshot and client
// table) and multicasts CHECKPOINT.
func (r *Replica) takeCheckpoint(n uint64, snapshot []byte) {
	recs := r.clients.records()
	d := StateDigest(snapshot, recs)
	s := r.sign(MsgCheckpoint, Checkpoint{Seq: n, State: d})
	cv := r.checkpointVotesFor(n)
	cv.own, cv.ownDigest = &s, d
	cv.ownState = Marshal(CheckpointState{App: snapshot, Clients: recs})
	cv.add(&CheckpointMsg{Signed: s, Checkpoint: Checkpoint{Seq: n, State: d}}, r.cfg.N)
	r.persistMsg(&Envelope{Msg: s}, r.view, n)
	// The state, durable with the CHECKPOINT that digests it (see RecordCheckpoint).
	r.rd.Persist = append(r.rd.Persist, Record{Kind: RecordCheckpoint, Seq: n, Env: Envelope{Msg: s}, State: cv.ownState})
	r.broadcast(s)
	r.checkStable(n)
}

func (r *Replica) onCheckpoint(m *CheckpointMsg) {
	c := &m.Checkpoint
	from := ReplicaID(m.Signed.From)
	// A checkpoint says its signer executed c.Seq: evidence of how far the cluster went,
	// which a replica behind lying checkpoints needs to ask for state (tickStalled).
	r.noteSeq(from, c.Seq)
	switch {
	case c.Seq <= r.h:
		r.helpLaggard(from)
		return
	case c.Seq%r.cfg.CheckpointInterval != 0:
		r.drop(m, "checkpoint at a sequence number that is not a checkpoint")
		return
	}
	if c.Seq > r.h+r.cfg.LogWindow {
		// Above the window a replica keeps only each sender's highest checkpoint: enough
		// to learn that it lags, with memory bounded by n.
		// Two passes, so the outcome never depends on map iteration order.
		for n, cv := range r.ckpts {
			if n > r.h+r.cfg.LogWindow && n > c.Seq && cv.per[from] > 0 {
				return
			}
		}
		for n, cv := range r.ckpts {
			if n > r.h+r.cfg.LogWindow && n < c.Seq && cv.per[from] > 0 {
				cv.forget(from)
				if cv.empty() {
					delete(r.ckpts, n)
				}
			}
		}
	}
	reason, kept := r.checkpointVotesFor(c.Seq).add(m, r.cfg.N)
	if reason != "" {
		r.drop(m, reason)
	}
	if kept {
		r.checkStable(c.Seq)
	}
}

// adoptCertified takes a stable checkpoint proven by a whole 2f+1 proof (of a NEW-VIEW,
// a VIEW-CHANGE or a state response, already checked with strongProof): the checkpoint
// becomes stable here, or this replica fetches its state (PBFT TOCS §4.4: a backup
// entering a new view adopts the NEW-VIEW's checkpoint). The proof is never replayed
// through the votes of its signers: a replica whose lie arrived first would be counted
// out, and the checkpoint never adopted.
func (r *Replica) adoptCertified(sc *StableCheckpoint) {
	if sc.Seq <= r.h {
		return
	}
	cv := r.checkpointVotesFor(sc.Seq)
	if cv.certified == nil {
		cv.certified = sc
	}
	r.checkStable(sc.Seq)
}

// checkStable makes checkpoint n stable once 2f+1 replicas signed matching digests. A
// replica that has not reached n itself fetches the certified state instead; one that
// is still executing up to n waits for its own checkpoint.
func (r *Replica) checkStable(n uint64) {
	cv := r.ckpts[n]
	if cv == nil || n <= r.h {
		return
	}
	sc := cv.stable(r.q, n)
	if sc == nil {
		return
	}
	switch {
	case cv.own != nil && cv.ownDigest == sc.State:
		r.makeStable(sc, cv.ownState)
	case cv.own != nil:
		// 2f+1 replicas, so at least f+1 correct ones, certify another state: ours is
		// wrong. Only fetching the certified state can repair it.
		r.rd.Drops = append(r.rd.Drops, Drop{From: uint32(r.id), Type: MsgCheckpoint, Reason: "own state disagrees with a stable checkpoint"})
		r.startStateTransfer(sc)
	case n > r.emitted:
		r.startStateTransfer(sc)
	}
}

// strongProof returns the digest that 2f+1 of votes (at most one per sender, as in a
// proof a VIEW-CHANGE or state response carries) agree on, with those votes.
func (r *Replica) strongProof(votes []*CheckpointMsg) (crypto.Digest, []Signed) {
	for i, v := range votes {
		if v == nil {
			continue
		}
		d := v.Checkpoint.State
		var proof []Signed
		for _, w := range votes[i:] {
			if w != nil && w.Checkpoint.State == d {
				proof = append(proof, w.Signed)
			}
		}
		if len(proof) >= r.q.Strong() {
			return d, proof
		}
	}
	return crypto.Digest{}, nil
}

// certifiedBy checks a proof (CHECKPOINTs for seq n, verified, from distinct senders)
// as a whole: the stable checkpoint it proves, or nil.
func (r *Replica) certifiedBy(n uint64, proof []*CheckpointMsg) *StableCheckpoint {
	votes := make([]*CheckpointMsg, r.cfg.N)
	for _, c := range proof {
		if uint64(c.Signed.From) < uint64(r.cfg.N) && c.Checkpoint.Seq == n {
			votes[c.Signed.From] = c
		}
	}
	d, signed := r.strongProof(votes)
	if signed == nil {
		return nil
	}
	return &StableCheckpoint{Seq: n, State: d, Proof: signed}
}

// makeStable advances the low watermark to sc.Seq and discards everything at or below it.
func (r *Replica) makeStable(sc *StableCheckpoint, state []byte) {
	r.assert(sc.Seq <= r.emitted, "stable checkpoint n=%d above the last seq executed, n=%d", sc.Seq, r.emitted)
	r.h = sc.Seq
	r.stable = sc
	r.stableState = state
	r.rd.Persist = append(r.rd.Persist, Record{Kind: RecordStable, Seq: sc.Seq, Proof: sc.Proof, State: state})
	r.gcLog(sc.Seq)
	r.gcViewChange(sc.Seq)
	for n := range r.ckpts {
		if n <= sc.Seq {
			delete(r.ckpts, n)
		}
	}
	for n := range r.saved {
		if n <= sc.Seq {
			delete(r.saved, n)
		}
	}
	if r.nextSeq < sc.Seq {
		r.nextSeq = sc.Seq
	}
	if r.transfer != nil && r.transfer.target.Seq <= sc.Seq {
		r.transfer = nil
	}
	r.rd.Stable = sc
	r.applyDeferred()
	r.maybePropose()
}
