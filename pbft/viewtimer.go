package pbft

// The view-change timer (PBFT TOCS §4.4, liveness): a backup that waits for a request
// to execute starts it; it restarts only when a request it watches executes, and it
// expires into a VIEW-CHANGE for the next view, with timeouts doubling each time. The
// watched requests are those a backup saw and the primary has not yet ordered.

func (r *Replica) startTimer() {
	if r.vcDeadline == 0 {
		r.vcDeadline = r.ticks + r.vcTimeout
	}
}

func (r *Replica) stopTimer() { r.vcDeadline = 0 }

// tickViewChange fires the view-change timer: a backup whose request did not execute in
// time, or whose NEW-VIEW did not come, moves to the next view; waiting for a NEW-VIEW
// that never comes doubles the timeout (PBFT §4.4).
func (r *Replica) tickViewChange() {
	if r.vcDeadline == 0 || r.ticks < r.vcDeadline {
		return
	}
	if r.active {
		r.forgetDecided()
		if r.waiting.len() == 0 {
			r.stopTimer() // nothing this replica waits for is undecided any more
			return
		}
	}
	// Each view change the timer forces without progress in between waits twice as
	// long for the next (PBFT §4.5.2): only an execution resets it (progressed). A
	// new view whose NEW-VIEW arrives but whose requests still cannot execute in time
	// counts too, or a slow but synchronous network would change views forever.
	r.vcTimeout = min(2*r.vcTimeout, maxViewChangeTimeout*uint64(r.cfg.ViewChangeTicks))
	r.startViewChange(r.view + 1)
}

// progressed is called when a batch executed. Only if a request this replica waited
// for executed (PBFT §4.4: the timer stops when it no longer waits for the request,
// and restarts if it waits for another) does the timeout return to its initial value
// and the timer restart for the requests still waiting: a faulty primary that orders
// null or already executed batches moves the sequence numbers, not the requests, and
// must not keep its office by it.
func (r *Replica) progressed() {
	if !r.watchedDone {
		return
	}
	r.watchedDone = false
	r.vcTimeout = uint64(r.cfg.ViewChangeTicks)
	if !r.active {
		return
	}
	r.stopTimer()
	if r.waiting.len() > 0 {
		r.startTimer()
	}
}

// watch records a valid request this replica has not seen executed: its timer runs
// until the request executes.
func (r *Replica) watch(m *RequestMsg) {
	if !r.waiting.add(m) {
		return
	}
	if r.active {
		// The primary watches too: a primary whose proposals cannot commit (its backups
		// split by an equivocating one, a correct one lost in another view) is stalled
		// as surely as a faulty one, and any replica may ask for a view change.
		r.startTimer()
	}
}

func (r *Replica) unwatch(m *RequestMsg) {
	if r.waiting.remove(m) {
		r.watchedDone = true
	}
}

// forgetDecided stops watching requests whose (client, timestamp) is decided: executed,
// executing, or superseded. Another request with the same timestamp (a client that sent
// different operations to different replicas) can never run, and must not keep the
// timer going.
func (r *Replica) forgetDecided() {
	for _, m := range r.waiting.reqs {
		if st, _ := r.clients.lookup(m.Request.Client, m.Request.Timestamp); st != reqNew {
			r.unwatch(m)
		}
	}
}

// waitingInOrder lists the watched requests in the order a new primary proposes them.
func (r *Replica) waitingInOrder() []*RequestMsg { return r.waiting.inOrder() }

// startNewViewTimer starts the wait for the NEW-VIEW only once 2f+1 replicas asked for
// this view (PBFT TOCS §4.5.2): a replica alone in a view change does not escalate to
// ever higher views, so it can still accept the NEW-VIEW the others will reach. A
// replica whose latest VIEW-CHANGE is for a later view counts too: it gave up on this
// one, and waits for no NEW-VIEW of it (the primary of this view may be the one that
// moved on). This only decides when to give up waiting, never what a view contains.
func (r *Replica) startNewViewTimer() {
	if r.active || r.vcDeadline != 0 {
		return
	}
	count := 0
	for j := 0; j < r.cfg.N; j++ {
		if vcs := r.vcFor[r.view]; (vcs != nil && vcs[j] != nil) || (r.viewChanges[j] != nil && r.viewChanges[j].sum.newView > r.view) {
			count++
		}
	}
	if count >= r.q.Strong() {
		r.startTimer()
	}
}
