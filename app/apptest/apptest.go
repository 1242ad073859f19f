// Package apptest checks that an [app.Application] honours the contract of
// package app: determinism across replicas and faithful snapshot transfer.
//
// Call [Check] from a test of your own application with a constructor and a
// sequence of operations that mixes valid and invalid ones:
//
//	func TestMyAppConformance(t *testing.T) {
//		apptest.Check(t, func() app.Application { return myapp.New() }, ops)
//	}
//
// It cannot prove determinism (no test can), but it catches the usual
// mistakes: map-iteration order leaking into results or snapshots, panics on
// bad input, snapshots that depend on history, and Restore merging instead of
// replacing.
package apptest

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/pbftkit/pbft/app"
)

// Check runs ops on instances created by newApp and reports (with t.Errorf /
// t.Fatalf) any violation of the following properties:
//
//   - Execute never panics;
//   - two fresh instances given the same ops return identical results and end
//     with identical snapshots;
//   - a snapshot taken half-way, restored into a fresh instance, reproduces the
//     same snapshot bytes, and that instance then returns the same results for
//     the remaining ops;
//   - restoring that snapshot into an instance that has already executed every
//     op (so holds a different state) replaces its state entirely: it too
//     returns the same results for the remaining ops.
func Check(t testing.TB, newApp func() app.Application, ops [][]byte) {
	t.Helper()
	a, b := newApp(), newApp()
	half := len(ops) / 2
	var mid []byte
	results := make([][]byte, len(ops))
	for i, op := range ops {
		if i == half {
			mid = snapshot(t, a, "a")
		}
		ra := execute(t, a, op, i)
		rb := execute(t, b, op, i)
		if !bytes.Equal(ra, rb) {
			t.Fatalf("op %d (%x): replicas disagree: %x vs %x", i, op, ra, rb)
		}
		results[i] = ra
	}
	if mid == nil {
		mid = snapshot(t, a, "a")
	}
	final := snapshot(t, a, "a")
	if sb := snapshot(t, b, "b"); !bytes.Equal(final, sb) {
		t.Fatalf("final snapshots differ:\n%x\n%x", final, sb)
	}

	for _, target := range []struct {
		name string
		app  app.Application
	}{{"fresh instance", newApp()}, {"used instance", b}} {
		if err := target.app.Restore(mid); err != nil {
			t.Fatalf("%s: Restore(own snapshot): %v", target.name, err)
		}
		if got := snapshot(t, target.app, target.name); !bytes.Equal(got, mid) {
			t.Fatalf("%s: Snapshot after Restore differs from the restored snapshot:\n%x\n%x", target.name, got, mid)
		}
		for i := half; i < len(ops); i++ {
			if r := execute(t, target.app, ops[i], i); !bytes.Equal(r, results[i]) {
				t.Fatalf("%s: op %d after Restore: result %x, want %x", target.name, i, r, results[i])
			}
		}
		if got := snapshot(t, target.app, target.name); !bytes.Equal(got, final) {
			t.Fatalf("%s: final snapshot after Restore and replay differs:\n%x\n%x", target.name, got, final)
		}
	}
}

func execute(t testing.TB, a app.Application, op []byte, i int) (result []byte) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("op %d (%x): Execute panicked: %v", i, op, p)
		}
	}()
	return a.Execute(op)
}

func snapshot(t testing.TB, a app.Application, name string) []byte {
	t.Helper()
	s, err := func() (s []byte, err error) {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("panic: %v", p)
			}
		}()
		return a.Snapshot()
	}()
	if err != nil {
		t.Fatalf("%s: Snapshot: %v", name, err)
	}
	return s
}
