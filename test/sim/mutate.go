package sim

import (
	"encoding/binary"
	"math/rand/v2"

	"github.com/pbftkit/pbft/crypto"
	"github.com/pbftkit/pbft/pbft"
)

// mutator is the mutate strategy, in the style of ByzzFuzz (Winter et al., "Randomized
// Testing of Byzantine Fault Tolerant Algorithms", OOPSLA 2023): the faulty replica runs
// the real protocol, and a seeded share of its outgoing messages is mutated in
// well-formed ways, signed with its own key, and sent to a subset of the recipients
// (the others get the original, or nothing). Small-scope mutations come first: a view,
// seq or digest moved by one, or set to a value seen in another message; then larger
// moves (a checkpoint interval, a window); and for the messages that carry others'
// signed messages (VIEW-CHANGE, NEW-VIEW, STATE-RESPONSE) the certificates and proofs
// are shuffled, truncated, or mixed with signed messages of other replicas it saw.
// Only its own signature is ever forged, as the fault model allows.
//
// As in ByzzFuzz, where a fault belongs to a protocol round, the decision belongs to a
// slot (message type, view, seq): whether to mutate, how, and who gets the mutant are
// drawn from the slot and the seed, so every retransmission repeats the same lie to the
// same replicas. A lie told once and then corrected by a retransmission is one that
// per-sender rules forgive; a consistent one is what breaks them.
type mutator struct {
	b *byzantine
	// rate is the share of slots mutated, drawn per replica and seed so a sweep covers
	// both a faulty replica that mostly behaves and one that rarely does.
	rate float64
	// types are the message types it mutates, drawn per replica and seed (swarm testing
	// within the strategy: one that mutates only checkpoints and pre-prepares, hard,
	// finds what one spreading the same effort over every type does not).
	types map[pbft.MsgType]bool
	salt  uint64
	rng   *rand.Rand // the current slot's

	views, seqs []uint64
	digests     []crypto.Digest
	checkpoints []pbft.Signed   // CHECKPOINTs of other replicas
	prepares    []pbft.Signed   // PREPAREs of other replicas
	viewChanges []pbft.Signed   // VIEW-CHANGEs of other replicas
	batches     [][]pbft.Signed // batches of pre-prepares it saw
}

// poolMax bounds each pool of seen values.
const poolMax = 64

var mutationRates = []float64{0.05, 0.15, 0.3, 0.6}

// mutable are the message types a mutator may mutate.
var mutable = []pbft.MsgType{pbft.MsgPrePrepare, pbft.MsgPrepare, pbft.MsgCommit, pbft.MsgCheckpoint,
	pbft.MsgViewChange, pbft.MsgNewView, pbft.MsgStateRequest, pbft.MsgStateResponse, pbft.MsgFetchBatch, pbft.MsgBatchReply}

func newMutator(b *byzantine) *mutator {
	m := &mutator{b: b, rate: mutationRates[b.rng.IntN(len(mutationRates))], salt: b.rng.Uint64(), types: make(map[pbft.MsgType]bool)}
	all := b.rng.IntN(3) == 0
	for _, t := range mutable {
		m.types[t] = all || b.rng.IntN(2) == 0
	}
	return m
}

// slotRNG is the generator of the decisions for env's slot.
func (m *mutator) slotRNG(env *pbft.Envelope) *rand.Rand {
	var view, seq uint64
	var v struct {
		_    struct{} `cbor:",toarray"`
		A, B uint64
	}
	switch env.Msg.Type {
	case pbft.MsgPrePrepare, pbft.MsgPrepare, pbft.MsgCommit:
		if decodeBody(env.Msg.Body, &v) == nil {
			view, seq = v.A, v.B
		}
	case pbft.MsgCheckpoint, pbft.MsgStateResponse, pbft.MsgStateRequest, pbft.MsgFetchBatch, pbft.MsgBatchReply:
		var c struct {
			_ struct{} `cbor:",toarray"`
			A uint64
		}
		if decodeBody(env.Msg.Body, &c) == nil {
			seq = c.A
		}
	case pbft.MsgViewChange, pbft.MsgNewView:
		var c struct {
			_ struct{} `cbor:",toarray"`
			A uint64
		}
		if decodeBody(env.Msg.Body, &c) == nil {
			view = c.A
		}
	}
	var k [17]byte
	k[0] = byte(env.Msg.Type)
	binary.BigEndian.PutUint64(k[1:], view)
	binary.BigEndian.PutUint64(k[9:], seq)
	h := crypto.Hash(k[:])
	return rand.New(rand.NewPCG(m.salt, binary.BigEndian.Uint64(h[:8])))
}

func keep[T any](m *mutator, pool []T, x T) []T {
	if len(pool) < poolMax {
		return append(pool, x)
	}
	pool[m.b.rng.IntN(len(pool))] = x
	return pool
}

// observe remembers values of a message the faulty replica received.
func (m *mutator) observe(msg pbft.Message) {
	switch x := msg.(type) {
	case *pbft.PrePrepareMsg:
		m.note(x.PrePrepare.View, x.PrePrepare.Seq, x.PrePrepare.Digest)
		if x.HasBatch && len(x.Batch) > 0 {
			m.batches = keep(m, m.batches, x.Envelope().Batch)
		}
	case *pbft.PrepareMsg:
		m.note(x.Prepare.View, x.Prepare.Seq, x.Prepare.Digest)
		m.prepares = keep(m, m.prepares, x.Signed)
	case *pbft.CommitMsg:
		m.note(x.Commit.View, x.Commit.Seq, x.Commit.Digest)
	case *pbft.CheckpointMsg:
		m.seqs = keep(m, m.seqs, x.Checkpoint.Seq)
		m.digests = keep(m, m.digests, x.Checkpoint.State)
		m.checkpoints = keep(m, m.checkpoints, x.Signed)
	case *pbft.ViewChangeMsg:
		m.views = keep(m, m.views, x.ViewChange.NewView)
		m.seqs = keep(m, m.seqs, x.ViewChange.StableSeq)
		m.viewChanges = keep(m, m.viewChanges, x.Signed)
		for _, c := range x.Proof {
			m.checkpoints = keep(m, m.checkpoints, c.Signed)
		}
		for _, c := range x.Certs {
			for _, p := range c.Prepares {
				m.prepares = keep(m, m.prepares, p.Signed)
			}
		}
	case *pbft.NewViewMsg:
		m.views = keep(m, m.views, x.NewView.View)
		for _, vc := range x.ViewChanges {
			m.viewChanges = keep(m, m.viewChanges, vc.Signed)
		}
	}
}

func (m *mutator) note(v, n uint64, d crypto.Digest) {
	m.views = keep(m, m.views, v)
	m.seqs = keep(m, m.seqs, n)
	m.digests = keep(m, m.digests, d)
}

// emit sends one of the core's outbound messages, mutated or not.
func (m *mutator) emit(out pbft.Outbound) {
	b := m.b
	to := b.recipients(out)
	m.rng = m.slotRNG(out.Env)
	if len(to) == 0 || !m.types[out.Env.Msg.Type] || m.rng.Float64() >= m.rate {
		b.w.sendOut(b.id, out)
		return
	}
	// Who gets the mutant is the slot's choice: a non-empty subset of the replicas; the
	// others get the original, or nothing.
	gets := m.rng.Perm(b.w.n)
	share := 1 + m.rng.IntN(b.w.n-1)
	orig := m.rng.IntN(2) == 0
	env, ok := m.mutate(out.Env)
	if !ok {
		b.w.sendOut(b.id, out)
		return
	}
	for _, r := range to {
		switch {
		case slicesIndex(gets, r) < share:
			b.sendSigned([]int{r}, env.Msg, env.Batch)
		case orig:
			b.sendSigned([]int{r}, out.Env.Msg, out.Env.Batch)
		}
	}
}

func slicesIndex(xs []int, x int) int {
	for i, y := range xs {
		if y == x {
			return i
		}
	}
	return len(xs)
}

// num moves x: mostly by one, sometimes by a checkpoint interval or a window, sometimes
// to a value seen elsewhere.
func (m *mutator) num(x uint64, seen []uint64) uint64 {
	rng, o := m.rng, m.b.w.opts
	var step uint64
	switch k := rng.IntN(20); {
	case k < 12:
		step = 1
	case k < 15:
		step = o.CheckpointInterval
	case k < 17:
		step = o.LogWindow
	case len(seen) > 0:
		return seen[rng.IntN(len(seen))]
	default:
		step = 2
	}
	if rng.IntN(2) == 0 || x < step {
		return x + step
	}
	return x - step
}

func (m *mutator) digest() crypto.Digest {
	switch k := m.rng.IntN(4); {
	case k < 2 && len(m.digests) > 0:
		return m.digests[m.rng.IntN(len(m.digests))]
	case k == 2:
		return pbft.BatchDigest(nil)
	default:
		var d crypto.Digest
		for i := range d {
			d[i] = byte(m.rng.Uint32())
		}
		return d
	}
}

// signed re-signs body as the faulty replica, keeping the batch (or another).
func (m *mutator) signed(t pbft.MsgType, body any, batch []pbft.Signed) (*pbft.Envelope, bool) {
	return &pbft.Envelope{Msg: pbft.Sign(m.b.signer, t, uint32(m.b.id), body), Batch: batch}, true
}

// mutate returns a well-formed variant of env, signed by the faulty replica.
func (m *mutator) mutate(env *pbft.Envelope) (*pbft.Envelope, bool) {
	rng := m.rng
	s := &env.Msg
	if s.From != uint32(m.b.id) {
		// A message of another replica it relays (a stable proof, a NEW-VIEW, a
		// pre-prepare): it cannot sign for them, so it relays another one it saw.
		switch {
		case s.Type == pbft.MsgCheckpoint && len(m.checkpoints) > 0:
			return &pbft.Envelope{Msg: m.checkpoints[rng.IntN(len(m.checkpoints))]}, true
		case s.Type == pbft.MsgNewView && len(m.viewChanges) > 0:
			return &pbft.Envelope{Msg: m.viewChanges[rng.IntN(len(m.viewChanges))]}, true
		}
		return nil, false
	}
	switch s.Type {
	case pbft.MsgPrePrepare:
		var pp pbft.PrePrepare
		if decodeBody(s.Body, &pp) != nil {
			return nil, false
		}
		batch := env.Batch
		switch rng.IntN(5) {
		case 0:
			pp.View = m.num(pp.View, m.views)
		case 1:
			pp.Seq = m.num(pp.Seq, m.seqs)
		case 2:
			pp.Digest = m.digest() // the batch no longer matches: refused unread
		case 3:
			// Another batch it saw, with its own digest: an equivocating proposal.
			if len(m.batches) == 0 {
				return nil, false
			}
			batch = m.batches[rng.IntN(len(m.batches))]
			ds := make([]crypto.Digest, len(batch))
			for i := range batch {
				ds[i] = pbft.RequestDigest(batch[i].Body)
			}
			pp.Digest = pbft.BatchDigest(ds)
		default:
			batch, pp.Digest = nil, pbft.BatchDigest(nil) // the null batch
		}
		return m.signed(pbft.MsgPrePrepare, pp, batch)
	case pbft.MsgPrepare, pbft.MsgCommit:
		var v pbft.Commit // Prepare and Commit share one layout
		if decodeBody(s.Body, &v) != nil {
			return nil, false
		}
		switch rng.IntN(3) {
		case 0:
			v.View = m.num(v.View, m.views)
		case 1:
			v.Seq = m.num(v.Seq, m.seqs)
		default:
			v.Digest = m.digest()
		}
		return m.signed(s.Type, v, nil)
	case pbft.MsgCheckpoint:
		var c pbft.Checkpoint
		if decodeBody(s.Body, &c) != nil {
			return nil, false
		}
		if rng.IntN(3) == 0 {
			c.Seq = m.num(c.Seq, m.seqs)
		} else {
			c.State = m.digest()
		}
		return m.signed(pbft.MsgCheckpoint, c, nil)
	case pbft.MsgViewChange:
		var vc pbft.ViewChange
		if decodeBody(s.Body, &vc) != nil {
			return nil, false
		}
		switch rng.IntN(6) {
		case 0:
			vc.NewView = m.num(vc.NewView, m.views)
		case 1:
			vc.StableSeq = m.num(vc.StableSeq, m.seqs)
		case 2:
			vc.CheckpointProof = m.list(vc.CheckpointProof, m.checkpoints)
		case 3:
			if len(vc.Prepared) == 0 {
				return nil, false
			}
			k := rng.IntN(len(vc.Prepared))
			vc.Prepared = append(append([]pbft.PreparedCert{}, vc.Prepared[:k]...), vc.Prepared[k+1:]...)
		case 4:
			if len(vc.Prepared) == 0 {
				return nil, false
			}
			certs := append([]pbft.PreparedCert{}, vc.Prepared...)
			k := rng.IntN(len(certs))
			certs[k].Prepares = m.list(certs[k].Prepares, m.prepares)
			vc.Prepared = certs
		default:
			// Certificates moved between seqs: one cert's pre-prepare with another's prepares.
			if len(vc.Prepared) < 2 {
				return nil, false
			}
			certs := append([]pbft.PreparedCert{}, vc.Prepared...)
			i, j := rng.IntN(len(certs)), rng.IntN(len(certs))
			certs[i].Prepares, certs[j].Prepares = certs[j].Prepares, certs[i].Prepares
			vc.Prepared = certs
		}
		return m.signed(pbft.MsgViewChange, vc, nil)
	case pbft.MsgNewView:
		var nv pbft.NewView
		if decodeBody(s.Body, &nv) != nil {
			return nil, false
		}
		switch rng.IntN(5) {
		case 0:
			nv.View = m.num(nv.View, m.views)
		case 1:
			nv.ViewChanges = m.list(nv.ViewChanges, m.viewChanges)
		case 2:
			// One re-proposal with another digest, signed by itself as the primary.
			if len(nv.PrePrepares) == 0 {
				return nil, false
			}
			pps := append([]pbft.Signed{}, nv.PrePrepares...)
			k := rng.IntN(len(pps))
			var pp pbft.PrePrepare
			if decodeBody(pps[k].Body, &pp) != nil {
				return nil, false
			}
			pp.Digest = m.digest()
			pps[k] = pbft.Sign(m.b.signer, pbft.MsgPrePrepare, uint32(m.b.id), pp)
			nv.PrePrepares = pps
		case 3:
			nv.PrePrepares = m.list(nv.PrePrepares, nil)
		default:
			// One more re-proposal, past max-s or below min-s.
			var pp pbft.PrePrepare
			if len(nv.PrePrepares) > 0 && decodeBody(nv.PrePrepares[len(nv.PrePrepares)-1].Body, &pp) != nil {
				return nil, false
			}
			pp.View, pp.Digest = nv.View, m.digest()
			pp.Seq = m.num(pp.Seq, m.seqs)
			nv.PrePrepares = append(append([]pbft.Signed{}, nv.PrePrepares...), pbft.Sign(m.b.signer, pbft.MsgPrePrepare, uint32(m.b.id), pp))
		}
		return m.signed(pbft.MsgNewView, nv, nil)
	case pbft.MsgStateResponse:
		var sr pbft.StateResponse
		if decodeBody(s.Body, &sr) != nil {
			return nil, false
		}
		switch rng.IntN(4) {
		case 0:
			sr.Seq = m.num(sr.Seq, m.seqs)
		case 1:
			sr.Proof = m.list(sr.Proof, m.checkpoints)
		case 2:
			sr.Chunk = uint32(m.num(uint64(sr.Chunk), nil))
		default:
			sr.Chunks = uint32(m.num(uint64(sr.Chunks), nil))
		}
		return m.signed(pbft.MsgStateResponse, sr, nil)
	case pbft.MsgStateRequest:
		var sr pbft.StateRequest
		if decodeBody(s.Body, &sr) != nil {
			return nil, false
		}
		sr.Seq = m.num(sr.Seq, m.seqs)
		return m.signed(pbft.MsgStateRequest, sr, nil)
	case pbft.MsgFetchBatch, pbft.MsgBatchReply:
		var f pbft.FetchBatch // BatchReply shares its layout
		if decodeBody(s.Body, &f) != nil {
			return nil, false
		}
		if rng.IntN(2) == 0 {
			f.Seq = m.num(f.Seq, m.seqs)
		} else {
			f.Digest = m.digest()
		}
		return m.signed(s.Type, f, env.Batch)
	}
	return nil, false
}

// list mutates a list of signed messages: shuffled, truncated, an entry duplicated, or
// an entry replaced by one from seen (a valid signature of another message).
func (m *mutator) list(xs, seen []pbft.Signed) []pbft.Signed {
	rng := m.rng
	out := append([]pbft.Signed{}, xs...)
	switch k := rng.IntN(4); {
	case k == 0 && len(out) > 1:
		rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	case k == 1 && len(out) > 0:
		out = out[:rng.IntN(len(out))]
	case k == 2 && len(out) > 0:
		out = append(out, out[rng.IntN(len(out))])
	case len(seen) > 0 && len(out) > 0:
		out[rng.IntN(len(out))] = seen[rng.IntN(len(seen))]
	case len(seen) > 0:
		out = append(out, seen[rng.IntN(len(seen))])
	}
	return out
}
