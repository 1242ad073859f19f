package sim

import (
	"encoding/binary"

	"github.com/pbftkit/pbft/crypto"
	"github.com/pbftkit/pbft/pbft"
)

// The strategies in this file each aim at one rule of checkpoints, watermarks and the
// NEW-VIEW (PBFT TOCS §4.4-4.5). They run a real core and sign only with their own key:
//
//   - lying-checkpoint: every CHECKPOINT it sends names a false state digest. Its true
//     checkpoint still appears, correctly signed, in the proofs its core builds (view
//     changes, state responses, help to laggards), where it counts towards stability.
//   - lying-checkpoint-half: per checkpoint, the true digest to one half of the replicas
//     and a false one to the other.
//   - repropose: lies in its checkpoints like lying-checkpoint (which keeps correct
//     replicas' low watermarks behind its own), and as the primary of a new view sends
//     fresh PRE-PREPAREs of that view for sequence numbers at or below its NEW-VIEW's
//     stable checkpoint, and for those the NEW-VIEW already fills, with other batches.
//   - watermark-edge: runs the protocol, and sends correctly signed votes, checkpoints,
//     pre-prepares (as primary) and state requests at and just past the low and high
//     watermarks of its own window, with digests it saw, the null digest or random ones.

// lieDigest is the false state digest a lying replica signs for checkpoint n: the same
// for every send, so its lie is consistent (the worst case for a per-sender vote slot).
func (b *byzantine) lieDigest(n uint64) crypto.Digest {
	var buf [16]byte
	binary.BigEndian.PutUint64(buf[:8], uint64(b.id))
	binary.BigEndian.PutUint64(buf[8:], n)
	return crypto.Hash([]byte("lying checkpoint"), buf[:])
}

// lieInCheckpoint rewrites one of its own outgoing CHECKPOINTs: lying-checkpoint and
// repropose lie to everybody; lying-checkpoint-half tells each half of the replicas
// (drawn once per checkpoint) a different digest. It reports whether it took the send.
func (b *byzantine) lieInCheckpoint(out pbft.Outbound) bool {
	env := out.Env
	if env.Msg.Type != pbft.MsgCheckpoint || env.Msg.From != uint32(b.id) {
		return false
	}
	var c pbft.Checkpoint
	if decodeBody(env.Msg.Body, &c) != nil {
		return false
	}
	lie := pbft.Sign(b.signer, pbft.MsgCheckpoint, uint32(b.id), pbft.Checkpoint{Seq: c.Seq, State: b.lieDigest(c.Seq)})
	truth := func(to int) bool { return false }
	if b.strategy == "lying-checkpoint-half" {
		told, ok := b.truthTo[c.Seq]
		if !ok {
			told = make(map[int]bool)
			ga, _ := b.halves()
			for _, i := range ga {
				told[i] = true
			}
			b.truthTo[c.Seq] = told
		}
		truth = func(to int) bool { return told[to] }
	}
	for _, to := range b.recipients(out) {
		if truth(to) {
			b.sendSigned([]int{to}, env.Msg, nil)
		} else {
			b.sendSigned([]int{to}, lie, nil)
		}
	}
	return true
}

// recipients lists the replicas an outbound message of the core goes to.
func (b *byzantine) recipients(out pbft.Outbound) []int {
	switch out.To.Kind {
	case pbft.ToAllReplicas:
		return b.others()
	case pbft.ToReplica:
		if int(out.To.Replica) < b.w.n && int(out.To.Replica) != b.id {
			return []int{int(out.To.Replica)}
		}
	}
	return nil
}

// rewriteHistory is repropose's move once its core, as the primary of view v, sent
// the NEW-VIEW: PRE-PREPAREs of view v for every seq from a window below the NEW-VIEW's
// checkpoint up to its max-s, each with a batch other than the one decided there (the
// null batch, or requests it saw in another order). They are kept and resent while it
// is primary of v, since the network loses messages.
func (b *byzantine) rewriteHistory(env *pbft.Envelope) {
	var nv pbft.NewView
	if decodeBody(env.Msg.Body, &nv) != nil {
		return
	}
	st := b.core.Status()
	if st.View != nv.View || st.Primary != pbft.ReplicaID(b.id) {
		return
	}
	maxS := st.LowMark
	for _, s := range nv.PrePrepares {
		var pp pbft.PrePrepare
		if decodeBody(s.Body, &pp) == nil {
			maxS = max(maxS, pp.Seq)
		}
	}
	from := uint64(1)
	if st.LowMark > b.w.opts.LogWindow {
		from = st.LowMark - b.w.opts.LogWindow + 1
	}
	b.rewrites = b.rewrites[:0]
	b.rewriteView = nv.View
	for n := from; n <= maxS; n++ {
		batch := b.otherBatch(n)
		digests := make([]crypto.Digest, len(batch))
		for i := range batch {
			digests[i] = pbft.RequestDigest(batch[i].Body)
		}
		pp := pbft.PrePrepare{View: nv.View, Seq: n, Digest: pbft.BatchDigest(digests)}
		b.rewrites = append(b.rewrites, &pbft.Envelope{Msg: pbft.Sign(b.signer, pbft.MsgPrePrepare, uint32(b.id), pp), Batch: batch})
	}
	b.resendRewrites()
}

// otherBatch is a batch for a re-proposal at n: null on even seqs, and otherwise a few
// requests it saw, reversed (a batch no correct primary proposed there).
func (b *byzantine) otherBatch(n uint64) []pbft.Signed {
	if n%2 == 0 || len(b.reqs) == 0 {
		return nil
	}
	k := min(len(b.reqs), 1+int(n)%3)
	out := make([]pbft.Signed, 0, k)
	for i := len(b.reqs) - 1; i >= len(b.reqs)-k; i-- {
		out = append(out, b.reqs[i].Signed)
	}
	return out
}

// resendRewrites sends the re-proposals again while this replica is primary of the
// view it made them for.
func (b *byzantine) resendRewrites() {
	st := b.core.Status()
	if len(b.rewrites) == 0 || st.View != b.rewriteView || st.Primary != pbft.ReplicaID(b.id) || !st.Active {
		return
	}
	for _, env := range b.rewrites {
		b.sendSigned(b.others(), env.Msg, env.Batch)
	}
}

// noteSeen keeps the digests and requests a replica saw, for strategies that reuse them.
func (b *byzantine) noteSeen(m pbft.Message) {
	switch m := m.(type) {
	case *pbft.RequestMsg:
		if len(b.reqs) < 256 {
			b.reqs = append(b.reqs, m)
		} else {
			b.reqs[b.rng.IntN(len(b.reqs))] = m
		}
	case *pbft.PrePrepareMsg:
		b.addDigest(m.PrePrepare.Digest)
	case *pbft.PrepareMsg:
		b.addDigest(m.Prepare.Digest)
	case *pbft.CheckpointMsg:
		b.addDigest(m.Checkpoint.State)
	}
}

func (b *byzantine) addDigest(d crypto.Digest) {
	if len(b.digests) < 64 {
		b.digests = append(b.digests, d)
	} else {
		b.digests[b.rng.IntN(len(b.digests))] = d
	}
}

// edgeDigest is a digest for a message at a watermark: one it saw, the null batch's,
// or random.
func (b *byzantine) edgeDigest() crypto.Digest {
	switch k := b.rng.IntN(3); {
	case k == 0 && len(b.digests) > 0:
		return b.digests[b.rng.IntN(len(b.digests))]
	case k == 1:
		return pbft.BatchDigest(nil)
	default:
		return b.randomDigest()
	}
}

// sprayEdges sends a few correctly signed messages at the edges of its own window
// (h, h+1, h+L-1, h+L, h+L+1, h+L+2, the next checkpoints past h+L) to random replicas,
// whose windows may sit a little lower or higher.
func (b *byzantine) sprayEdges() {
	st := b.core.Status()
	h, L, K := st.LowMark, b.w.opts.LogWindow, b.w.opts.CheckpointInterval
	seqs := []uint64{h, h + 1, h + L - 1, h + L, h + L + 1, h + L + 2}
	ckpts := []uint64{h, h + K, h + L, h + L + K, h + 2*L}
	id := uint32(b.id)
	for k := 1 + b.rng.IntN(2); k > 0; k-- {
		to := b.others()[b.rng.IntN(b.w.n-1)]
		n := seqs[b.rng.IntN(len(seqs))]
		v := st.View
		if b.rng.IntN(4) == 0 {
			v++
		}
		var s pbft.Signed
		var batch []pbft.Signed
		switch b.rng.IntN(5) {
		case 0:
			s = pbft.Sign(b.signer, pbft.MsgPrepare, id, pbft.Prepare{View: v, Seq: n, Digest: b.edgeDigest()})
		case 1:
			s = pbft.Sign(b.signer, pbft.MsgCommit, id, pbft.Commit{View: v, Seq: n, Digest: b.edgeDigest()})
		case 2:
			c := ckpts[b.rng.IntN(len(ckpts))]
			d := b.lieDigest(c)
			if b.rng.IntN(2) == 0 {
				d = b.edgeDigest()
			}
			s = pbft.Sign(b.signer, pbft.MsgCheckpoint, id, pbft.Checkpoint{Seq: c, State: d})
		case 3:
			if st.Primary != pbft.ReplicaID(b.id) {
				s = pbft.Sign(b.signer, pbft.MsgStateRequest, id, pbft.StateRequest{Seq: n})
				break
			}
			batch = b.otherBatch(n)
			digests := make([]crypto.Digest, len(batch))
			for i := range batch {
				digests[i] = pbft.RequestDigest(batch[i].Body)
			}
			s = pbft.Sign(b.signer, pbft.MsgPrePrepare, id, pbft.PrePrepare{View: st.View, Seq: n, Digest: pbft.BatchDigest(digests)})
		default:
			s = pbft.Sign(b.signer, pbft.MsgFetchBatch, id, pbft.FetchBatch{Seq: n, Digest: b.edgeDigest()})
		}
		b.sendSigned([]int{to}, s, batch)
	}
}
