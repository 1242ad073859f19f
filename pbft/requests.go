package pbft

import (
	"bytes"
	"slices"

	"github.com/pbftkit/pbft/crypto"
)

// requestQueue is the primary's queue of requests not yet assigned a sequence number,
// in arrival order. Every way in (a client's request, the requests a new primary's
// backups were waiting for) goes through add, so one bound holds for all: at most
// perClient requests of one client, since more could never all execute (the client
// table keeps only the last ReplyWindow timestamps) and would grow the queue unbounded.
type requestQueue struct {
	reqs      []*RequestMsg
	bytes     int // of the operations queued
	set       map[crypto.Digest]bool
	per       map[ClientID]int
	perClient int
}

func newRequestQueue(perClient int) requestQueue {
	return requestQueue{set: make(map[crypto.Digest]bool), per: make(map[ClientID]int), perClient: perClient}
}

func (q *requestQueue) len() int             { return len(q.reqs) }
func (q *requestQueue) full(c ClientID) bool { return q.per[c] >= q.perClient }
func (q *requestQueue) queuedBytes() int     { return q.bytes }

// add queues m; it reports false if m's client already has perClient requests queued.
// A request already queued is not queued twice (and reported true).
func (q *requestQueue) add(m *RequestMsg) bool {
	if q.set[m.Digest] {
		return true
	}
	if q.full(m.Request.Client) {
		return false
	}
	q.set[m.Digest] = true
	q.per[m.Request.Client]++
	q.reqs = append(q.reqs, m)
	q.bytes += len(m.Request.Op)
	return true
}

// take removes the requests of the next batch from the front of the queue and returns
// those keep accepts: at most maxReqs of them, and no more than maxBytes of operations
// unless a single one is larger. Those keep refuses (executed or in flight meanwhile)
// leave the queue without counting.
func (q *requestQueue) take(maxReqs, maxBytes int, keep func(*RequestMsg) bool) []*RequestMsg {
	var batch []*RequestMsg
	bytes, taken := 0, 0
	for _, m := range q.reqs {
		if len(batch) == maxReqs || (len(batch) > 0 && bytes+len(m.Request.Op) > maxBytes) {
			break
		}
		taken++
		q.bytes -= len(m.Request.Op)
		delete(q.set, m.Digest)
		if q.per[m.Request.Client]--; q.per[m.Request.Client] == 0 {
			delete(q.per, m.Request.Client)
		}
		if !keep(m) {
			continue
		}
		batch = append(batch, m)
		bytes += len(m.Request.Op)
	}
	q.reqs = q.reqs[taken:]
	if len(q.reqs) == 0 {
		q.reqs = nil
	}
	return batch
}

// watchSet is the valid requests a replica saw and has not seen execute: its
// view-change timer runs while there are any (viewtimer.go). At most perClient of one
// client are watched, so a client cannot grow it unbounded.
type watchSet struct {
	reqs      map[crypto.Digest]*RequestMsg
	per       map[ClientID]int
	perClient int
}

func newWatchSet(perClient int) watchSet {
	return watchSet{reqs: make(map[crypto.Digest]*RequestMsg), per: make(map[ClientID]int), perClient: perClient}
}

func (w *watchSet) len() int { return len(w.reqs) }

// add watches m; false if its client already has perClient watched (m is not).
func (w *watchSet) add(m *RequestMsg) bool {
	if w.reqs[m.Digest] != nil {
		return true
	}
	if w.per[m.Request.Client] >= w.perClient {
		return false
	}
	w.reqs[m.Digest] = m
	w.per[m.Request.Client]++
	return true
}

// remove stops watching m; it reports whether m was watched.
func (w *watchSet) remove(m *RequestMsg) bool {
	if w.reqs[m.Digest] == nil {
		return false
	}
	delete(w.reqs, m.Digest)
	if w.per[m.Request.Client]--; w.per[m.Request.Client] <= 0 {
		delete(w.per, m.Request.Client)
	}
	return true
}

// inOrder lists the watched requests by client, timestamp and digest: the order a new
// primary proposes them in, the same on every run (never map order).
func (w *watchSet) inOrder() []*RequestMsg {
	out := make([]*RequestMsg, 0, len(w.reqs))
	for _, m := range w.reqs {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b *RequestMsg) int {
		if a.Request.Client != b.Request.Client {
			return int(a.Request.Client) - int(b.Request.Client)
		}
		switch {
		case a.Request.Timestamp < b.Request.Timestamp:
			return -1
		case a.Request.Timestamp > b.Request.Timestamp:
			return 1
		}
		// One client, one timestamp, two operations (a faulty client): by digest.
		return bytes.Compare(a.Digest[:], b.Digest[:])
	})
	return out
}
