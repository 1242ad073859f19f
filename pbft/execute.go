package pbft

import (
	"fmt"
)

// tryExecute hands committed batches to the application strictly in sequence order.
// It stops after a checkpoint's batch until its result (and snapshot) is back, so the
// checkpoint digest covers exactly the state after that batch.
func (r *Replica) tryExecute() {
	for r.pendingInstall == nil {
		if r.emitted > r.executed && r.emitted%r.cfg.CheckpointInterval == 0 {
			return
		}
		n := r.emitted + 1
		e := r.log[n]
		if e == nil || !e.committed || !e.hasBatch {
			return
		}
		r.assert(n > r.h && e.commits.count(e.digest) >= r.q.Strong(), "executing n=%d without 2f+1 matching commits (low mark %d)", n, r.h)
		r.decide(n, e.digest)
		b := Batch{Seq: n, View: e.view, Digest: e.digest, Checkpoint: n%r.cfg.CheckpointInterval == 0}
		for _, m := range e.batch {
			req := &m.Request
			delete(r.inflight, m.Digest)
			r.unwatch(m)
			switch st, result := r.clients.lookup(req.Client, req.Timestamp); st {
			case reqNew:
				r.clients.admit(req.Client, req.Timestamp)
				b.Requests = append(b.Requests, m)
			case reqDone:
				r.sendReply(req.Client, req.Timestamp, result)
			}
		}
		r.executing[n] = b.Requests
		r.emitted = n
		r.rd.Execute = append(r.rd.Execute, b)
	}
}

func (r *Replica) onExecuted(ex Executed) error {
	reqs := r.executing[ex.Seq]
	if len(ex.Results) != len(reqs) {
		return fmt.Errorf("executed n=%d: %d results for %d requests", ex.Seq, len(ex.Results), len(reqs))
	}
	for i, m := range reqs {
		req := &m.Request
		r.clients.setResult(req.Client, req.Timestamp, ex.Results[i])
		r.sendReply(req.Client, req.Timestamp, ex.Results[i])
	}
	delete(r.executing, ex.Seq)
	if ex.Seq%r.cfg.CheckpointInterval == 0 {
		if ex.Snapshot == nil {
			return fmt.Errorf("executed n=%d: a checkpoint batch needs the application snapshot", ex.Seq)
		}
		r.takeCheckpoint(ex.Seq, ex.Snapshot)
	}
	return nil
}

func (r *Replica) sendReply(c ClientID, ts uint64, result []byte) {
	body := Marshal(Reply{View: r.view, Timestamp: ts, Client: c, Result: result})
	r.send(Destination{Kind: ToClient, Client: c},
		&Envelope{Msg: Signed{Type: MsgReply, From: uint32(r.id), Body: body}})
}

// sendSuperseded tells client c that its request with timestamp ts is at or below its
// low mark, which the replica holds with the highest timestamp it admitted: without it
// the client only times out, and, if its timestamps are behind the table for good (its
// clock was wrong, or another process used its id), is locked out without knowing why.
// The cost is bounded like that of resending a cached reply: no signature (the
// client's channel names the sender), one small notice per validly signed request
// received (the client's own, or a copy a replica relayed), and only to the client that
// signed it, so nobody can aim notices at another client.
func (r *Replica) sendSuperseded(c ClientID, ts uint64) {
	low, high := r.clients.marks(c)
	body := Marshal(Superseded{View: r.view, Client: c, Timestamp: ts, Low: low, High: high})
	r.send(Destination{Kind: ToClient, Client: c},
		&Envelope{Msg: Signed{Type: MsgSuperseded, From: uint32(r.id), Body: body}})
}
