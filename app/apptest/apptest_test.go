package apptest_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/pbftkit/pbft/app"
	"github.com/pbftkit/pbft/app/apptest"
)

// recorder is a testing.TB that records failures instead of failing the test.
// Fatalf panics with errStop, which run recovers.
type recorder struct {
	testing.TB
	failures []string
}

var errStop = errors.New("stop")

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	panic(errStop)
}

func run(t *testing.T, newApp func() app.Application, ops [][]byte) []string {
	r := &recorder{TB: t}
	func() {
		defer func() {
			if p := recover(); p != nil && p != errStop {
				panic(p)
			}
		}()
		apptest.Check(r, newApp, ops)
	}()
	return r.failures
}

// sumApp adds 8-byte numbers; it is correct.
type sumApp struct{ sum uint64 }

func (a *sumApp) Execute(op []byte) []byte {
	if len(op) != 8 {
		return []byte("bad op")
	}
	a.sum += binary.BigEndian.Uint64(op)
	return binary.BigEndian.AppendUint64(nil, a.sum)
}
func (a *sumApp) Snapshot() ([]byte, error) { return binary.BigEndian.AppendUint64(nil, a.sum), nil }
func (a *sumApp) Restore(s []byte) error {
	if len(s) != 8 {
		return errors.New("bad snapshot")
	}
	a.sum = binary.BigEndian.Uint64(s)
	return nil
}

// setApp is a set of strings whose "list" result iterates over a Go map: the
// classic nondeterminism bug.
type setApp struct{ m map[string]bool }

func (a *setApp) Execute(op []byte) []byte {
	if string(op) == "list" {
		var out []string
		for k := range a.m {
			out = append(out, k)
		}
		return []byte(strings.Join(out, ","))
	}
	a.m[string(op)] = true
	return nil
}
func (a *setApp) Snapshot() ([]byte, error) { return []byte(fmt.Sprint(len(a.m))), nil }
func (a *setApp) Restore([]byte) error      { return nil }

// mergingApp's Restore adds to the state instead of replacing it.
type mergingApp struct{ sumApp }

func (a *mergingApp) Restore(s []byte) error {
	if len(s) != 8 {
		return errors.New("bad snapshot")
	}
	a.sum += binary.BigEndian.Uint64(s)
	return nil
}

// panicApp panics on an empty operation.
type panicApp struct{ sumApp }

func (a *panicApp) Execute(op []byte) []byte {
	_ = op[0]
	return a.sumApp.Execute(op)
}

func numberOps(n int) [][]byte {
	ops := make([][]byte, n)
	for i := range ops {
		ops[i] = binary.BigEndian.AppendUint64(nil, uint64(i+1))
	}
	return ops
}

func TestCheckAcceptsCorrectApplication(t *testing.T) {
	ops := append(numberOps(10), []byte("junk"), nil)
	if f := run(t, func() app.Application { return &sumApp{} }, ops); len(f) != 0 {
		t.Fatalf("unexpected failures: %q", f)
	}
}

func TestCheckDetectsMapIterationOrder(t *testing.T) {
	var ops [][]byte
	for i := range 50 {
		ops = append(ops, []byte(fmt.Sprint("k", i)))
	}
	ops = append(ops, []byte("list"))
	if f := run(t, func() app.Application { return &setApp{m: map[string]bool{}} }, ops); len(f) == 0 {
		t.Fatal("map-iteration nondeterminism was not detected")
	}
}

func TestCheckDetectsRestoreThatMerges(t *testing.T) {
	if f := run(t, func() app.Application { return &mergingApp{} }, numberOps(10)); len(f) == 0 {
		t.Fatal("merging Restore was not detected")
	}
}

func TestCheckDetectsPanic(t *testing.T) {
	f := run(t, func() app.Application { return &panicApp{} }, append(numberOps(3), nil))
	if len(f) == 0 || !strings.Contains(f[0], "panicked") {
		t.Fatalf("panic was not reported: %q", f)
	}
}
