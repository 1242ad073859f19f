package sim

import (
	"strings"

	"github.com/pbftkit/pbft/pbft"
	"github.com/pbftkit/pbft/pbft/driver"
)

// Red-team strategies, fourth round (rt4-...): aimed at the driver's rule that work runs
// only once every record emitted before it is durable (Work.After), and at the moments
// around it: the adversary crashes correct replicas (a fair, unlucky power cut) at the
// instants that rule is about. Kept apart from Strategies, like rt- and rt3-.
//
//   - rt4-earlycommit: the faulty replicas behave as rt3-earlyexec's (the victim is the
//     only correct replica that can commit a batch of the attacked view before its own
//     PREPARE and COMMIT are durable; the next faulty primary drops the VIEW-CHANGEs of
//     the correct replicas that prepared), but the victim crashes the instant its core
//     committed a batch whose work the driver now defers (its COMMIT still pending).
//   - rt4-earlycommit-gap: the same, but the victim crashes right after the disk made
//     its COMMIT durable and the COMMIT left, before the deferred batch ran (between
//     Persist and Apply).
//   - rt4-syncstorm: the faulty replicas send their CHECKPOINTs to half of the replicas
//     (so correct signers' saved states matter) and otherwise follow the protocol; the
//     adversary crashes correct replicas before the heal between Persist and Apply, or
//     while a checkpoint batch, a state install or a stable checkpoint waits for the
//     disk; restarts come 3 to 60 ticks later.
var RedTeam4Strategies = []string{"rt4-earlycommit", "rt4-earlycommit-gap", "rt4-syncstorm"}

func isRedTeam4(s string) bool { return strings.HasPrefix(s, "rt4-") }

// rt4Coalition is the crash scenario of an rt4 run.
type rt4Coalition struct {
	w       *world
	mode    string
	crashes int
}

const rt4StormCrashes = 10

func (w *world) coalition4() *rt4Coalition {
	if w.rt4 == nil {
		c := &rt4Coalition{w: w}
		for i := 0; i < w.n; i++ {
			if isRedTeam4(w.res.Strategies[i]) {
				c.mode = w.res.Strategies[i]
			}
		}
		w.rt4 = c
	}
	return w.rt4
}

func (c *rt4Coalition) early() *rt3Coalition {
	if c.mode == "rt4-earlycommit" || c.mode == "rt4-earlycommit-gap" {
		return c.w.rt3
	}
	return nil
}

// victimBatch reports whether work holds a batch of the attacked view with requests
// that the victim's core committed.
func (c *rt4Coalition) victimBatch(r *replicaNode, work []driver.Work) (uint64, bool) {
	e := c.early()
	if e == nil || !e.planned || e.fired || r.id != e.victim {
		return 0, false
	}
	for _, it := range work {
		if it.Batch != nil && it.Batch.View == e.view && len(it.Batch.Requests) > 0 {
			return it.Batch.Seq, true
		}
	}
	return 0, false
}

func (c *rt4Coalition) fire(r *replicaNode, seq uint64, why string) {
	e := c.early()
	e.fired, e.firedSeq, e.crashTick = true, seq, c.w.now
	if c.w.opts.Trace != nil {
		c.w.trace("rt4: crash r%d %s (n=%d)", r.id, why, seq)
	}
	// rt3's noteViewChange restarts it once the starved replicas asked for the next
	// view; this is the fallback.
	c.w.push(&event{at: c.w.now + 400*tickUnits, fault: restart, to: r.id})
}

func (c *rt4Coalition) storm(r *replicaNode, p int, why string) bool {
	w := c.w
	if c.mode != "rt4-syncstorm" || r.down || c.crashes >= rt4StormCrashes || w.now >= int64(w.opts.HealTick)*tickUnits || w.rng.IntN(p) != 0 {
		return false
	}
	c.crashes++
	if w.opts.Trace != nil {
		w.trace("rt4: crash r%d %s", r.id, why)
	}
	w.push(&event{at: w.now + int64(3+w.rng.IntN(58))*tickUnits, fault: restart, to: r.id})
	return true
}

// onDefer sees work the simulator defers until the disk syncs; true crashes the
// replica now (pending records lost, or torn).
func (c *rt4Coalition) onDefer(r *replicaNode, work []driver.Work) bool {
	if seq, ok := c.victimBatch(r, work); ok && c.mode == "rt4-earlycommit" {
		c.fire(r, seq, "with a committed batch deferred, its COMMIT not durable")
		return true
	}
	for _, it := range work {
		switch {
		case it.Install != nil && c.storm(r, 2, "with a state install deferred"):
			return true
		case it.Batch != nil && it.Batch.Checkpoint && c.storm(r, 3, "with a checkpoint batch deferred"):
			return true
		}
	}
	for _, it := range r.pending {
		if it.Stable && c.storm(r, 3, "with a stable checkpoint pending") {
			return true
		}
	}
	return false
}

// afterPersist sees the instant between the disk sync (the messages left) and the
// deferred work running; true crashes the replica before it runs.
func (c *rt4Coalition) afterPersist(r *replicaNode, items []driver.Durable, work []driver.Work) bool {
	if seq, ok := c.victimBatch(r, work); ok && c.mode == "rt4-earlycommit-gap" {
		c.fire(r, seq, "between Persist and Apply")
		return true
	}
	if len(work) == 0 {
		return false
	}
	p := 6
	for _, it := range work {
		if it.Install != nil || (it.Batch != nil && it.Batch.Checkpoint) {
			p = 2
		}
	}
	return c.storm(r, p, "between Persist and Apply")
}

// redTeam4 is one faulty replica's rt4 strategy (syncstorm; the earlycommit ones run
// rt3's earlyexec behaviour).
type redTeam4 struct{ b *byzantine }

func (rt *redTeam4) emit(out pbft.Outbound) bool {
	env := out.Env
	if rt.b.strategy == "rt4-syncstorm" && env.Msg.Type == pbft.MsgCheckpoint && env.Msg.From == uint32(rt.b.id) && out.To.Kind == pbft.ToAllReplicas {
		ga, _ := rt.b.halves()
		rt.b.sendSigned(ga, env.Msg, nil)
		return true
	}
	return false
}
