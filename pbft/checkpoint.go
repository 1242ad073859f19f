package pbft

import "github.com/pbftkit/pbft/crypto"

// checkpointVotes gathers the CHECKPOINTs for one sequence number.
type checkpointVotes struct {
	votes []*CheckpointMsg // by sender

	own       *Signed // this replica's CHECKPOINT, once it executed seq
	ownDigest crypto.Digest
	ownState  []byte // CBOR of CheckpointState at seq
}

func (r *Replica) checkpointVotesFor(n uint64) *checkpointVotes {
	cv := r.ckpts[n]
	if cv == nil {
		cv = &checkpointVotes{votes: make([]*CheckpointMsg, r.cfg.N)}
		r.ckpts[n] = cv
	}
	return cv
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
	cv.votes[r.id] = &CheckpointMsg{Signed: s, Checkpoint: Checkpoint{Seq: n, State: d}}
	r.persistMsg(&Envelope{Msg: s}, r.view, n)
	r.broadcast(s)
	r.checkStable(n)
}

func (r *Replica) onCheckpoint(m *CheckpointMsg) {
	c := &m.Checkpoint
	from := ReplicaID(m.Signed.From)
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
			if n > r.h+r.cfg.LogWindow && n >= c.Seq && cv.votes[from] != nil {
				return
			}
		}
		for n, cv := range r.ckpts {
			if n > r.h+r.cfg.LogWindow && cv.votes[from] != nil {
				cv.votes[from] = nil
				if cv.own == nil && cv.empty() {
					delete(r.ckpts, n)
				}
			}
		}
	}
	cv := r.checkpointVotesFor(c.Seq)
	if old := cv.votes[from]; old != nil {
		if old.Checkpoint.State != c.State {
			r.drop(m, "conflicting checkpoint from the same replica")
		}
		return
	}
	cv.votes[from] = m
	r.checkStable(c.Seq)
}

func (cv *checkpointVotes) empty() bool {
	for _, v := range cv.votes {
		if v != nil {
			return false
		}
	}
	return true
}

// checkStable makes checkpoint n stable once 2f+1 replicas sent matching digests. A
// replica that has not reached n itself fetches the certified state instead.
func (r *Replica) checkStable(n uint64) {
	cv := r.ckpts[n]
	if cv == nil || n <= r.h {
		return
	}
	d, proof := r.strongProof(cv.votes)
	if proof == nil {
		return
	}
	sc := &StableCheckpoint{Seq: n, State: d, Proof: proof}
	switch {
	case cv.own != nil && cv.ownDigest == d:
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

// strongProof returns the digest that 2f+1 of votes agree on, with those votes.
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

// makeStable advances the low watermark to sc.Seq and discards everything at or below it.
func (r *Replica) makeStable(sc *StableCheckpoint, state []byte) {
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
