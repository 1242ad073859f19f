package pbft

import "github.com/pbftkit/pbft/crypto"

// The batch store: the requests of the batches this replica saw, by seq and digest, so
// that a pre-prepare that arrives (in a NEW-VIEW, or relayed) with its digest only can
// be matched to its requests, and FETCH-BATCH / BATCH-REPLY for those it lacks.

// storedBatch is a batch body kept by digest, so a re-proposed digest (in a NEW-VIEW)
// can run without fetching it, and peers that lack it can fetch it.
type storedBatch struct {
	seq  uint64 // highest seq it was proposed at, for garbage collection
	reqs []*RequestMsg
}

// rememberBatch keeps a batch body by digest for re-proposal and for peers that lack it.
func (r *Replica) rememberBatch(n uint64, d crypto.Digest, reqs []*RequestMsg) {
	if b := r.batches[d]; b != nil {
		b.seq = max(b.seq, n)
		return
	}
	r.batches[d] = &storedBatch{seq: n, reqs: reqs}
}

// attachBatch gives an entry its batch if this replica holds it, and asks for it if not.
func (r *Replica) attachBatch(e *entry) {
	switch {
	case e.pp.HasBatch:
		e.batch, e.hasBatch = e.pp.Batch, true
	case e.digest == nullDigest:
		e.batch, e.hasBatch = nil, true
	case r.batches[e.digest] != nil:
		e.batch, e.hasBatch = r.batches[e.digest].reqs, true
	}
	if e.hasBatch {
		r.rememberBatch(e.seq, e.digest, e.batch)
		return
	}
	r.broadcast(r.sign(MsgFetchBatch, FetchBatch{Seq: e.seq, Digest: e.digest}))
}

func (r *Replica) onFetchBatch(m *FetchBatchMsg) {
	from := ReplicaID(m.Signed.From)
	b := r.batches[m.FetchBatch.Digest]
	if b == nil || from == r.id {
		return
	}
	if !r.budgets.batch.due(from, r.ticks, 1) {
		return // one batch per peer per tick: a fetch is cheap, an answer is not
	}
	env := &Envelope{Msg: r.sign(MsgBatchReply, BatchReply(m.FetchBatch)), Batch: make([]Signed, len(b.reqs))}
	for i, q := range b.reqs {
		env.Batch[i] = q.Signed
	}
	r.sendTo(from, env)
}

func (r *Replica) onBatchReply(m *BatchReplyMsg) {
	d := m.BatchReply.Digest
	for n := r.h + 1; n <= r.h+r.cfg.LogWindow; n++ {
		if e := r.log[n]; e != nil && e.pp != nil && !e.hasBatch && e.digest == d {
			e.batch, e.hasBatch = m.Batch, true
			r.rememberBatch(n, d, m.Batch)
			r.persistBatch(e)
		}
	}
	r.tryExecute()
}

// persistBatch records a re-proposed entry's pre-prepare with the batch it was given
// from memory or a peer: the records it came from (a pre-prepare of an older view) go
// at the next compaction, and a restarted cluster must not be left with a committed
// digest whose requests nobody holds.
func (r *Replica) persistBatch(e *entry) {
	if e.hasBatch && e.digest != nullDigest {
		r.persistMsg(e.envelope(), e.view, e.seq)
	}
}
