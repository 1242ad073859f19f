// Package app defines the contract between the PBFT replication layer and the
// service it replicates.
//
// # Plugging in an application
//
// A user-supplied service implements [Application]. Every replica is given its
// own instance, and every instance must start from the same initial state
// (normally "empty", as produced by a constructor such as kvstore.New). The
// replication layer then
//
//   - calls [Application.Execute] exactly once per committed operation, in
//     sequence-number order, and returns the result bytes to the client (which
//     accepts a result once f+1 replicas returned identical bytes);
//   - calls [Application.Snapshot] at checkpoints; the digest of the snapshot
//     is what replicas agree on, so equal states must give equal bytes;
//   - calls [Application.Restore] during state transfer, with a snapshot taken
//     by another replica, to bring a lagging or recovering replica up to date.
//
// The replication layer serialises these calls: an implementation need not be
// safe for concurrent use (the ones in this module are anyway).
//
// The packages [github.com/pbftkit/pbft/app/kvstore] and
// [github.com/pbftkit/pbft/app/counter] are complete examples; the package
// example below shows the smallest possible implementation. The package
// [github.com/pbftkit/pbft/app/apptest] offers a conformance check that user
// implementations can run from their own tests.
//
// # Determinism
//
// The replicas agree only on the order of operations; they agree on the
// results and on the state only if Execute is a pure function of (current
// state, operation bytes). In practice that rules out:
//
//   - iterating over a Go map where the order can affect the state, a result or
//     a snapshot (Go randomises map order: sort the keys first);
//   - reading the clock (time.Now, timers, timeouts), randomness (math/rand,
//     crypto/rand) or anything else from the environment: files, environment
//     variables, the network, the host name, GOMAXPROCS, available memory;
//   - starting goroutines or otherwise letting scheduling order influence the
//     state;
//   - depending on pointer values, unsafe, or the formatting of values whose
//     printed form is unspecified;
//   - floating point, unless you are careful: Go may fuse x*y+z into one FMA
//     instruction on some architectures, so replicas on different hardware can
//     disagree (write float64(x*y)+z to forbid fusion, or avoid floats).
//
// If a value such as a timestamp or a random seed is needed, the client puts
// it into the operation, so that it is part of what the replicas agree on.
//
// # Defensive execution
//
// Operations come from clients, and some clients are faulty or malicious. The
// state machine must therefore be defensive (Schneider, "Implementing
// fault-tolerant services using the state machine approach", 1990): an
// invalid operation — malformed bytes, an unknown operation kind, an oversize
// argument, a violated precondition — is neither a panic nor a Go error, but an
// ordinary *error result* that leaves the state unchanged (or changes it in a
// deterministic way). The error result must be byte-identical on every correct
// replica, so build it from constant strings chosen by the application, never
// from the text of an error returned by a library (which may differ between
// library versions, and replicas may run different builds). Resource limits
// (maximum key length, maximum value size, ...) must likewise be checked
// against the operation and the state, never against what the host happens to
// have available.
//
// Execute must not retain the op slice after it returns (the caller may reuse
// the buffer), and the returned slice belongs to the caller.
//
// # Snapshots
//
// Snapshot returns a canonical encoding: two instances in equal states return
// equal bytes, whatever history led them there (for a map this means sorted
// keys). Restore replaces the whole state (it does not merge) and must validate
// the snapshot completely before touching the current state, so that a
// malformed snapshot returns an error and leaves the instance exactly as it
// was.
package app

// Application is the deterministic service replicated by the cluster.
type Application interface {
	// Execute applies one operation and returns its result. It must be deterministic, must not
	// panic on any input, and reports invalid operations as an error result (identical on every replica).
	Execute(op []byte) []byte
	// Snapshot returns the canonical encoding of the whole state: equal states give equal bytes.
	Snapshot() ([]byte, error)
	// Restore replaces the whole state with one produced by Snapshot (possibly on another replica).
	// A malformed snapshot returns an error and leaves the state unchanged.
	Restore(snapshot []byte) error
}
