package pbft

import (
	"fmt"
	"slices"
)

// The client table (PBFT TOCS §4.1): per client, the timestamps executed in the last
// ReplyWindow and their cached replies, so that each (client, timestamp) executes once,
// a retransmission gets the cached reply, and older timestamps are refused. It is part
// of the checkpointed state.

type reqState uint8

const (
	reqNew       reqState = iota // never seen executing: may be ordered
	reqExecuting                 // handed to the application, result not back yet
	reqDone                      // executed; its reply is cached
	reqOld                       // at or below the client's low mark: done or abandoned
)

// clientEntry is one client's row of the client table: exactly-once execution with up
// to window requests in flight. Timestamps at or below low are never executed again.
type clientEntry struct {
	low     uint64
	replies map[uint64][]byte // executed (or executing: nil) timestamps above low
	order   []uint64          // the keys of replies, ascending
}

type clientTable struct {
	window  int
	clients map[ClientID]*clientEntry
}

func newClientTable(window int) clientTable {
	return clientTable{window: window, clients: make(map[ClientID]*clientEntry)}
}

func (t *clientTable) lookup(c ClientID, ts uint64) (reqState, []byte) {
	ce := t.clients[c]
	if ce == nil {
		return reqNew, nil
	}
	if ts <= ce.low {
		return reqOld, nil
	}
	res, ok := ce.replies[ts]
	switch {
	case !ok:
		return reqNew, nil
	case res == nil:
		return reqExecuting, nil
	default:
		return reqDone, res
	}
}

// marks returns client c's low mark and the highest timestamp the table admitted for
// it (the low mark when it holds none above it).
func (t *clientTable) marks(c ClientID) (low, high uint64) {
	ce := t.clients[c]
	if ce == nil {
		return 0, 0
	}
	low, high = ce.low, ce.low
	if len(ce.order) > 0 {
		high = max(high, ce.order[len(ce.order)-1])
	}
	return low, high
}

// admit marks (c, ts) executing. The table is part of the replicated state: it changes
// only in sequence order, so every correct replica filters the same requests.
func (t *clientTable) admit(c ClientID, ts uint64) {
	ce := t.clients[c]
	if ce == nil {
		ce = &clientEntry{replies: make(map[uint64][]byte)}
		t.clients[c] = ce
	}
	ce.replies[ts] = nil
	i, _ := slices.BinarySearch(ce.order, ts)
	ce.order = slices.Insert(ce.order, i, ts)
	for len(ce.order) > t.window {
		old := ce.order[0]
		ce.order = ce.order[1:]
		delete(ce.replies, old)
		ce.low = max(ce.low, old)
	}
}

func (t *clientTable) setResult(c ClientID, ts uint64, result []byte) {
	if ce := t.clients[c]; ce != nil {
		if _, ok := ce.replies[ts]; ok {
			if result == nil {
				result = []byte{}
			}
			ce.replies[ts] = result
		}
	}
}

// records is the canonical form of the table: clients by id, replies by timestamp.
func (t *clientTable) records() []ClientRecord {
	ids := make([]ClientID, 0, len(t.clients))
	for id := range t.clients {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	out := make([]ClientRecord, len(ids))
	for i, id := range ids {
		ce := t.clients[id]
		rec := ClientRecord{Client: id, Low: ce.low, Replies: make([]CachedReply, len(ce.order))}
		for j, ts := range ce.order {
			rec.Replies[j] = CachedReply{Timestamp: ts, Result: ce.replies[ts]}
		}
		out[i] = rec
	}
	return out
}

// restoreClientTable rebuilds a table from its canonical records, refusing any that a
// correct replica could not have produced.
func restoreClientTable(window int, recs []ClientRecord) (clientTable, error) {
	t := newClientTable(window)
	for i, rec := range recs {
		if i > 0 && rec.Client <= recs[i-1].Client {
			return t, fmt.Errorf("client table: client %d out of order", rec.Client)
		}
		if len(rec.Replies) > window {
			return t, fmt.Errorf("client table: client %d has %d replies, window is %d", rec.Client, len(rec.Replies), window)
		}
		ce := &clientEntry{low: rec.Low, replies: make(map[uint64][]byte, len(rec.Replies))}
		for j, cr := range rec.Replies {
			if cr.Timestamp <= rec.Low || (j > 0 && cr.Timestamp <= rec.Replies[j-1].Timestamp) {
				return t, fmt.Errorf("client table: client %d timestamp %d out of order", rec.Client, cr.Timestamp)
			}
			res := cr.Result
			if res == nil {
				res = []byte{}
			}
			ce.replies[cr.Timestamp] = res
			ce.order = append(ce.order, cr.Timestamp)
		}
		t.clients[rec.Client] = ce
	}
	return t, nil
}
