package sim

import (
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/pbftkit/pbft/app/kvstore"
	"github.com/pbftkit/pbft/crypto"
	"github.com/pbftkit/pbft/pbft"
	"github.com/pbftkit/pbft/pbft/driver"
)

func decodeBody(b []byte, v any) error { return pbft.Unmarshal(b, v) }

// byzantine is a faulty replica. Most strategies drive a real core (so they look
// correct enough to matter) and corrupt what it sends; silent and garbage do not.
//
//   - silent: never sends anything.
//   - bad-signature: runs correctly but every signature it sends is corrupted.
//   - garbage: sprays random bytes, random well-formed signed messages and small
//     mutations (view or seq off by one, another digest) of messages it saw.
//   - replay: runs correctly and also resends old frames it received, from earlier
//     seqs, views and checkpoints, to random replicas.
//   - collude: runs correctly and also votes (prepare and commit) for every proposal
//     and vote it sees, whatever the digest.
//   - view-change-spam: runs correctly and also sends VIEW-CHANGEs for far-future views.
//   - silent-primary: the primary of view 0, silent.
//   - slow-primary: runs correctly, but as primary holds each pre-prepare until just
//     before the backups' timeout would fire (the Aardvark attack).
//   - censor: runs correctly, but as primary ignores one client's requests.
//   - equivocate: as primary, sends different batches for one seq to different halves of
//     the backups and commits each; as backup, votes for every version it sees and
//     sends conflicting votes (another digest) to half of the replicas.
//   - lying-checkpoint, lying-checkpoint-half, repropose, watermark-edge: aimed at the
//     rules of checkpoints, watermarks and the NEW-VIEW (byzantine_rules.go).
//   - mutate: runs correctly, and mutates a seeded share of what it sends in
//     well-formed ways, ByzzFuzz style (mutate.go).
//
// All but silent, silent-primary and bad-signature also answer clients with one shared
// forged result, and those that run the protocol serve state transfers with a valid
// proof but tampered state.
type byzantine struct {
	w        *world
	id       int
	strategy string
	signer   pbft.Signer
	core     *pbft.Replica
	drv      *driver.Driver
	app      *kvstore.Store
	verifier pbft.Verifier
	rng      *rand.Rand

	history [][]byte                 // replay: frames received
	voted   map[voteKey]bool         // collude: votes already cast
	planned map[slot]bool            // collude: slots voted by the coalition's plan
	seen    []pbft.Message           // garbage: messages to mutate
	reqs    []*pbft.RequestMsg       // garbage: requests to put in forged batches
	byzCkpt map[uint64]crypto.Digest // garbage: its own checkpoint lie per seq
	slow    []held                   // slow-primary: pre-prepares waiting to be sent
	release map[uint64]uint64        // slow-primary: per seq, the tick its pre-prepare may go
	ticks   uint64

	truthTo     map[uint64]map[int]bool // lying-checkpoint-half: per seq, who hears the truth
	rewrites    []*pbft.Envelope        // repropose: its re-proposals for rewriteView
	rewriteView uint64
	digests     []crypto.Digest // watermark-edge: digests it saw
	mut         *mutator        // mutate
	rt          *redTeam        // rt-... (redteam.go)
	rt3         *redTeam3       // rt3-... (redteam3.go)
	rt4         *redTeam4       // rt4-... (redteam4.go)
}

// slot is a (view, seq) pair.
type slot struct{ view, seq uint64 }

type voteKey struct {
	view, seq uint64
	digest    crypto.Digest
}

const historyMax = 4096

func newByzantine(w *world, id int, strategy string, cfg pbft.Config) (*byzantine, error) {
	b := &byzantine{
		w: w, id: id, strategy: strategy, signer: cfg.Signer, verifier: w.verifier(),
		rng:     rand.New(rand.NewPCG(w.opts.Seed, uint64(id)+1)),
		release: make(map[uint64]uint64),
		voted:   make(map[voteKey]bool), planned: make(map[slot]bool), byzCkpt: make(map[uint64]crypto.Digest),
		truthTo: make(map[uint64]map[int]bool),
	}
	if strategy == "mutate" {
		b.mut = newMutator(b)
	}
	if isRedTeam(strategy) {
		b.rt = newRedTeam(b)
	}
	if isRedTeam3(strategy) || strings.HasPrefix(strategy, "rt4-earlycommit") {
		b.rt3 = newRedTeam3(b)
	}
	if isRedTeam4(strategy) {
		w.coalition4()
		b.rt4 = &redTeam4{b: b}
	}
	switch strategy {
	case "silent", "silent-primary", "garbage":
	default:
		core, err := pbft.NewReplica(cfg)
		if err != nil {
			return nil, err
		}
		b.core, b.app = core, kvstore.New()
		b.drv = driver.New(core, noDisk{}, byzTransport{b}, driver.Observer{})
	}
	return b, nil
}

func (b *byzantine) receive(from int, frame []byte) {
	if b.strategy == "silent" || b.strategy == "silent-primary" {
		return
	}
	if b.strategy == "replay" {
		if len(b.history) < historyMax {
			b.history = append(b.history, frame)
		} else {
			b.history[b.rng.IntN(historyMax)] = frame
		}
	}
	env, err := pbft.DecodeEnvelope(frame, b.w.limits)
	if err != nil {
		return
	}
	m, err := b.verifier.Open(env)
	if err != nil {
		return
	}
	if rm, ok := m.(*pbft.RequestMsg); ok && b.strategy == "censor" && rm.Request.Client == censored && b.isPrimary() {
		return // as primary, it never orders the censored client's requests
	}
	if rm, ok := m.(*pbft.RequestMsg); ok && b.strategy != "bad-signature" {
		b.lieToClient(rm)
	}
	switch b.strategy {
	case "garbage":
		b.remember(m)
		return
	case "repropose", "watermark-edge":
		b.noteSeen(m)
	case "mutate":
		b.mut.observe(m)
	case "collude":
		b.collude(m)
	case "equivocate":
		// A backup's equivocation: it votes for every version of a proposal it sees,
		// on top of the conflicting votes emit sends.
		if b.w.quorum.Primary(0) != pbft.ReplicaID(b.id) {
			b.collude(m)
		}
	}
	if b.rt != nil && b.rt.observe(from, m) {
		return
	}
	if b.rt3 != nil && b.rt3.observe(from, m) {
		return
	}
	b.core.Step(m)
	b.flush()
}

func (b *byzantine) tick() {
	switch b.strategy {
	case "silent", "silent-primary":
		return
	case "slow-primary":
		b.releaseSlow()
	case "view-change-spam":
		if b.rng.IntN(5) == 0 {
			// A signed, well-formed VIEW-CHANGE for a far-future view: one replica
			// alone must not move anybody (the f+1 rule needs a correct one too).
			v := b.core.Status().View + 1000 + uint64(b.rng.IntN(1000))
			vc := pbft.Sign(b.signer, pbft.MsgViewChange, uint32(b.id), pbft.ViewChange{NewView: v})
			b.sendSigned(b.others(), vc, nil)
		}
	case "garbage":
		for k := b.rng.IntN(3); k > 0; k-- {
			b.spray()
		}
		return
	case "replay":
		for k := b.rng.IntN(3); k > 0 && len(b.history) > 0; k-- {
			b.w.send(b.id, b.rng.IntN(b.w.n), b.history[b.rng.IntN(len(b.history))])
		}
	case "repropose":
		if b.ticks++; b.ticks%10 == 0 {
			b.resendRewrites()
		}
	case "watermark-edge":
		if b.rng.IntN(3) == 0 {
			b.sprayEdges()
		}
	}
	if b.rt != nil {
		b.rt.tick()
	}
	if b.rt3 != nil {
		b.rt3.tick()
	}
	b.core.Tick()
	b.flush()
}

// flush runs the core's output through the same driver as a correct replica (its
// records are kept nowhere: a faulty replica need not remember), and the strategy
// rewrites what leaves.
func (b *byzantine) flush() {
	_ = b.drv.Run(b.app)
}

// byzTransport hands what a faulty replica's core sends to its strategy.
type byzTransport struct{ b *byzantine }

func (t byzTransport) Send(out *pbft.Outbound) { t.b.emit(*out) }

// noDisk forgets every record.
type noDisk struct{}

func (noDisk) Append([]pbft.Record) error   { return nil }
func (noDisk) Compact([]pbft.Record) error  { return nil }
func (noDisk) Load() ([]pbft.Record, error) { return nil, nil }

func (b *byzantine) emit(out pbft.Outbound) {
	env := out.Env
	if b.rt != nil && b.rt.emit(out) {
		return
	}
	if b.rt3 != nil && b.rt3.emit(out) {
		return
	}
	if b.rt4 != nil && b.rt4.emit(out) {
		return
	}
	switch b.strategy {
	case "bad-signature":
		if len(env.Msg.Sig) > 0 {
			c := *env
			c.Msg.Sig = append([]byte(nil), env.Msg.Sig...)
			c.Msg.Sig[b.rng.IntN(len(c.Msg.Sig))] ^= byte(1 + b.rng.IntN(255))
			out.Env = &c
		}
	}
	if b.strategy == "mutate" {
		b.mut.emit(out)
		return
	}
	if env.Msg.Type == pbft.MsgStateResponse && b.strategy != "bad-signature" {
		b.tamperState(out)
		return
	}
	switch b.strategy {
	case "lying-checkpoint", "lying-checkpoint-half":
		if b.lieInCheckpoint(out) {
			return
		}
	case "repropose":
		if b.lieInCheckpoint(out) {
			return
		}
		if env.Msg.Type == pbft.MsgNewView && out.To.Kind == pbft.ToAllReplicas {
			b.w.sendOut(b.id, out)
			b.rewriteHistory(env)
			return
		}
	case "slow-primary":
		var pp pbft.PrePrepare
		if env.Msg.Type == pbft.MsgPrePrepare && decodeBody(env.Msg.Body, &pp) == nil {
			// Just under the backups' timeout: the Aardvark attack. The primary is never
			// caught, and throughput falls to what one batch per timeout allows. Every
			// send of the pre-prepare (retransmissions too) waits for its time.
			at, ok := b.release[pp.Seq]
			if !ok {
				at = b.ticks + uint64(b.w.opts.ViewChangeTicks) - slowMargin
				b.release[pp.Seq] = at
			}
			if b.ticks < at {
				if out.To.Kind == pbft.ToAllReplicas {
					b.slow = append(b.slow, held{out: out, at: at})
				}
				return
			}
		}
	case "equivocate":
		switch env.Msg.Type {
		case pbft.MsgPrePrepare:
			if out.To.Kind == pbft.ToAllReplicas {
				b.equivocatePrePrepare(env)
				return
			}
		case pbft.MsgPrepare, pbft.MsgCommit:
			var v pbft.Commit
			if decodeBody(env.Msg.Body, &v) == nil && b.w.coalition[slot{v.View, v.Seq}] != nil {
				return // the coalition's plan votes for this slot instead
			}
			if out.To.Kind == pbft.ToAllReplicas {
				b.equivocateVote(env)
				return
			}
		}
	}
	b.w.sendOut(b.id, out)
}

// tamperState serves a state response with the real 2f+1 proof but altered state: in a
// whole state, the application snapshot or the client table changed; in a chunk, one
// bit flipped. A correct replica must notice the digest does not match and ask another
// peer.
func (b *byzantine) tamperState(out pbft.Outbound) {
	var resp pbft.StateResponse
	if decodeBody(out.Env.Msg.Body, &resp) != nil {
		return
	}
	var cs pbft.CheckpointState
	switch {
	case resp.Chunks <= 1 && decodeBody(resp.State, &cs) == nil:
		if b.rng.IntN(2) == 0 && len(cs.Clients) > 0 {
			cs.Clients[b.rng.IntN(len(cs.Clients))].Low++ // forget a timestamp: a request could run twice
		} else if len(cs.App) > 0 {
			cs.App = append([]byte(nil), cs.App...)
			cs.App[b.rng.IntN(len(cs.App))] ^= 1
		} else {
			cs.App = []byte{0}
		}
		resp.State = pbft.Marshal(cs)
	case len(resp.State) > 0:
		resp.State = append([]byte(nil), resp.State...)
		resp.State[b.rng.IntN(len(resp.State))] ^= 1 << b.rng.IntN(8)
	}
	out.Env = &pbft.Envelope{Msg: pbft.Sign(b.signer, pbft.MsgStateResponse, uint32(b.id), resp)}
	b.w.sendOut(b.id, out)
}

// censored is the client a censoring primary ignores.
const censored = pbft.ClientID(1)

// slowMargin is how many ticks before the backups' timeout a slow primary proposes.
const slowMargin = 5

type held struct {
	out pbft.Outbound
	at  uint64
}

func (b *byzantine) isPrimary() bool {
	st := b.core.Status()
	return st.Primary == pbft.ReplicaID(b.id) && st.Active
}

func (b *byzantine) others() []int {
	out := make([]int, 0, b.w.n-1)
	for i := 0; i < b.w.n; i++ {
		if i != b.id {
			out = append(out, i)
		}
	}
	return out
}

// releaseSlow sends the pre-prepares a slow primary held once their time came.
func (b *byzantine) releaseSlow() {
	b.ticks++
	keep := b.slow[:0]
	for _, h := range b.slow {
		if h.at <= b.ticks {
			b.w.sendOut(b.id, h.out)
		} else {
			keep = append(keep, h)
		}
	}
	b.slow = keep
}

// halves splits the other replicas at random into two non-empty groups.
func (b *byzantine) halves() (a, c []int) {
	for _, i := range b.rng.Perm(b.w.n) {
		if i == b.id {
			continue
		}
		if len(a) <= len(c) {
			a = append(a, i)
		} else {
			c = append(c, i)
		}
	}
	return a, c
}

func (b *byzantine) sendSigned(to []int, s pbft.Signed, batch []pbft.Signed) {
	frame := pbft.EncodeEnvelope(&pbft.Envelope{Msg: s, Batch: batch})
	for _, i := range to {
		b.w.send(b.id, i, frame)
	}
}

// equivocatePrePrepare sends the core's batch to one half of the backups and another
// batch (the same requests reversed, or the null batch) for the same seq to the other
// half, then commits each version to its half.
func (b *byzantine) equivocatePrePrepare(env *pbft.Envelope) {
	var pp pbft.PrePrepare
	if decodeBody(env.Msg.Body, &pp) != nil {
		return
	}
	alt := make([]pbft.Signed, 0, len(env.Batch))
	if len(env.Batch) > 1 {
		for i := len(env.Batch) - 1; i >= 0; i-- {
			alt = append(alt, env.Batch[i])
		}
	}
	digests := make([]crypto.Digest, len(alt))
	for i := range alt {
		digests[i] = pbft.RequestDigest(alt[i].Body)
	}
	ppB := pp
	ppB.Digest = pbft.BatchDigest(digests)
	ga, gb := b.halves()
	plan := make(map[int]crypto.Digest, b.w.n)
	for _, i := range ga {
		plan[i] = pp.Digest
	}
	for _, i := range gb {
		plan[i] = ppB.Digest
	}
	b.w.coalition[slot{pp.View, pp.Seq}] = plan
	b.sendSigned(ga, env.Msg, env.Batch)
	b.sendSigned(gb, pbft.Sign(b.signer, pbft.MsgPrePrepare, uint32(b.id), ppB), alt)
	b.sendSigned(ga, pbft.Sign(b.signer, pbft.MsgCommit, uint32(b.id), pbft.Commit{View: pp.View, Seq: pp.Seq, Digest: pp.Digest}), nil)
	b.sendSigned(gb, pbft.Sign(b.signer, pbft.MsgCommit, uint32(b.id), pbft.Commit{View: pp.View, Seq: pp.Seq, Digest: ppB.Digest}), nil)
}

// equivocateVote sends the true vote to one half and a vote for another digest to the other.
func (b *byzantine) equivocateVote(env *pbft.Envelope) {
	var v pbft.Commit // Prepare and Commit share one layout
	if decodeBody(env.Msg.Body, &v) != nil {
		return
	}
	ga, gb := b.halves()
	b.sendSigned(ga, env.Msg, nil)
	v.Digest = b.randomDigest()
	b.sendSigned(gb, pbft.Sign(b.signer, env.Msg.Type, uint32(b.id), v), nil)
}

func (b *byzantine) randomDigest() crypto.Digest {
	var d crypto.Digest
	for i := range d {
		d[i] = byte(b.rng.Uint32())
	}
	return d
}

// collude votes for whatever (view, seq, digest) it sees proposed or voted.
func (b *byzantine) collude(m pbft.Message) {
	var k voteKey
	switch m := m.(type) {
	case *pbft.PrePrepareMsg:
		k = voteKey{m.PrePrepare.View, m.PrePrepare.Seq, m.PrePrepare.Digest}
	case *pbft.PrepareMsg:
		k = voteKey{m.Prepare.View, m.Prepare.Seq, m.Prepare.Digest}
	case *pbft.CommitMsg:
		k = voteKey{m.Commit.View, m.Commit.Seq, m.Commit.Digest}
	default:
		return
	}
	if plan, ok := b.w.coalition[slot{k.view, k.seq}]; ok {
		// The coalition knows how the primary split the backups: each correct replica
		// gets votes for the version it was shown, so no vote of ours is discarded as
		// conflicting.
		if b.planned[slot{k.view, k.seq}] {
			return
		}
		b.planned[slot{k.view, k.seq}] = true
		for i := 0; i < b.w.n; i++ {
			d, ok := plan[i]
			if i == b.id || !ok {
				continue
			}
			b.sendSigned([]int{i}, pbft.Sign(b.signer, pbft.MsgPrepare, uint32(b.id), pbft.Prepare{View: k.view, Seq: k.seq, Digest: d}), nil)
			b.sendSigned([]int{i}, pbft.Sign(b.signer, pbft.MsgCommit, uint32(b.id), pbft.Commit{View: k.view, Seq: k.seq, Digest: d}), nil)
		}
		return
	}
	if b.voted[k] {
		return
	}
	b.voted[k] = true
	all := make([]int, 0, b.w.n-1)
	for i := 0; i < b.w.n; i++ {
		if i != b.id {
			all = append(all, i)
		}
	}
	if b.w.quorum.Primary(k.view) != pbft.ReplicaID(b.id) {
		b.sendSigned(all, pbft.Sign(b.signer, pbft.MsgPrepare, uint32(b.id), pbft.Prepare{View: k.view, Seq: k.seq, Digest: k.digest}), nil)
	}
	b.sendSigned(all, pbft.Sign(b.signer, pbft.MsgCommit, uint32(b.id), pbft.Commit{View: k.view, Seq: k.seq, Digest: k.digest}), nil)
}

// lieToClient answers a request at once with a forged result.
func (b *byzantine) lieToClient(m *pbft.RequestMsg) {
	c := int(m.Request.Client) - 1
	if c < 0 || c >= len(b.w.clients) {
		return
	}
	// Every Byzantine replica tells the same lie, so f+1 of them could outvote the truth:
	// what f+1 voting must prevent, and what the checker must catch when it cannot.
	lie := fmt.Appendf(nil, "forged result for client %d t=%d", m.Request.Client, m.Request.Timestamp)
	body := pbft.Marshal(pbft.Reply{Timestamp: m.Request.Timestamp, Client: m.Request.Client, Result: lie})
	frame := pbft.EncodeEnvelope(&pbft.Envelope{Msg: pbft.Signed{Type: pbft.MsgReply, From: uint32(b.id), Body: body}})
	b.w.send(b.id, b.w.n+c, frame)
}

func (b *byzantine) remember(m pbft.Message) {
	if rm, ok := m.(*pbft.RequestMsg); ok {
		if len(b.reqs) < 256 {
			b.reqs = append(b.reqs, rm)
		}
		return
	}
	if len(b.seen) < historyMax {
		b.seen = append(b.seen, m)
	} else {
		b.seen[b.rng.IntN(historyMax)] = m
	}
}

// spray sends one piece of garbage to a random replica.
func (b *byzantine) spray() {
	to := b.rng.IntN(b.w.n)
	if to == b.id {
		return
	}
	switch b.rng.IntN(4) {
	case 0: // random bytes
		frame := make([]byte, b.rng.IntN(300))
		for i := range frame {
			frame[i] = byte(b.rng.Uint32())
		}
		b.w.send(b.id, to, frame)
	case 1: // a well-formed, correctly signed message with random fields
		s, batch := b.randomMessage()
		b.sendSigned([]int{to}, s, batch)
	case 2: // a small-scope mutation of a message it saw, signed as itself
		if s, batch, ok := b.mutate(); ok {
			b.sendSigned([]int{to}, s, batch)
		}
	default: // a seen frame with a flipped bit (a bad signature or a broken encoding)
		if len(b.seen) == 0 {
			return
		}
		raw := *b.seen[b.rng.IntN(len(b.seen))].Raw()
		raw.Body = append([]byte(nil), raw.Body...)
		if len(raw.Body) > 0 {
			raw.Body[b.rng.IntN(len(raw.Body))] ^= 1 << b.rng.IntN(8)
		}
		b.sendSigned([]int{to}, raw, nil)
	}
}

func (b *byzantine) smallSeq() uint64 { return uint64(b.rng.IntN(int(b.w.opts.LogWindow) * 4)) }

func (b *byzantine) randomMessage() (pbft.Signed, []pbft.Signed) {
	view := uint64(b.rng.IntN(3))
	seq := b.smallSeq()
	d := b.randomDigest()
	id := uint32(b.id)
	switch b.rng.IntN(7) {
	case 0:
		var batch []pbft.Signed
		var ds []crypto.Digest
		for k := b.rng.IntN(3); k > 0 && len(b.reqs) > 0; k-- {
			r := b.reqs[b.rng.IntN(len(b.reqs))]
			batch = append(batch, r.Signed)
			ds = append(ds, r.Digest)
		}
		if b.rng.IntN(2) == 0 {
			d = pbft.BatchDigest(ds)
		}
		return pbft.Sign(b.signer, pbft.MsgPrePrepare, id, pbft.PrePrepare{View: view, Seq: seq, Digest: d}), batch
	case 1:
		return pbft.Sign(b.signer, pbft.MsgPrepare, id, pbft.Prepare{View: view, Seq: seq, Digest: d}), nil
	case 2:
		return pbft.Sign(b.signer, pbft.MsgCommit, id, pbft.Commit{View: view, Seq: seq, Digest: d}), nil
	case 3:
		k := b.w.opts.CheckpointInterval
		n := (seq/k + 1) * k
		if prev, ok := b.byzCkpt[n]; ok {
			d = prev
		}
		b.byzCkpt[n] = d
		return pbft.Sign(b.signer, pbft.MsgCheckpoint, id, pbft.Checkpoint{Seq: n, State: d}), nil
	case 4:
		return pbft.Sign(b.signer, pbft.MsgStateRequest, id, pbft.StateRequest{Seq: seq}), nil
	case 5:
		return pbft.Sign(b.signer, pbft.MsgStateResponse, id, pbft.StateResponse{Seq: seq, State: []byte("not a state")}), nil
	default:
		return pbft.Sign(b.signer, pbft.MsgViewChange, id, pbft.ViewChange{NewView: view + 1}), nil
	}
}

// mutate re-signs a seen protocol message as itself with its view or seq off by one or
// its digest changed: the small-scope mutations random testing finds bugs with.
func (b *byzantine) mutate() (pbft.Signed, []pbft.Signed, bool) {
	if len(b.seen) == 0 {
		return pbft.Signed{}, nil, false
	}
	id := uint32(b.id)
	bump := func(x uint64) uint64 {
		if b.rng.IntN(2) == 0 || x == 0 {
			return x + 1
		}
		return x - 1
	}
	switch m := b.seen[b.rng.IntN(len(b.seen))].(type) {
	case *pbft.PrePrepareMsg:
		pp := m.PrePrepare
		switch b.rng.IntN(3) {
		case 0:
			pp.View = bump(pp.View)
		case 1:
			pp.Seq = bump(pp.Seq)
		default:
			pp.Digest = b.randomDigest()
		}
		env := m.Envelope()
		return pbft.Sign(b.signer, pbft.MsgPrePrepare, id, pp), env.Batch, true
	case *pbft.PrepareMsg:
		p := m.Prepare
		if b.rng.IntN(2) == 0 {
			p.Seq = bump(p.Seq)
		} else {
			p.View = bump(p.View)
		}
		return pbft.Sign(b.signer, pbft.MsgPrepare, id, p), nil, true
	case *pbft.CommitMsg:
		c := m.Commit
		if b.rng.IntN(2) == 0 {
			c.Seq = bump(c.Seq)
		} else {
			c.Digest = b.randomDigest()
		}
		return pbft.Sign(b.signer, pbft.MsgCommit, id, c), nil, true
	case *pbft.CheckpointMsg:
		c := m.Checkpoint
		c.State = b.randomDigest()
		return pbft.Sign(b.signer, pbft.MsgCheckpoint, id, c), nil, true
	}
	return pbft.Signed{}, nil, false
}
