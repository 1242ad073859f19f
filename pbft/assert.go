package pbft

import "fmt"

// InvariantViolation is the panic value of a broken invariant of a correct replica:
// something only a bug in this package can cause (TigerBeetle's rule: an assertion is
// for a programmer's error, an error return for the world's). Byzantine input never
// reaches one; it is rejected and counted as a Drop before any state changes.
type InvariantViolation struct {
	Replica ReplicaID
	What    string
}

func (v InvariantViolation) Error() string {
	return fmt.Sprintf("pbft: invariant broken at replica %d: %s", v.Replica, v.What)
}

// assert panics with an InvariantViolation unless cond holds.
func (r *Replica) assert(cond bool, format string, args ...any) {
	if !cond {
		panic(InvariantViolation{Replica: r.id, What: fmt.Sprintf(format, args...)})
	}
}
