// Package pbft is the protocol core: a deterministic PBFT replica (Castro & Liskov, OSDI
// 1999, signature variant) written as a pure state machine in the style of etcd-io/raft.
//
// A Replica takes four kinds of input: a verified protocol message (Step), a client
// request (also Step), a logical clock tick (Tick) and the application's result for a
// batch it asked to execute (Executed). Everything it wants done comes back from Ready:
// messages to send and to whom, records to persist before sending, batches to execute
// in sequence order, and checkpoint state to restore. The package starts no goroutine
// and touches no clock, socket, disk or logger; the runtime around it does all of that.
// This is what lets the simulator drive thousands of seeded Byzantine runs and replay
// any of them exactly.
//
// The driving loop of a runtime is:
//
//	for {
//		select {
//		case <-ticker.C:
//			r.Tick()
//		case frame := <-network:
//			env, err := pbft.DecodeEnvelope(frame, limits)  // bounded, canonical
//			msg, err := verifier.Open(env)                  // signatures: may run on a worker pool
//			r.Step(msg)
//		}
//		// Executed produces more output (replies, checkpoints, the next batches), so
//		// drain Ready until it is empty.
//		for rd := r.Ready(); !rd.Empty(); rd = r.Ready() {
//			persist(rd.Persist)             // durable before any message leaves
//			send(rd.Messages)
//			if rd.Install != nil {
//				app.Restore(rd.Install.App) // before any batch that follows it
//			}
//			for _, b := range rd.Execute {
//				r.Executed(execute(app, b)) // with app.Snapshot() when b.Checkpoint
//			}
//			log(rd.Drops)                   // rejected input, by reason
//		}
//	}
//
// That contract is implemented once, in package pbft/driver: the runtime (pbft/replica)
// runs its stages on goroutines, and the simulator (test/sim) runs them synchronously,
// so the simulator checks the rules that ship.
//
// Messages reach Step only after Verifier.Open accepted them: signature checks are pure
// and parallel, so a runtime may run them on a worker pool; the core then enforces the
// protocol rules (views, watermarks, quorums of distinct senders, digests).
//
// Quorums: comments and drop reasons say 2f+1 for a quorum and 2f for the prepares of
// a prepared certificate, as the papers do for n = 3f+1. In general a quorum is
// Quorum.Strong, ⌈(n+f+1)/2⌉ (any two quorums share a correct replica), and a prepared
// certificate needs Quorum.Prepared = Strong()-1 prepares; f+1 (Quorum.Weak) always
// holds a correct replica.
//
// Invariants that only a bug can break (one pre-prepare per view and seq, one own vote
// per slot, no vote at a decided seq for another digest, nothing stable above what
// executed) are asserted: a panic with an InvariantViolation. Byzantine input never
// reaches one: it is rejected first, and reported in Ready.Drops with its reason.
//
// A replica that crashed comes back from its records: a new Replica, then Restore with
// every Record it persisted (CompactRecords, run after each stable checkpoint, keeps
// that list bounded), then the same loop. Its first Ready carries the checkpoint state
// to load into the application.
package pbft
