package pbft

import "github.com/pbftkit/pbft/crypto"

// vote is one replica's prepare or commit for an entry.
type vote struct {
	has    bool
	digest crypto.Digest
	msg    Signed
}

// voteSet holds an entry's PREPAREs or COMMITs, counted per digest. A sender's first
// vote sits in by; a second one for another digest (evidence of a faulty sender) sits in
// second, and counts for its own digest too. A first-come slot would let a faulty
// replica veto a quorum wherever its conflicting vote arrived first, which only the
// other correct replicas could then make up for; counting per digest is safe, since a
// quorum's intersection argument rests on the correct replicas in it, each of which
// signs one digest per slot. More than two digests from one sender are dropped.
type voteSet struct {
	by     []vote // by sender: its first vote
	second []vote // by sender: a vote for a second digest; nil until one arrives
}

func newVoteSet(n int) voteSet { return voteSet{by: make([]vote, n)} }

// voteAdded says what add did with a vote.
type voteAdded uint8

const (
	voteNew      voteAdded = iota // a first vote from its sender
	voteRepeat                    // the same vote again: a retransmission
	voteConflict                  // a second digest from its sender: kept, and counted for it
	voteRefused                   // a third digest: dropped
)

// add records one vote. want is the digest of the pre-prepare this replica holds for the
// entry (if it holds one): a vote for it always finds room, so a faulty sender's
// conflicting votes, sent first, never crowd out its matching one.
func (vs *voteSet) add(from ReplicaID, d crypto.Digest, msg Signed, want *crypto.Digest) voteAdded {
	switch first := &vs.by[from]; {
	case !first.has:
		*first = vote{has: true, digest: d, msg: msg}
		return voteNew
	case first.digest == d:
		return voteRepeat
	}
	if vs.second == nil {
		vs.second = make([]vote, len(vs.by))
	}
	switch second := &vs.second[from]; {
	case !second.has:
		*second = vote{has: true, digest: d, msg: msg}
		return voteConflict
	case second.digest == d:
		return voteRepeat
	case want != nil && d == *want:
		*second = vote{has: true, digest: d, msg: msg} // the first stays, as evidence
		return voteConflict
	}
	return voteRefused
}

// matches reports whether replica from voted for d.
func (vs *voteSet) matches(from ReplicaID, d crypto.Digest) bool {
	if v := vs.by[from]; v.has && v.digest == d {
		return true
	}
	return vs.second != nil && vs.second[from].has && vs.second[from].digest == d
}

// count is how many distinct senders voted for d.
func (vs *voteSet) count(d crypto.Digest) int {
	c := 0
	for j := range vs.by {
		if vs.matches(ReplicaID(j), d) {
			c++
		}
	}
	return c
}

// signed returns up to k votes for d, one per sender, in sender order.
func (vs *voteSet) signed(d crypto.Digest, k int) []Signed {
	var out []Signed
	for j := range vs.by {
		if len(out) == k {
			break
		}
		switch {
		case vs.by[j].has && vs.by[j].digest == d:
			out = append(out, vs.by[j].msg)
		case vs.second != nil && vs.second[j].has && vs.second[j].digest == d:
			out = append(out, vs.second[j].msg)
		}
	}
	return out
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

	prepares voteSet
	commits  voteSet

	// alt is a second pre-prepare of the primary for this (view, seq), with another
	// digest and its batch: evidence of equivocation, and what this replica switches
	// to if that digest prepares without it (see switchToAlt).
	alt *PrePrepareMsg

	prepared  bool
	committed bool

	// answered budgets this replica's answers to retransmissions of the entry, per peer.
	answered oncePer
}

func (r *Replica) getEntry(n uint64) *entry {
	e := r.log[n]
	if e == nil || e.view != r.view {
		e = &entry{seq: n, view: r.view, prepares: newVoteSet(r.cfg.N), commits: newVoteSet(r.cfg.N)}
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

// gcLog discards every entry, and what was decided, at or below n (a stable checkpoint).
func (r *Replica) gcLog(n uint64) {
	for s := range r.log {
		if s <= n {
			delete(r.log, s)
		}
	}
	for s := range r.decided {
		if s <= n {
			delete(r.decided, s)
		}
	}
}
