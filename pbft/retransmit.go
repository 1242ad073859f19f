package pbft

// Retransmission (PBFT TOCS §4.5 assumes fair links; the replica makes them so): every
// retransmit period a replica resends what it is waiting on, answers what others are
// waiting on, and helps laggards with the stable checkpoint's proof, each at most once a
// period per peer.

// retransmit resends this replica's part of every live log entry to each replica that
// has not shown (by a matching commit) that it got that far, and its unstable
// checkpoints to those that have not matched them. On a lossy network this is what
// restores liveness once messages get through again.
func (r *Replica) retransmit() {
	r.retransmitViewChange()
	if !r.active {
		return
	}
	primary := r.isPrimary()
	for n := r.h + 1; n <= r.h+r.cfg.LogWindow; n++ {
		e := r.log[n]
		if e == nil || e.view != r.view || e.pp == nil {
			continue
		}
		if !e.hasBatch {
			r.broadcast(r.sign(MsgFetchBatch, FetchBatch{Seq: e.seq, Digest: e.digest}))
		}
		for j := 0; j < r.cfg.N; j++ {
			id := ReplicaID(j)
			if id == r.id || e.commits.matches(id, e.digest) {
				continue
			}
			if r.peerView[j] < r.view {
				// It may have missed the NEW-VIEW: without it, it drops all of this.
				r.sendNewView(id)
			}
			r.sendEntry(e, id, primary)
		}
	}
	// A peer that neither signed our stable checkpoint nor sent anything at or beyond it
	// may have missed it, and the log before it is gone: nothing else would ever reach
	// it once the cluster goes idle. Send it the proof, so it can fetch the state.
	if r.stable != nil {
		for j := 0; j < r.cfg.N; j++ {
			if id := ReplicaID(j); id != r.id && r.seenAhead[j] < r.h && !signedProof(r.stable, id) {
				r.helpLaggard(id)
			}
		}
	}
	for n := r.h + r.cfg.CheckpointInterval; n <= r.executed; n += r.cfg.CheckpointInterval {
		cv := r.ckpts[n]
		if cv == nil || cv.own == nil {
			continue
		}
		for j := 0; j < r.cfg.N; j++ {
			if ReplicaID(j) == r.id || cv.voted(ReplicaID(j), cv.ownDigest) {
				continue
			}
			r.sendTo(ReplicaID(j), &Envelope{Msg: *cv.own})
		}
	}
}

func signedProof(sc *StableCheckpoint, id ReplicaID) bool {
	for _, s := range sc.Proof {
		if ReplicaID(s.From) == id {
			return true
		}
	}
	return false
}

// answerRetransmission replies to a vote received twice. A replica retransmits only to
// peers whose commit it lacks, so a repeated vote says the sender misses ours: it gets
// our part of the entry, at most once per retransmit period.
func (r *Replica) answerRetransmission(e *entry, to ReplicaID) {
	if e.pp == nil || to == r.id {
		return
	}
	if e.answered.last == nil {
		e.answered = newOncePer(r.cfg.N)
	}
	if !e.answered.due(to, r.ticks, uint64(r.cfg.RetransmitTicks)) {
		return
	}
	r.sendEntry(e, to, r.isPrimary())
}

// sendEntry sends this replica's part of an entry to one replica: the pre-prepare and
// its batch if it is the primary, and its own prepare and commit if it sent them.
//
// A backup also relays the primary's signed PRE-PREPARE, with its batch, for an entry
// it committed to a backup that has shown neither a prepare nor a commit for it: the
// relayed pre-prepare rule. The primary's signature, not the relay, makes it
// authentic, so a relay can forge nothing; and without it a replica that lags inside
// the window, behind a faulty primary that stopped resending (or one whose own
// checkpoint became stable and dropped the entries), waits for a checkpoint that its
// lag itself (with a faulty replica's lying CHECKPOINTs) keeps from becoming stable.
func (r *Replica) sendEntry(e *entry, to ReplicaID, primary bool) {
	switch {
	case primary && e.hasBatch:
		// Without its batch a pre-prepare does not verify: a peer lacking it gets the
		// NEW-VIEW it came from, and fetches the batch like us.
		r.sendTo(to, e.envelope())
	case e.committed && e.hasBatch && to != r.q.Primary(e.view) &&
		!e.prepares.matches(to, e.digest) && !e.commits.matches(to, e.digest):
		r.sendTo(to, e.envelope())
	}
	if v := &e.prepares.by[r.id]; v.has {
		r.sendTo(to, &Envelope{Msg: v.msg})
	}
	if v := &e.commits.by[r.id]; v.has {
		r.sendTo(to, &Envelope{Msg: v.msg})
	}
}

// helpLaggard answers a replica whose messages are below our stable checkpoint with the
// proof of that checkpoint, so it can fetch the state; at most once per retransmit period.
func (r *Replica) helpLaggard(id ReplicaID) {
	if r.stable == nil || id == r.id || uint64(id) >= uint64(r.cfg.N) {
		return
	}
	if !r.budgets.help.due(id, r.ticks, uint64(r.cfg.RetransmitTicks)) {
		return
	}
	for _, s := range r.stable.Proof {
		r.sendTo(id, &Envelope{Msg: s})
	}
}
