package pbft

import "github.com/pbftkit/pbft/crypto"

// vote is one replica's prepare or commit for an entry.
type vote struct {
	has    bool
	digest crypto.Digest
	msg    Signed
}

// entry is the log slot of one sequence number in one view.
type entry struct {
	seq  uint64
	view uint64

	pp     *PrePrepareMsg
	digest crypto.Digest
	// batch is the requests of the pre-prepare; hasBatch is false while a pre-prepare
	// re-proposed by a NEW-VIEW waits for a batch this replica has to fetch.
	batch    []*RequestMsg
	hasBatch bool

	prepares []vote // by sender
	commits  []vote // by sender

	prepared  bool
	committed bool

	// answered is, per replica, 1 + the tick this replica last answered its retransmission.
	answered []uint64
}

func (r *Replica) getEntry(n uint64) *entry {
	e := r.log[n]
	if e == nil || e.view != r.view {
		e = &entry{seq: n, view: r.view, prepares: make([]vote, r.cfg.N), commits: make([]vote, r.cfg.N)}
		r.log[n] = e
	}
	return e
}

// envelope is the entry's pre-prepare with its batch, as the primary sends it.
func (e *entry) envelope() *Envelope {
	env := &Envelope{Msg: e.pp.Signed}
	if e.hasBatch && len(e.batch) > 0 {
		env.Batch = make([]Signed, len(e.batch))
		for i, m := range e.batch {
			env.Batch[i] = m.Signed
		}
	}
	return env
}

// countMatching counts votes whose digest is d.
func countMatching(vs []vote, d crypto.Digest) int {
	c := 0
	for i := range vs {
		if vs[i].has && vs[i].digest == d {
			c++
		}
	}
	return c
}

// gcLog discards every entry at or below n (a stable checkpoint).
func (r *Replica) gcLog(n uint64) {
	for s := range r.log {
		if s <= n {
			delete(r.log, s)
		}
	}
}
