// Package driver owns the contract around the protocol core, once, for every caller: the
// runtime (pbft/replica) runs it with goroutines around a Pebble store and a libp2p host,
// and the simulator (test/sim) runs the same code synchronously over an in-memory store
// and a simulated network, so every seed it runs checks the rules that ship. It plays
// the part etcd-io/raft's RawNode plays beside Node.
//
// The contract (pbft.Ready) in three stages:
//
//   - Advance drains the core's Ready. Replies and superseded notices to clients leave at
//     once: they are unsigned, they report batches already committed by a quorum, and no
//     record of this replica vouches for them, so no crash can make one contradict
//     anything. Everything else comes back as Durable items and Work items, in order.
//   - Persist makes Durable items' records durable with one Append (group commit),
//     compacts the records at a stable checkpoint, and only then sends the items'
//     messages: a replica never says what a crash could make it forget.
//   - Apply runs Work on the application strictly in the order Advance returned it: a
//     checkpoint state to install before any batch after it, batches in sequence order
//     with a snapshot where the core asks for one. Executed hands each result back.
//     A Work item runs only once every record emitted before it is durable
//     (Work.After): the core counts its own COMMIT towards committed-local as soon as it
//     signs it, so a batch run before that COMMIT and its prepared certificate are on
//     disk could be answered, and then forgotten by a crash, leaving f correct holders
//     of the certificate, too few for every view change to carry it (found by a red
//     team: rt3-earlyexec).
//
// Persist and Apply run on their own goroutines in a runtime (one each: order within a
// stage matters), while the caller of Advance goes on stepping the core; Apply's caller
// waits for Persisted to reach each item's After. Step, Tick, Executed and Advance must come from one
// goroutine; Persist from one goroutine; Apply from one goroutine.
package driver

import (
	"fmt"
	"sync/atomic"

	"github.com/pbftkit/pbft/app"
	"github.com/pbftkit/pbft/pbft"
)

// Storage is where records become durable before the messages that depend on them
// leave. Append returns once the records are durable (or reports why not); Compact
// replaces everything stored by keep (pbft.CompactRecords of what was stored); Load
// returns what is stored, in Append order.
type Storage interface {
	Append(recs []pbft.Record) error
	Compact(keep []pbft.Record) error
	Load() ([]pbft.Record, error)
}

// Transport sends one outbound message to its destination. It must not block for long
// and must not fail: a message it cannot deliver is lost, which the protocol tolerates.
type Transport interface {
	Send(out *pbft.Outbound)
}

// Observer is told what the driver did, for metrics, logs and the simulator's checker.
// Every field is optional. Callbacks run on the goroutine of the stage that does the
// work (Advance, Persist or Apply).
type Observer struct {
	Drop     func(d pbft.Drop)                     // Advance: input the core rejected
	Stable   func(s *pbft.StableCheckpoint)        // Advance: the stable checkpoint advanced
	Install  func(in *pbft.Install, own bool)      // Apply: state loaded (own: from this replica's records)
	Executed func(b *pbft.Batch, results [][]byte) // Apply: a batch ran
}

// Durable is one Ready's records, whether its stable checkpoint advanced, and the
// messages that must wait for those records.
type Durable struct {
	Records  []pbft.Record
	Stable   bool
	Messages []pbft.Outbound
}

// Work is a checkpoint state to install or a committed batch to run.
type Work struct {
	Install *pbft.Install
	// Own marks the Install of the replica's own checkpoint after a restart, as opposed
	// to a state fetched from peers.
	Own   bool
	Batch *pbft.Batch
	// After is how many Durable items Advance had returned when it returned this one:
	// the item may run once Persisted reaches it.
	After uint64
}

// Driver runs one core.
type Driver struct {
	core *pbft.Replica
	st   Storage
	tr   Transport
	obs  Observer
	// records mirrors what the store holds, for compaction. Persist's own.
	records []pbft.Record
	// restored is set between Restore and the next Advance: the first Ready it drains
	// holds the Install of the replica's own stable checkpoint, if it has one.
	restored bool
	// emitted counts the Durable items Advance returned (Advance's); persisted those
	// Persist made durable (written by Persist, read by Apply's goroutine).
	emitted   uint64
	persisted atomic.Uint64
	// earlySend breaks the contract on purpose (UnsafeSendBeforeDurable): tests only.
	earlySend bool
}

// Persisted is how many Durable items Persist has made durable.
func (d *Driver) Persisted() uint64 { return d.persisted.Load() }

// New drives core, with records in st and messages over tr.
func New(core *pbft.Replica, st Storage, tr Transport, obs Observer) *Driver {
	return &Driver{core: core, st: st, tr: tr, obs: obs}
}

// Core is the driven core, for Step, Tick and Status.
func (d *Driver) Core() *pbft.Replica { return d.core }

// Restore loads the store's records into the core (a fresh one, before any other
// input) and reports how many there were. The records go through the same
// verification as messages from the network.
func (d *Driver) Restore(v *pbft.Verifier) (int, error) {
	recs, err := d.st.Load()
	if err != nil {
		return 0, err
	}
	if len(recs) == 0 {
		return 0, nil
	}
	if err := d.core.Restore(recs, v); err != nil {
		return 0, err
	}
	d.records = recs
	d.restored = true
	return len(recs), nil
}

// Advance drains the core's Ready until it is empty. Replies leave at once; the rest is
// returned for Persist and Apply.
func (d *Driver) Advance() (durable []Durable, work []Work) {
	// Only the first Ready after Restore can hold the replica's own checkpoint; an
	// Install in any later one is a state fetched (or installed from its own records
	// of a checkpoint certified since).
	own := d.restored
	d.restored = false
	for {
		rd := d.core.Ready()
		if rd.Empty() {
			return durable, work
		}
		var msgs []pbft.Outbound
		for i := range rd.Messages {
			if rd.Messages[i].To.Kind == pbft.ToClient || d.earlySend {
				d.send(&rd.Messages[i])
			} else {
				msgs = append(msgs, rd.Messages[i])
			}
		}
		if len(rd.Persist) > 0 || rd.Stable != nil || len(msgs) > 0 {
			durable = append(durable, Durable{Records: rd.Persist, Stable: rd.Stable != nil, Messages: msgs})
			d.emitted++
		}
		if rd.Stable != nil && d.obs.Stable != nil {
			d.obs.Stable(rd.Stable)
		}
		if d.obs.Drop != nil {
			for _, dr := range rd.Drops {
				d.obs.Drop(dr)
			}
		}
		if rd.Install != nil {
			work = append(work, Work{Install: rd.Install, Own: own, After: d.emitted})
		}
		own = false
		for i := range rd.Execute {
			work = append(work, Work{Batch: &rd.Execute[i], After: d.emitted})
		}
	}
}

// Persist makes the items' records durable in one Append, compacts at a stable
// checkpoint, then sends the items' messages in order. An error means the records may
// not be durable: nothing was sent, and the replica must stop, since going on could make
// it contradict itself after a crash.
func (d *Driver) Persist(items []Durable) error {
	var recs []pbft.Record
	stable := false
	for i := range items {
		recs = append(recs, items[i].Records...)
		stable = stable || items[i].Stable
	}
	if len(recs) > 0 {
		if err := d.st.Append(recs); err != nil {
			return fmt.Errorf("persist: %w", err)
		}
		d.records = append(d.records, recs...)
	}
	if stable {
		keep := pbft.CompactRecords(d.records)
		if err := d.st.Compact(keep); err != nil {
			return fmt.Errorf("compact: %w", err)
		}
		d.records = keep
	}
	d.persisted.Add(uint64(len(items)))
	for i := range items {
		for j := range items[i].Messages {
			d.send(&items[i].Messages[j])
		}
	}
	return nil
}

func (d *Driver) send(out *pbft.Outbound) { d.tr.Send(out) }

// Apply runs one Work item on a: it installs a state (and returns nil) or runs a batch
// and returns its result for Executed. An error (a state that does not restore, a
// snapshot that cannot be taken, an application that panicked) means the replica cannot
// go on.
func (d *Driver) Apply(a app.Application, w Work) (*pbft.Executed, error) {
	if p := d.Persisted(); p < w.After {
		// A caller's bug, not the world's: running it now could answer what a crash
		// then makes this replica forget.
		return nil, fmt.Errorf("driver: work n=%d applied before its records are durable (%d of %d persisted)", workSeq(w), p, w.After)
	}
	ex, err := apply(a, w)
	if err != nil {
		return nil, err
	}
	if w.Install != nil {
		if d.obs.Install != nil {
			d.obs.Install(w.Install, w.Own)
		}
		return nil, nil
	}
	if d.obs.Executed != nil {
		d.obs.Executed(w.Batch, ex.Results)
	}
	return ex, nil
}

// Run is the whole contract, synchronously: Advance, Persist, Apply each item and hand
// its result back, until the core has nothing left to do. It is how the simulator's
// replicas and tests drive a core.
func (d *Driver) Run(a app.Application) error {
	for {
		durable, work := d.Advance()
		if len(durable) == 0 && len(work) == 0 {
			return nil
		}
		if len(durable) > 0 {
			if err := d.Persist(durable); err != nil {
				return err
			}
		}
		if err := d.ApplyAll(a, work); err != nil {
			return err
		}
	}
}

// ApplyAll applies work in order and hands each result to the core.
func (d *Driver) ApplyAll(a app.Application, work []Work) error {
	for _, w := range work {
		ex, err := d.Apply(a, w)
		if err != nil {
			return err
		}
		if ex != nil {
			if err := d.core.Executed(*ex); err != nil {
				return fmt.Errorf("executed n=%d: %w", ex.Seq, err)
			}
		}
	}
	return nil
}

func workSeq(w Work) uint64 {
	if w.Batch != nil {
		return w.Batch.Seq
	}
	return w.Install.Seq
}

// UnsafeSendBeforeDurable makes d send every message as soon as the core emits it,
// before its records are durable: it breaks the contract, so that a test can show that
// the simulator catches a broken runtime rule after a crash. Never call it elsewhere.
func UnsafeSendBeforeDurable(d *Driver) { d.earlySend = true }

// apply is the one batch executor: a state to install, or a batch to run with the
// snapshot the core asks for at a checkpoint.
func apply(a app.Application, w Work) (ex *pbft.Executed, err error) {
	defer func() {
		// An application must not panic (app.Application); if it does, the replica
		// stops with the reason instead of taking the process down.
		if p := recover(); p != nil {
			ex, err = nil, fmt.Errorf("application panicked: %v", p)
		}
	}()
	if w.Install != nil {
		if err := a.Restore(w.Install.App); err != nil {
			return nil, fmt.Errorf("restore checkpoint n=%d: %w", w.Install.Seq, err)
		}
		return nil, nil
	}
	b := w.Batch
	ex = &pbft.Executed{Seq: b.Seq, Results: make([][]byte, len(b.Requests))}
	for i, m := range b.Requests {
		ex.Results[i] = a.Execute(m.Request.Op)
	}
	if b.Checkpoint {
		snap, err := a.Snapshot()
		if err != nil {
			return nil, fmt.Errorf("snapshot n=%d: %w", b.Seq, err)
		}
		ex.Snapshot = snap
	}
	return ex, nil
}

// MemStorage keeps records in memory: the twin of a durable store for tests, demos and
// the simulator. Nothing survives the process.
type MemStorage struct{ recs []pbft.Record }

// Append keeps recs.
func (m *MemStorage) Append(recs []pbft.Record) error { m.recs = append(m.recs, recs...); return nil }

// Compact replaces what is kept by keep.
func (m *MemStorage) Compact(keep []pbft.Record) error {
	m.recs = append([]pbft.Record(nil), keep...)
	return nil
}

// Load returns what is kept.
func (m *MemStorage) Load() ([]pbft.Record, error) { return m.recs, nil }
