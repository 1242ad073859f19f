package counter

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/pbftkit/pbft/app"
	"github.com/pbftkit/pbft/app/apptest"
)

func decode(t testing.TB, b []byte) (int64, string) {
	t.Helper()
	v, msg, err := DecodeResult(b)
	if err != nil {
		t.Fatalf("DecodeResult(%x): %v", b, err)
	}
	return v, msg
}

func snap(t testing.TB, c *Counter) []byte {
	t.Helper()
	b, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func randomOps(r *rand.Rand, n int) [][]byte {
	ops := make([][]byte, n)
	for i := range ops {
		switch r.IntN(8) {
		case 0:
			ops[i] = Get()
		case 1: // huge addends, to provoke overflow both ways
			ops[i] = Add(int64(r.Uint64()))
		case 2:
			g := make([]byte, r.IntN(12))
			for j := range g {
				g[j] = byte(r.Uint32())
			}
			ops[i] = g
		case 3:
			ops[i] = Op{Kind: "mul", N: 2}.Encode()
		default:
			ops[i] = Add(r.Int64N(2001) - 1000)
		}
	}
	return ops
}

func TestExecuteIsDeterministicAcrossReplicas(t *testing.T) {
	ops := randomOps(rand.New(rand.NewPCG(1, 2)), 5000)
	a, b := New(), New()
	overflows := 0
	for i, op := range ops {
		ra, rb := a.Execute(op), b.Execute(op)
		if !bytes.Equal(ra, rb) {
			t.Fatalf("op %d: results differ: %x vs %x", i, ra, rb)
		}
		if _, msg := decode(t, ra); msg == ErrOverflow {
			overflows++
		}
	}
	if !bytes.Equal(snap(t, a), snap(t, b)) {
		t.Fatal("final snapshots differ")
	}
	if overflows == 0 {
		t.Fatal("test is vacuous: no overflow was exercised")
	}
}

func TestCounterConformsToApplicationContract(t *testing.T) {
	apptest.Check(t, func() app.Application { return New() }, randomOps(rand.New(rand.NewPCG(5, 6)), 2000))
}

func TestAddAndGet(t *testing.T) {
	c := New()
	for _, step := range []struct {
		op   []byte
		want int64
	}{{Get(), 0}, {Add(5), 5}, {Add(-8), -3}, {Add(0), -3}, {Get(), -3}} {
		if v, msg := decode(t, c.Execute(step.op)); v != step.want || msg != "" {
			t.Fatalf("got (%d, %q), want %d", v, msg, step.want)
		}
	}
}

func TestCounterOverflowIsAnErrorResult(t *testing.T) {
	for _, tc := range []struct {
		name         string
		start, add   int64
		wantOverflow bool
	}{
		{"max plus one", math.MaxInt64, 1, true},
		{"reaching max", math.MaxInt64 - 1, 1, false},
		{"min minus one", math.MinInt64, -1, true},
		{"reaching min", math.MinInt64 + 1, -1, false},
		{"max plus max", math.MaxInt64, math.MaxInt64, true},
		{"min plus min", math.MinInt64, math.MinInt64, true},
		{"min plus max", math.MinInt64, math.MaxInt64, false},
		{"zero plus min", 0, math.MinInt64, false},
		{"minus one plus min", -1, math.MinInt64, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := New(), New()
			for _, c := range []*Counter{a, b} {
				c.value = tc.start
			}
			ra, rb := a.Execute(Add(tc.add)), b.Execute(Add(tc.add))
			if !bytes.Equal(ra, rb) {
				t.Fatalf("results differ: %x vs %x", ra, rb)
			}
			v, msg := decode(t, ra)
			if tc.wantOverflow {
				if msg != ErrOverflow {
					t.Fatalf("got (%d, %q), want overflow", v, msg)
				}
				if a.value != tc.start {
					t.Fatalf("an overflowing add changed the counter to %d", a.value)
				}
			} else if msg != "" || v != tc.start+tc.add {
				t.Fatalf("got (%d, %q), want %d", v, msg, tc.start+tc.add)
			}
		})
	}
}

func TestInvalidOperationYieldsIdenticalErrorResult(t *testing.T) {
	enc := func(v any) []byte {
		b, err := cbor.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name string
		op   []byte
		err  string
	}{
		{"nil", nil, ErrMalformedOp},
		{"garbage", []byte{0xff, 0xfe}, ErrMalformedOp},
		{"trailing bytes", append(Add(1), 0), ErrMalformedOp},
		{"unknown field", enc(map[int]any{1: "add", 2: 1, 3: 0}), ErrMalformedOp},
		{"duplicate field", []byte{0xa3, 0x01, 0x63, 'a', 'd', 'd', 0x02, 0x01, 0x02, 0x02}, ErrMalformedOp},
		{"n does not fit int64", enc(map[int]any{1: "add", 2: uint64(math.MaxUint64)}), ErrMalformedOp},
		{"n is a float", enc(map[int]any{1: "add", 2: 1.5}), ErrMalformedOp},
		{"n is text", enc(map[int]any{1: "add", 2: "1"}), ErrMalformedOp},
		{"unknown kind", Op{Kind: "mul", N: 2}.Encode(), ErrUnknownKind},
		{"missing kind", enc(map[int]any{2: 1}), ErrUnknownKind},
		{"get with n", Op{Kind: KindGet, N: 1}.Encode(), ErrUnexpectedField},
		{"too large", make([]byte, MaxOpLen+1), ErrOpTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := New(), New()
			a.Execute(Add(7))
			b.Execute(Add(7))
			ra, rb := a.Execute(tc.op), b.Execute(tc.op)
			if !bytes.Equal(ra, rb) {
				t.Fatalf("results differ: %x vs %x", ra, rb)
			}
			if _, msg := decode(t, ra); msg != tc.err {
				t.Fatalf("errMsg %q, want %q", msg, tc.err)
			}
			if v, _ := decode(t, a.Execute(Get())); v != 7 {
				t.Fatalf("an invalid operation changed the counter to %d", v)
			}
		})
	}
}

func TestRestoreRejectsMalformedSnapshotAndKeepsState(t *testing.T) {
	good := snap(t, func() *Counter { c := New(); c.Execute(Add(3)); return c }())
	for name, bad := range map[string][]byte{
		"nil":                 nil,
		"garbage":             []byte("zzz"),
		"truncated":           good[:len(good)-1],
		"trailing bytes":      append(bytes.Clone(good), 0),
		"wrong version":       mustEncode([]any{2, 3}),
		"extra element":       mustEncode([]any{1, 3, 0}),
		"value out of range":  mustEncode([]any{1, uint64(math.MaxUint64)}),
		"non-minimal integer": {0x82, 0x01, 0x18, 0x03},
		"map":                 mustEncode(map[int]int{1: 1}),
	} {
		t.Run(name, func(t *testing.T) {
			c := New()
			c.Execute(Add(-42))
			if err := c.Restore(bad); !errors.Is(err, ErrInvalidSnapshot) {
				t.Fatalf("Restore(%x) = %v, want ErrInvalidSnapshot", bad, err)
			}
			if v, _ := decode(t, c.Execute(Get())); v != -42 {
				t.Fatalf("a rejected snapshot changed the counter to %d", v)
			}
		})
	}
}

func TestRestoreRoundTrips(t *testing.T) {
	for _, v := range []int64{0, 1, -1, math.MaxInt64, math.MinInt64} {
		src := New()
		src.value = v
		s := snap(t, src)
		dst := New()
		dst.Execute(Add(99))
		if err := dst.Restore(s); err != nil {
			t.Fatalf("%d: %v", v, err)
		}
		if got := snap(t, dst); !bytes.Equal(got, s) {
			t.Fatalf("%d: snapshot after restore differs", v)
		}
	}
}

func FuzzExecute(f *testing.F) {
	for _, op := range [][]byte{Add(1), Add(-1), Add(math.MaxInt64), Add(math.MinInt64), Get(), {}, {0xa0}, {0x80}} {
		f.Add(op)
	}
	f.Fuzz(func(t *testing.T, op []byte) {
		a, b := New(), New()
		a.value, b.value = math.MaxInt64-1, math.MaxInt64-1
		for range 2 {
			ra, rb := a.Execute(op), b.Execute(op)
			if !bytes.Equal(ra, rb) {
				t.Fatalf("results differ: %x vs %x", ra, rb)
			}
			decode(t, ra)
		}
		if !bytes.Equal(snap(t, a), snap(t, b)) {
			t.Fatal("snapshots differ")
		}
		c := New()
		if err := c.Restore(op); err == nil && !bytes.Equal(snap(t, c), op) {
			t.Fatalf("accepted snapshot %x is not canonical", op)
		}
	})
}
