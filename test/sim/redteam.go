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
var RedTeamStrategies = []string{"rt-slowloris", "rt-slowloris-mute"}

// KnownStrategy reports whether s names a strategy the simulator can run.
func KnownStrategy(s string) bool {
	return slices.Contains(Strategies, s) || slices.Contains(RedTeamStrategies, s)
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
}

func newRedTeam(b *byzantine) *redTeam {
	rt := &redTeam{b: b, ckpts: make(map[uint64]map[crypto.Digest]map[uint32]pbft.Signed),
		nextChunk: make([]uint32, b.w.n), hooked: make([]bool, b.w.n)}
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
