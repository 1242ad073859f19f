package sim

import (
	"slices"
	"strings"

	"github.com/pbftkit/pbft/crypto"
	"github.com/pbftkit/pbft/pbft"
)

// Red-team strategies (rt-...): written by an outside red team against the rules of
// quorums, checkpoints, state transfer, the NEW-VIEW and the timers. Each drives the
// real core and signs only with its own key; it may replay the signed messages of
// others verbatim. They are kept apart from Strategies so that "all" draws (and the
// seeds existing sweeps rely on) are unchanged.
//
//   - rt-slowloris: state transfer as a trap. It sends every replica, a few ticks
//     apart, unsolicited STATE-RESPONSE chunks of the highest checkpoint it holds a
//     valid 2f+1 proof for, claiming the largest chunk count allowed and serving a new
//     chunk index each time (random bytes). A replica that lags and has no transfer
//     going adopts it as its peer (an answer to a probe); as long as a new chunk comes
//     in before three quiet periods, it never gives up on it, and the digest is only
//     checked once every chunk is in. Its core's own state responses are withheld.
//   - rt-slowloris-mute: the same, and once some replica asks it for chunks (it is
//     hooked) it goes silent except for the drip: with n = 3f+1 the others have no
//     quorum without the hooked replica.
//   - rt-oldcerts: runs the protocol, collects every pre-prepare and prepare it sees,
//     and rewrites each VIEW-CHANGE its core sends: the lowest checkpoint it holds a
//     proof of (or none), and for every seq of that window the prepared certificate
//     from the LOWEST view it can assemble from others' signed messages (real, valid
//     certificates, stale ones), sent to half of the replicas while the other half
//     get its core's; and it keeps replaying committed pre-prepares (with batches) and
//     COMMIT quorums of older views to everybody. Aimed at the NEW-VIEW rule (highest
//     view wins, max-s), viewMaxS, the decided map and relayed pre-prepares.
//   - rt-oldcerts-primary: the same, and as the primary of a new view it also sends,
//     right after its NEW-VIEW, fresh pre-prepares of the view at max-s+1.. with stale
//     batches to half of the backups and the core's proposals to the others
//     (equivocation at the max-s edge), voting for both.
var RedTeamStrategies = []string{"rt-slowloris", "rt-slowloris-mute", "rt-oldcerts", "rt-oldcerts-primary"}

// KnownStrategy reports whether s names a strategy the simulator can run.
func KnownStrategy(s string) bool {
	return slices.Contains(Strategies, s) || slices.Contains(RedTeamStrategies, s) || slices.Contains(RedTeam3Strategies, s) || slices.Contains(RedTeam4Strategies, s)
}

// redTeam is the state of a red-team strategy.
type redTeam struct {
	b *byzantine
	// ckpts holds the CHECKPOINTs seen: seq -> digest -> sender -> signed.
	ckpts map[uint64]map[crypto.Digest]map[uint32]pbft.Signed

	// slowloris
	nextChunk []uint32 // per replica, the next chunk index to drip
	hooked    []bool   // per replica: it asked us for chunks of the drip
	mute      bool
	dripSeq   uint64
	ticks     uint64

	// oldcerts
	pps      map[slot]map[crypto.Digest]*pbft.Envelope         // pre-prepares seen, with batches
	prepares map[slot]map[crypto.Digest]map[uint32]pbft.Signed // prepares seen
	commits  map[slot]map[crypto.Digest]map[uint32]pbft.Signed // commits seen
}

func newRedTeam(b *byzantine) *redTeam {
	rt := &redTeam{b: b, ckpts: make(map[uint64]map[crypto.Digest]map[uint32]pbft.Signed),
		nextChunk: make([]uint32, b.w.n), hooked: make([]bool, b.w.n),
		pps:      make(map[slot]map[crypto.Digest]*pbft.Envelope),
		prepares: make(map[slot]map[crypto.Digest]map[uint32]pbft.Signed),
		commits:  make(map[slot]map[crypto.Digest]map[uint32]pbft.Signed)}
	return rt
}

func isRedTeam(s string) bool { return strings.HasPrefix(s, "rt-") }

// noteCheckpoint keeps one signed CHECKPOINT.
func (rt *redTeam) noteCheckpoint(s pbft.Signed, c pbft.Checkpoint) {
	byD := rt.ckpts[c.Seq]
	if byD == nil {
		byD = make(map[crypto.Digest]map[uint32]pbft.Signed)
		rt.ckpts[c.Seq] = byD
	}
	if byD[c.State] == nil {
		byD[c.State] = make(map[uint32]pbft.Signed)
	}
	byD[c.State][s.From] = s
	// Bound memory: forget seqs far below the highest.
	if len(rt.ckpts) > 64 {
		var seqs []uint64
		for n := range rt.ckpts {
			seqs = append(seqs, n)
		}
		slices.Sort(seqs)
		for _, n := range seqs[:len(seqs)-32] {
			delete(rt.ckpts, n)
		}
	}
}

// bestProof is the highest checkpoint it holds a 2f+1 proof of, signers in id order.
func (rt *redTeam) bestProof() (uint64, []pbft.Signed) {
	var best uint64
	var proof []pbft.Signed
	for n, byD := range rt.ckpts {
		if n <= best {
			continue
		}
		for _, bySender := range byD {
			if len(bySender) >= rt.b.w.quorum.Strong() {
				ids := make([]uint32, 0, len(bySender))
				for id := range bySender {
					ids = append(ids, id)
				}
				slices.Sort(ids)
				p := make([]pbft.Signed, 0, len(ids))
				for _, id := range ids {
					p = append(p, bySender[id])
				}
				best, proof = n, p
				break
			}
		}
	}
	return best, proof
}

// observe sees every verified message before the core does; true drops it.
func (rt *redTeam) observe(from int, m pbft.Message) bool {
	switch m := m.(type) {
	case *pbft.CheckpointMsg:
		rt.noteCheckpoint(m.Signed, m.Checkpoint)
	case *pbft.ViewChangeMsg:
		for _, c := range m.Proof {
			rt.noteCheckpoint(c.Signed, c.Checkpoint)
		}
		for _, c := range m.Certs {
			pp := c.PrePrepare
			rt.notePP(&pbft.Envelope{Msg: pp.Signed}, pp.PrePrepare)
			for _, p := range c.Prepares {
				rt.noteVote(rt.prepares, p.Signed, p.Prepare.View, p.Prepare.Seq, p.Prepare.Digest)
			}
		}
	case *pbft.StateResponseMsg:
		for _, c := range m.Proof {
			rt.noteCheckpoint(c.Signed, c.Checkpoint)
		}
	case *pbft.NewViewMsg:
		for _, vc := range m.ViewChanges {
			for _, c := range vc.Proof {
				rt.noteCheckpoint(c.Signed, c.Checkpoint)
			}
		}
	case *pbft.PrePrepareMsg:
		if m.HasBatch {
			rt.notePP(m.Envelope(), m.PrePrepare)
		}
	case *pbft.PrepareMsg:
		rt.noteVote(rt.prepares, m.Signed, m.Prepare.View, m.Prepare.Seq, m.Prepare.Digest)
	case *pbft.CommitMsg:
		rt.noteVote(rt.commits, m.Signed, m.Commit.View, m.Commit.Seq, m.Commit.Digest)
	case *pbft.StateRequestMsg:
		if rt.isSlowloris() {
			j := int(m.Signed.From)
			if m.StateRequest.Chunk > 0 && m.StateRequest.Seq == rt.dripSeq && j < rt.b.w.n {
				rt.hooked[j] = true
			}
			// Answer at once with the drip: a probe's answer makes us its peer.
			rt.drip(j)
			return true // the core would serve the real state or commit certificates
		}
	}
	return false
}

func (rt *redTeam) isSlowloris() bool {
	return rt.b.strategy == "rt-slowloris" || rt.b.strategy == "rt-slowloris-mute"
}

func (rt *redTeam) anyHooked() bool { return slices.Contains(rt.hooked, true) }

// tick runs before the core's tick.
func (rt *redTeam) tick() {
	rt.ticks++
	if rt.isOldCerts() && rt.ticks%7 == 0 {
		rt.replayOld()
	}
	if rt.isSlowloris() && rt.ticks%3 == 0 {
		for _, j := range rt.b.others() {
			rt.drip(j)
		}
	}
}

// drip sends replica j one new chunk of a state that does not exist, under a valid proof.
func (rt *redTeam) drip(j int) {
	if j == rt.b.id || j >= rt.b.w.n {
		return
	}
	seq, proof := rt.bestProof()
	if proof == nil {
		return
	}
	if seq != rt.dripSeq {
		rt.dripSeq = seq
	}
	chunk := rt.nextChunk[j]
	rt.nextChunk[j]++
	state := make([]byte, 256)
	for i := range state {
		state[i] = byte(rt.b.rng.Uint32())
	}
	resp := pbft.StateResponse{Seq: seq, Proof: proof, State: state, Chunk: chunk, Chunks: 1 << 16}
	rt.b.sendSigned([]int{j}, pbft.Sign(rt.b.signer, pbft.MsgStateResponse, uint32(rt.b.id), resp), nil)
}

// emit sees each outbound message of the core; true means it took care of it.
func (rt *redTeam) emit(out pbft.Outbound) bool {
	env := out.Env
	if env.Msg.Type == pbft.MsgCheckpoint && env.Msg.From == uint32(rt.b.id) {
		var c pbft.Checkpoint
		if decodeBody(env.Msg.Body, &c) == nil {
			rt.noteCheckpoint(env.Msg, c)
		}
	}
	if rt.isOldCerts() {
		if env.Msg.Type == pbft.MsgPrePrepare || env.Msg.Type == pbft.MsgPrepare || env.Msg.Type == pbft.MsgCommit {
			var v pbft.Commit
			if decodeBody(env.Msg.Body, &v) == nil {
				if env.Msg.Type == pbft.MsgPrePrepare {
					rt.notePP(env, pbft.PrePrepare(v))
				}
			}
		}
		switch env.Msg.Type {
		case pbft.MsgViewChange:
			if env.Msg.From == uint32(rt.b.id) {
				return rt.rewriteViewChange(out)
			}
		case pbft.MsgNewView:
			if rt.b.strategy == "rt-oldcerts-primary" && out.To.Kind == pbft.ToAllReplicas {
				rt.b.w.sendOut(rt.b.id, out)
				rt.edgeProposals(env)
				return true
			}
		}
	}
	if rt.isSlowloris() {
		if env.Msg.Type == pbft.MsgStateResponse {
			return true
		}
		if rt.b.strategy == "rt-slowloris-mute" && rt.anyHooked() && out.To.Kind != pbft.ToClient {
			return true
		}
	}
	return false
}

func (rt *redTeam) isOldCerts() bool {
	return rt.b.strategy == "rt-oldcerts" || rt.b.strategy == "rt-oldcerts-primary"
}

func (rt *redTeam) notePP(env *pbft.Envelope, pp pbft.PrePrepare) {
	k := slot{pp.View, pp.Seq}
	if rt.pps[k] == nil {
		rt.pps[k] = make(map[crypto.Digest]*pbft.Envelope)
	}
	if old := rt.pps[k][pp.Digest]; old == nil || (len(old.Batch) == 0 && len(env.Batch) > 0) {
		rt.pps[k][pp.Digest] = env
	}
	rt.gcOld()
}

func (rt *redTeam) noteVote(into map[slot]map[crypto.Digest]map[uint32]pbft.Signed, s pbft.Signed, view, seq uint64, d crypto.Digest) {
	k := slot{view, seq}
	if into[k] == nil {
		into[k] = make(map[crypto.Digest]map[uint32]pbft.Signed)
	}
	if into[k][d] == nil {
		into[k][d] = make(map[uint32]pbft.Signed)
	}
	into[k][d][s.From] = s
}

// gcOld bounds memory: slots far below the highest seq seen go.
func (rt *redTeam) gcOld() {
	if len(rt.pps) < 512 {
		return
	}
	var hi uint64
	for k := range rt.pps {
		hi = max(hi, k.seq)
	}
	lim := 4 * rt.b.w.opts.LogWindow
	for k := range rt.pps {
		if k.seq+lim < hi {
			delete(rt.pps, k)
			delete(rt.prepares, k)
			delete(rt.commits, k)
		}
	}
}

// cert assembles a valid prepared certificate for (view, seq, d) from what it saw.
func (rt *redTeam) cert(k slot, d crypto.Digest) (pbft.PreparedCert, bool) {
	env := rt.pps[k][d]
	if env == nil {
		return pbft.PreparedCert{}, false
	}
	primary := uint32(rt.b.w.quorum.Primary(k.view))
	if env.Msg.From != primary {
		return pbft.PreparedCert{}, false
	}
	var ps []pbft.Signed
	ids := make([]uint32, 0)
	for id := range rt.prepares[k][d] {
		if id != primary {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		ps = append(ps, rt.prepares[k][d][id])
	}
	// Its own prepare may be missing from what it saw: add one (it may sign anything).
	if !slices.Contains(ids, uint32(rt.b.id)) && uint32(rt.b.id) != primary {
		ps = append(ps, pbft.Sign(rt.b.signer, pbft.MsgPrepare, uint32(rt.b.id), pbft.Prepare{View: k.view, Seq: k.seq, Digest: d}))
	}
	if len(ps) < rt.b.w.quorum.Prepared() {
		return pbft.PreparedCert{}, false
	}
	return pbft.PreparedCert{PrePrepare: env.Msg, Prepares: ps[:rt.b.w.quorum.Prepared()]}, true
}

// rewriteViewChange sends half of the replicas a VIEW-CHANGE built from stale
// certificates and the lowest checkpoint it can prove, the others its core's.
func (rt *redTeam) rewriteViewChange(out pbft.Outbound) bool {
	var vc pbft.ViewChange
	if decodeBody(out.Env.Msg.Body, &vc) != nil {
		return false
	}
	// The lowest provable checkpoint at or below the core's (or 0).
	stable := uint64(0)
	var proof []pbft.Signed
	if rt.b.rng.IntN(2) == 0 {
		stable, proof = vc.StableSeq, vc.CheckpointProof
		for n, byD := range rt.ckpts {
			if n >= stable || n == 0 {
				continue
			}
			for _, bySender := range byD {
				if len(bySender) >= rt.b.w.quorum.Strong() {
					ids := make([]uint32, 0, len(bySender))
					for id := range bySender {
						ids = append(ids, id)
					}
					slices.Sort(ids)
					p := make([]pbft.Signed, 0, len(ids))
					for _, id := range ids {
						p = append(p, bySender[id])
					}
					stable, proof = n, p
					break
				}
			}
		}
	}
	stale := pbft.ViewChange{NewView: vc.NewView, StableSeq: stable, CheckpointProof: proof}
	L := rt.b.w.opts.LogWindow
	for n := stable + 1; n <= stable+L; n++ {
		bestView := uint64(1 << 62)
		var best pbft.PreparedCert
		found := false
		for k, byD := range rt.pps {
			if k.seq != n || k.view >= vc.NewView || k.view > bestView {
				continue
			}
			for d := range byD {
				if c, ok := rt.cert(k, d); ok && (!found || k.view < bestView) {
					best, bestView, found = c, k.view, true
				}
			}
		}
		if found {
			stale.Prepared = append(stale.Prepared, best)
		}
	}
	s := pbft.Sign(rt.b.signer, pbft.MsgViewChange, uint32(rt.b.id), stale)
	ga, gb := rt.b.halves()
	to := rt.b.recipients(out)
	for _, j := range to {
		if slices.Contains(ga, j) {
			rt.b.sendSigned([]int{j}, s, nil)
		} else if slices.Contains(gb, j) {
			rt.b.sendSigned([]int{j}, out.Env.Msg, nil)
		}
	}
	return true
}

// replayOld resends a few committed pre-prepares of older views, with their batches,
// and the COMMITs it saw for them, to random replicas.
func (rt *redTeam) replayOld() {
	view := rt.b.core.Status().View
	var keys []slot
	for k := range rt.pps {
		if k.view < view || rt.b.rng.IntN(4) == 0 {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return
	}
	slices.SortFunc(keys, func(a, c slot) int {
		if a.view != c.view {
			return int(a.view) - int(c.view)
		}
		return int(a.seq) - int(c.seq)
	})
	for i := 0; i < 3; i++ {
		k := keys[rt.b.rng.IntN(len(keys))]
		to := rt.b.others()[rt.b.rng.IntN(rt.b.w.n-1)]
		for d, env := range rt.pps[k] {
			if len(env.Batch) == 0 && d != pbft.BatchDigest(nil) {
				continue
			}
			rt.b.sendSigned([]int{to}, env.Msg, env.Batch)
			for _, c := range rt.commits[k][d] {
				rt.b.sendSigned([]int{to}, c, nil)
			}
			// Its own commit for it, in the view it is in now too: a commit
			// certificate mixing views.
			rt.b.sendSigned([]int{to}, pbft.Sign(rt.b.signer, pbft.MsgCommit, uint32(rt.b.id), pbft.Commit{View: view, Seq: k.seq, Digest: d}), nil)
		}
	}
}

// edgeProposals: right after its NEW-VIEW, fresh pre-prepares of the view at max-s
// and just above it, with stale batches, to half of the backups; it votes for them.
func (rt *redTeam) edgeProposals(env *pbft.Envelope) {
	var nv pbft.NewView
	if decodeBody(env.Msg.Body, &nv) != nil {
		return
	}
	maxS := rt.b.core.Status().LowMark
	for _, s := range nv.PrePrepares {
		var pp pbft.PrePrepare
		if decodeBody(s.Body, &pp) == nil {
			maxS = max(maxS, pp.Seq)
		}
	}
	var batches [][]pbft.Signed
	for _, byD := range rt.pps {
		for _, e := range byD {
			if len(e.Batch) > 0 {
				batches = append(batches, e.Batch)
			}
		}
	}
	ga, _ := rt.b.halves()
	for n := max(maxS, 1); n <= maxS+2; n++ {
		var batch []pbft.Signed
		if len(batches) > 0 {
			batch = batches[rt.b.rng.IntN(len(batches))]
		}
		ds := make([]crypto.Digest, len(batch))
		for i := range batch {
			ds[i] = pbft.RequestDigest(batch[i].Body)
		}
		pp := pbft.PrePrepare{View: nv.View, Seq: n, Digest: pbft.BatchDigest(ds)}
		rt.b.sendSigned(ga, pbft.Sign(rt.b.signer, pbft.MsgPrePrepare, uint32(rt.b.id), pp), batch)
		rt.b.sendSigned(ga, pbft.Sign(rt.b.signer, pbft.MsgCommit, uint32(rt.b.id), pbft.Commit(pp)), nil)
	}
}
