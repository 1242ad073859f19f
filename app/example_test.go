package app_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/pbftkit/pbft/app"
)

// maxRegister is a tiny replicated application: it remembers the largest
// number ever written to it.
//
// An operation is an 8-byte big-endian uint64; the result is the 8-byte value
// of the register after the operation, or a constant error message for an
// operation of the wrong length (which is never 8 bytes long, so clients can
// tell the two apart). The snapshot is the 8-byte value itself, which is
// trivially canonical.
type maxRegister struct {
	max uint64
}

var _ app.Application = (*maxRegister)(nil)

const errBadOp = "error: operation must be 8 bytes"

func (r *maxRegister) Execute(op []byte) []byte {
	if len(op) != 8 {
		// Invalid input: a deterministic error result, not a panic or an error return.
		return []byte(errBadOp)
	}
	if v := binary.BigEndian.Uint64(op); v > r.max {
		r.max = v
	}
	return binary.BigEndian.AppendUint64(nil, r.max)
}

func (r *maxRegister) Snapshot() ([]byte, error) {
	return binary.BigEndian.AppendUint64(nil, r.max), nil
}

func (r *maxRegister) Restore(snapshot []byte) error {
	if len(snapshot) != 8 {
		return errors.New("maxregister: snapshot must be 8 bytes")
	}
	r.max = binary.BigEndian.Uint64(snapshot)
	return nil
}

func writeOp(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func describe(result []byte) string {
	if len(result) != 8 {
		return string(result)
	}
	return fmt.Sprint(binary.BigEndian.Uint64(result))
}

// Example drives a user-defined Application the way the replication layer
// does: every replica executes the same ordered operations and so reaches the
// same results and the same snapshot; a lagging replica catches up by
// restoring a snapshot.
func Example() {
	replicas := []app.Application{&maxRegister{}, &maxRegister{}}
	ordered := [][]byte{writeOp(7), writeOp(3), []byte("junk"), writeOp(42), writeOp(5)}

	for _, op := range ordered {
		r0 := replicas[0].Execute(op)
		r1 := replicas[1].Execute(op)
		fmt.Printf("%-34s identical=%v\n", describe(r0), bytes.Equal(r0, r1))
	}

	s0, _ := replicas[0].Snapshot()
	s1, _ := replicas[1].Snapshot()
	fmt.Println("snapshots equal:", bytes.Equal(s0, s1))

	// State transfer: a fresh replica restores the snapshot and continues.
	late := &maxRegister{}
	if err := late.Restore(s0); err != nil {
		fmt.Println("restore:", err)
	}
	fmt.Println("late replica after op 100:", describe(late.Execute(writeOp(100))))

	// A malformed snapshot is rejected and the state is kept.
	fmt.Println("restore garbage:", late.Restore([]byte{1, 2, 3}))
	fmt.Println("late replica still:", describe(late.Execute(writeOp(0))))

	// Output:
	// 7                                  identical=true
	// 7                                  identical=true
	// error: operation must be 8 bytes   identical=true
	// 42                                 identical=true
	// 42                                 identical=true
	// snapshots equal: true
	// late replica after op 100: 100
	// restore garbage: maxregister: snapshot must be 8 bytes
	// late replica still: 100
}
