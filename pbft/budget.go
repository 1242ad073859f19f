package pbft

// What a replica does for its peers on request (its stable proof to a laggard, a NEW-VIEW
// forwarded, commit certificates, a batch, state chunks) is budgeted per peer, so that a
// faulty peer asking over and over costs it a bounded share of its work. Every budget
// lives here.
type peerBudgets struct {
	help, newView, certs, batch oncePer
	chunks                      countPer
}

func newPeerBudgets(n int) peerBudgets {
	return peerBudgets{help: newOncePer(n), newView: newOncePer(n), certs: newOncePer(n), batch: newOncePer(n),
		chunks: countPer{start: make([]uint64, n), used: make([]int, n)}}
}

// oncePer allows one answer per peer per period.
type oncePer struct{ last []uint64 } // 1 + the tick of the last answer (0: never)

func newOncePer(n int) oncePer { return oncePer{last: make([]uint64, n)} }

// due reports whether peer id may have an answer at tick now, with at most one each
// period ticks, and if so records it.
func (o oncePer) due(id ReplicaID, now, period uint64) bool {
	if uint64(id) >= uint64(len(o.last)) {
		return false
	}
	if last := o.last[id]; last != 0 && now+1-last < period {
		return false
	}
	o.last[id] = now + 1
	return true
}

// countPer allows up to a number of answers per peer in each period.
type countPer struct {
	start []uint64 // tick the peer's current period began
	used  []int
}

// take reports whether peer id may have one more answer at tick now (max a period),
// and if so counts it.
func (c countPer) take(id ReplicaID, now, period uint64, max int) bool {
	if uint64(id) >= uint64(len(c.used)) {
		return false
	}
	if now >= c.start[id]+period {
		c.start[id], c.used[id] = now, 0
	}
	if c.used[id] >= max {
		return false
	}
	c.used[id]++
	return true
}
