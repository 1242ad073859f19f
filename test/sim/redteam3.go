package sim

import (
	"slices"
	"strings"

	"github.com/pbftkit/pbft/pbft"
)

// Red-team strategies, third round (rt3-...): aimed at the driver's durability rule
// (records durable before the messages of their Ready leave, replies at once), the
// replica's own checkpoint records (RecordCheckpoint, installSaved) and the state
// transfer's budget and peer order. Kept apart from Strategies, like rt-....
//
//   - rt3-earlyexec: the f faulty replicas make one correct backup (the victim) the
//     only correct replica that can commit a batch before its own PREPARE and COMMIT
//     are durable: they send their PREPAREs of the view only to the primary, f-1
//     correct backups and the victim (never to the other correct backups, which
//     therefore cannot prepare without the victim's PREPARE), and an extra COMMIT to
//     the victim at once; their cores never see a PREPARE of the view, so they never
//     prepare (and never carry a certificate). The crash scenario: the victim crashes
//     the instant it executed a batch whose prepared certificate is not yet on its
//     disk (its reply to the client already left), and restarts once the unprepared
//     correct backups asked for the next view. The faulty primary of the next view
//     drops the VIEW-CHANGEs of the f correct replicas that prepared, so its NEW-VIEW
//     is built from the victim's (which lost the certificate), the unprepared ones'
//     and the faulty ones': the seq the victim executed gets another batch. The faulty
//     replicas also answer the clients of the victim's batch with its (deterministic)
//     results, so f+1 matching replies reach them for a batch the cluster never runs.
//   - rt3-crashstorm: a crash scenario more than a strategy. The faulty replicas run
//     the protocol, send their CHECKPOINTs to half of the replicas only (so correct
//     signers' states matter) and serve tampered state; the adversary crashes correct
//     replicas, before the heal, at the instants the durability rule and the
//     replica's own checkpoint records are about: right after a checkpoint batch
//     executed (CHECKPOINT and RecordCheckpoint pending), right after a state was
//     installed (RecordStable pending) or its own saved state installed, right after
//     the first batch of a new view executed; restarts come 5 to 60 ticks later, so
//     restarted replicas meet certified checkpoints they signed but no longer reached.
//   - rt3-earlyexec-nocrash: the same replicas' behaviour without the crash scenario:
//     only the random crashes of Options.Crashes can hit the window.
var RedTeam3Strategies = []string{"rt3-earlyexec", "rt3-earlyexec-nocrash", "rt3-crashstorm"}

func isRedTeam3(s string) bool { return strings.HasPrefix(s, "rt3-") }

// rt3Coalition is what the faulty replicas of an rt3 run share, with the crash
// scenario the adversary drives.
type rt3Coalition struct {
	w      *world
	faulty []bool
	// earlyexec: the attacked view and the roles in it.
	view      uint64
	planned   bool
	victim    int
	prepared  []int // correct replicas let prepare: the primary and f-1 backups
	starved   []int // correct backups that get no faulty PREPARE
	fired     bool
	firedSeq  uint64
	crashTick int64
	vcSeen    map[int]bool // starved replicas seen asking for view+1
	restarted bool
	noCrash   bool // rt3-earlyexec-nocrash: crashes come only from Options.Crashes
	storm     bool // rt3-crashstorm
	crashes   int
	seenView  map[int]uint64
}

func (c *rt3Coalition) lastView(id int) uint64 { return c.seenView[id] }

const stormCrashes = 8

// stormCrash crashes correct replica r now (before the heal, within the budget) with
// probability 1/p, and restarts it 5 to 60 ticks later.
func (c *rt3Coalition) stormCrash(r *replicaNode, p int, why string) {
	w := c.w
	if !c.storm || r.down || c.crashes >= stormCrashes || w.now >= int64(w.opts.HealTick)*tickUnits || w.rng.IntN(p) != 0 {
		return
	}
	c.crashes++
	if w.opts.Trace != nil {
		w.trace("rt3: crash r%d %s", r.id, why)
	}
	w.push(&event{at: w.now, fault: crash, to: r.id})
	w.push(&event{at: w.now + int64(5+w.rng.IntN(56))*tickUnits, fault: restart, to: r.id})
}

func (c *rt3Coalition) onInstall(r *replicaNode, in *pbft.Install, own bool) {
	if own {
		c.stormCrash(r, 4, "after restoring its own checkpoint")
		return
	}
	c.stormCrash(r, 2, "after installing a checkpoint state")
}

func (w *world) coalition3() *rt3Coalition {
	if w.rt3 == nil {
		c := &rt3Coalition{w: w, faulty: make([]bool, w.n), vcSeen: make(map[int]bool), seenView: make(map[int]uint64)}
		for i := 0; i < w.n; i++ {
			c.faulty[i] = w.res.Strategies[i] != ""
		}
		for i := 0; i < w.n; i++ {
			if w.res.Strategies[i] == "rt3-earlyexec-nocrash" || strings.HasPrefix(w.res.Strategies[i], "rt4-earlycommit") {
				c.noCrash = true
			}
			if w.res.Strategies[i] == "rt3-crashstorm" {
				c.storm = true
			}
		}
		w.rt3 = c
	}
	return w.rt3
}

// plan picks the roles of view v: its primary must be correct.
func (c *rt3Coalition) plan(v uint64) bool {
	if c.planned {
		return c.view == v
	}
	n := c.w.n
	p := int(c.w.quorum.Primary(v))
	if c.faulty[p] {
		return false
	}
	var backups []int
	for i := 0; i < n; i++ {
		if i != p && !c.faulty[i] {
			backups = append(backups, i)
		}
	}
	f := c.w.quorum.F
	if len(backups) < f+1 {
		return false
	}
	c.view, c.planned = v, true
	c.prepared = append([]int{p}, backups[:f-1]...)
	c.victim = backups[f-1]
	c.starved = backups[f:]
	return true
}

// onExecuted is the crash scenario: the victim crashes right after it executed a batch
// of the attacked view whose prepared certificate is not durable yet.
func (c *rt3Coalition) onExecuted(r *replicaNode, b *pbft.Batch, results [][]byte) {
	if c.storm {
		switch {
		case b.Checkpoint:
			c.stormCrash(r, 3, "after a checkpoint batch")
		case b.View > 0 && b.Seq > 0 && c.lastView(r.id) < b.View:
			c.stormCrash(r, 2, "after the first batch of a new view")
		}
		c.seenView[r.id] = max(c.seenView[r.id], b.View)
		return
	}
	if c.noCrash || !c.planned || c.fired || r.id != c.victim || b.View != c.view || len(b.Requests) == 0 {
		return
	}
	kept, _ := r.disk.MemStorage.Load()
	for _, rec := range kept {
		if rec.Kind == pbft.RecordPrepared && rec.Seq == b.Seq && rec.View == b.View {
			return
		}
	}
	pending := false
	for _, it := range r.pending {
		for _, rec := range it.Records {
			if rec.Kind == pbft.RecordPrepared && rec.Seq == b.Seq && rec.View == b.View {
				pending = true
			}
		}
	}
	if !pending {
		return
	}
	c.fired, c.firedSeq, c.crashTick = true, b.Seq, c.w.now
	if c.w.opts.Trace != nil {
		c.w.trace("rt3: crash r%d after it executed n=%d with its certificate not durable", r.id, b.Seq)
	}
	c.w.push(&event{at: c.w.now, fault: crash, to: r.id})
	// The faulty replicas answer the batch's clients with the result the victim sent:
	// they hold the committed prefix and the batch, and execution is deterministic, so
	// they compute the same; with the victim's reply that is f+1 matching replies.
	for i := 0; i < c.w.n; i++ {
		if !c.faulty[i] {
			continue
		}
		for k, m := range b.Requests {
			cl := int(m.Request.Client) - 1
			if cl < 0 || cl >= len(c.w.clients) {
				continue
			}
			body := pbft.Marshal(pbft.Reply{View: b.View, Timestamp: m.Request.Timestamp, Client: m.Request.Client, Result: results[k]})
			frame := pbft.EncodeEnvelope(&pbft.Envelope{Msg: pbft.Signed{Type: pbft.MsgReply, From: uint32(i), Body: body}})
			c.w.send(i, c.w.n+cl, frame)
		}
	}
	// A fallback restart, in case the view change never comes.
	c.w.push(&event{at: c.w.now + 400*tickUnits, fault: restart, to: r.id})
}

func (c *rt3Coalition) noteViewChange(m *pbft.ViewChangeMsg) {
	if !c.fired || c.restarted || m.ViewChange.NewView != c.view+1 {
		return
	}
	from := int(m.Signed.From)
	if slices.Contains(c.starved, from) {
		c.vcSeen[from] = true
	}
	for _, s := range c.starved {
		if !c.vcSeen[s] {
			return
		}
	}
	c.restarted = true
	c.w.push(&event{at: c.w.now + 1, fault: restart, to: c.victim})
}

// redTeam3 is one faulty replica's rt3 strategy.
type redTeam3 struct {
	b *byzantine
	c *rt3Coalition
}

func newRedTeam3(b *byzantine) *redTeam3 {
	return &redTeam3{b: b, c: b.w.coalition3()}
}

func (rt *redTeam3) attacking(view uint64) bool {
	return rt.isEarly() && rt.c.plan(view)
}

// observe sees every verified message before the core; true drops it.
func (rt *redTeam3) observe(from int, m pbft.Message) bool {
	if rt.isEarly() {
		return rt.observeEarly(m)
	}
	return false
}

func (rt *redTeam3) observeEarly(m pbft.Message) bool {
	switch m := m.(type) {
	case *pbft.PrepareMsg:
		// Its core never prepares in the attacked view: no certificate to carry.
		return rt.attacking(m.Prepare.View)
	case *pbft.PrePrepareMsg:
		pp := m.PrePrepare
		if rt.attacking(pp.View) && m.HasBatch && !rt.c.fired {
			rt.b.sendSigned([]int{rt.c.victim}, pbft.Sign(rt.b.signer, pbft.MsgCommit, uint32(rt.b.id), pbft.Commit(pp)), nil)
		}
	case *pbft.ViewChangeMsg:
		rt.c.noteViewChange(m)
		if (rt.c.fired || rt.c.noCrash) && m.ViewChange.NewView == rt.c.view+1 && slices.Contains(rt.c.prepared, int(m.Signed.From)) {
			return true // its NEW-VIEW is built without the certificates they hold
		}
	}
	return false
}

func (rt *redTeam3) tick() {}

func (rt *redTeam3) isEarly() bool {
	return strings.HasPrefix(rt.b.strategy, "rt3-earlyexec") || strings.HasPrefix(rt.b.strategy, "rt4-earlycommit")
}

// emit sees each outbound message of the core; true means it took care of it.
func (rt *redTeam3) emit(out pbft.Outbound) bool {
	env := out.Env
	switch {
	case rt.b.strategy == "rt3-crashstorm":
		if env.Msg.Type == pbft.MsgCheckpoint && env.Msg.From == uint32(rt.b.id) && out.To.Kind == pbft.ToAllReplicas {
			ga, _ := rt.b.halves()
			rt.b.sendSigned(ga, env.Msg, nil)
			return true
		}
	case rt.isEarly():
		if env.Msg.Type == pbft.MsgPrepare && env.Msg.From == uint32(rt.b.id) {
			var p pbft.Prepare
			if decodeBody(env.Msg.Body, &p) == nil && rt.attacking(p.View) {
				to := append(append([]int{}, rt.c.prepared...), rt.c.victim)
				for _, j := range rt.b.recipients(out) {
					if slices.Contains(to, j) {
						rt.b.sendSigned([]int{j}, env.Msg, nil)
					}
				}
				return true
			}
		}
	}
	return false
}
