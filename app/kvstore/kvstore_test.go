package kvstore

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/pbftkit/pbft/app"
	"github.com/pbftkit/pbft/app/apptest"
	"github.com/pbftkit/pbft/app/internal/appcbor"
)

func mustDecode(t testing.TB, b []byte) Result {
	t.Helper()
	r, err := DecodeResult(b)
	if err != nil {
		t.Fatalf("DecodeResult(%x): %v", b, err)
	}
	return r
}

func mustSnapshot(t testing.TB, s *Store) []byte {
	t.Helper()
	b, err := s.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	return b
}

// randomOps returns n operations over a small key space, mixing valid
// operations of every kind with invalid ones.
func randomOps(r *rand.Rand, n int) [][]byte {
	keys := []string{"", "a", "b", "c", "alpha", "beta", "ключ", strings.Repeat("k", MaxKeyLen)}
	vals := [][]byte{nil, {}, []byte("x"), []byte("y"), []byte("hello"), bytes.Repeat([]byte{7}, 100)}
	pick := func() []byte { return vals[r.IntN(len(vals))] }
	ops := make([][]byte, n)
	for i := range ops {
		k := keys[r.IntN(len(keys))]
		switch r.IntN(10) {
		case 0, 1, 2:
			ops[i] = Put(k, pick())
		case 3, 4:
			ops[i] = Get(k)
		case 5:
			ops[i] = Delete(k)
		case 6, 7:
			ops[i] = CAS(k, pick(), pick())
		case 8: // random garbage
			g := make([]byte, r.IntN(20))
			for j := range g {
				g[j] = byte(r.Uint32())
			}
			ops[i] = g
		case 9: // structurally valid but semantically invalid
			switch r.IntN(4) {
			case 0:
				ops[i] = Op{Kind: "increment", Key: k}.Encode()
			case 1:
				ops[i] = Put(strings.Repeat("z", MaxKeyLen+1), pick())
			case 2:
				ops[i] = Op{Kind: KindGet, Key: k, Value: []byte("v")}.Encode()
			case 3:
				ops[i] = Put(k, make([]byte, MaxValueLen+1))
			}
		}
	}
	return ops
}

func TestExecuteIsDeterministicAcrossReplicas(t *testing.T) {
	ops := randomOps(rand.New(rand.NewPCG(1, 2)), 5000)
	a, b := New(), New()
	for i, op := range ops {
		ra, rb := a.Execute(op), b.Execute(op)
		if !bytes.Equal(ra, rb) {
			t.Fatalf("op %d: results differ: %x vs %x", i, ra, rb)
		}
		mustDecode(t, ra) // every result, including error results, is well-formed
		if i%500 == 0 {
			if sa, sb := mustSnapshot(t, a), mustSnapshot(t, b); !bytes.Equal(sa, sb) {
				t.Fatalf("after op %d: snapshots differ", i)
			}
		}
	}
	if sa, sb := mustSnapshot(t, a), mustSnapshot(t, b); !bytes.Equal(sa, sb) {
		t.Fatal("final snapshots differ")
	}
	if a.Len() == 0 {
		t.Fatal("test is vacuous: the random ops left the store empty")
	}
}

func TestStoreConformsToApplicationContract(t *testing.T) {
	ops := randomOps(rand.New(rand.NewPCG(3, 4)), 2000)
	apptest.Check(t, func() app.Application { return New() }, ops)
}

func TestInvalidOperationYieldsIdenticalErrorResult(t *testing.T) {
	enc := func(v any) []byte {
		b, err := cbor.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []struct {
		name string
		op   []byte
		err  string
	}{
		{"nil", nil, ErrMalformedOp},
		{"empty", []byte{}, ErrMalformedOp},
		{"garbage", []byte("\xff\x00garbage"), ErrMalformedOp},
		{"truncated", Put("key", []byte("value"))[:5], ErrMalformedOp},
		{"trailing bytes", append(Get("k"), 0), ErrMalformedOp},
		{"not a map", enc([]any{"put", "k", []byte("v")}), ErrMalformedOp},
		{"integer", enc(42), ErrMalformedOp},
		{"unknown field", enc(map[int]any{1: "get", 2: "k", 9: true}), ErrMalformedOp},
		{"text field names", enc(map[string]any{"Kind": "get", "Key": "k"}), ErrMalformedOp},
		{"duplicate field", []byte{0xa2, 0x01, 0x63, 'g', 'e', 't', 0x01, 0x63, 'p', 'u', 't'}, ErrMalformedOp},
		{"indefinite length map", []byte{0xbf, 0x01, 0x63, 'g', 'e', 't', 0xff}, ErrMalformedOp},
		{"tagged", append([]byte{0xd8, 0x20}, Get("k")...), ErrMalformedOp},
		{"key is bytes", enc(map[int]any{1: "get", 2: []byte("k")}), ErrMalformedOp},
		{"value is text", enc(map[int]any{1: "put", 2: "k", 3: "v"}), ErrMalformedOp},
		{"invalid utf-8 key", enc(map[int]any{1: "get", 2: cbor.RawMessage{0x61, 0xff}}), ErrMalformedOp},
		{"deeply nested", append(bytes.Repeat([]byte{0x81}, 100), 0), ErrMalformedOp},
		{"missing kind", enc(map[int]any{2: "k"}), ErrUnknownKind},
		{"unknown kind", Op{Kind: "increment", Key: "k"}.Encode(), ErrUnknownKind},
		{"kind with wrong case", Op{Kind: "PUT", Key: "k"}.Encode(), ErrUnknownKind},
		{"oversize key", Get(strings.Repeat("k", MaxKeyLen+1)), ErrKeyTooLong},
		{"oversize value", Put("k", make([]byte, MaxValueLen+1)), ErrValueTooLarge},
		{"oversize expected", CAS("k", make([]byte, MaxValueLen+1), nil), ErrValueTooLarge},
		{"oversize operation", bytes.Repeat([]byte{0}, MaxOpLen+1), ErrOpTooLarge},
		{"get with value", Op{Kind: KindGet, Key: "k", Value: []byte("v")}.Encode(), ErrUnexpectedField},
		{"delete with expected", Op{Kind: KindDelete, Key: "k", Expected: []byte("v")}.Encode(), ErrUnexpectedField},
		{"put with expect-absent", Op{Kind: KindPut, Key: "k", ExpectAbsent: true}.Encode(), ErrUnexpectedField},
		{"cas with expected and expect-absent", Op{Kind: KindCAS, Key: "k", Expected: []byte("v"), ExpectAbsent: true}.Encode(), ErrUnexpectedField},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, b := New(), New()
			for _, s := range []*Store{a, b} {
				s.Execute(Put("k", []byte("v")))
			}
			before := mustSnapshot(t, a)
			ra, rb := a.Execute(tc.op), b.Execute(tc.op)
			if !bytes.Equal(ra, rb) {
				t.Fatalf("error results differ: %x vs %x", ra, rb)
			}
			if want := mustEncode(Result{Err: tc.err}); !bytes.Equal(ra, want) {
				t.Fatalf("result %x (%+v), want %x (Err %q)", ra, mustDecode(t, ra), want, tc.err)
			}
			if after := mustSnapshot(t, a); !bytes.Equal(before, after) {
				t.Fatal("an invalid operation changed the state")
			}
			if _, err := DecodeOp(tc.op); err == nil || err.Error() != tc.err {
				t.Fatalf("DecodeOp error %v, want %q", err, tc.err)
			}
		})
	}
}

func TestLimitsAreInclusive(t *testing.T) {
	s := New()
	key := strings.Repeat("k", MaxKeyLen)
	val := bytes.Repeat([]byte{1}, MaxValueLen)
	if r := mustDecode(t, s.Execute(Put(key, val))); !r.OK {
		t.Fatalf("put at the limits: %+v", r)
	}
	if r := mustDecode(t, s.Execute(CAS(key, val, val))); !r.OK {
		t.Fatalf("cas at the limits: %+v", r)
	}
	if r := mustDecode(t, s.Execute(Get(key))); !r.OK || !r.Found || !bytes.Equal(r.Value, val) {
		t.Fatalf("get at the limits: OK=%v Found=%v len=%d", r.OK, r.Found, len(r.Value))
	}
}

func TestPutGetDeleteSemantics(t *testing.T) {
	s := New()
	steps := []struct {
		op   []byte
		want Result
	}{
		{Get("a"), Result{OK: true}},
		{Put("a", []byte("1")), Result{OK: true}},
		{Get("a"), Result{OK: true, Found: true, Value: []byte("1")}},
		{Put("a", []byte("2")), Result{OK: true, Found: true}},
		{Get("a"), Result{OK: true, Found: true, Value: []byte("2")}},
		{Delete("a"), Result{OK: true, Found: true}},
		{Delete("a"), Result{OK: true}},
		{Get("a"), Result{OK: true}},
		{Put("", []byte("empty key")), Result{OK: true}},
		{Get(""), Result{OK: true, Found: true, Value: []byte("empty key")}},
	}
	for i, st := range steps {
		got := mustDecode(t, s.Execute(st.op))
		if got.OK != st.want.OK || got.Found != st.want.Found || got.Err != st.want.Err || !bytes.Equal(got.Value, st.want.Value) {
			t.Fatalf("step %d: got %+v, want %+v", i, got, st.want)
		}
	}
	if s.Len() != 1 {
		t.Fatalf("Len = %d, want 1", s.Len())
	}
}

func TestEmptyValueIsPresentNotAbsent(t *testing.T) {
	s := New()
	s.Execute(Put("k", nil))
	r := mustDecode(t, s.Execute(Get("k")))
	if !r.OK || !r.Found || r.Value == nil || len(r.Value) != 0 {
		t.Fatalf("get of empty value: %+v (Value nil: %v)", r, r.Value == nil)
	}
	// The key exists, so "must be absent" fails but "must be empty" succeeds.
	if r := mustDecode(t, s.Execute(CAS("k", nil, []byte("x")))); r.OK {
		t.Fatalf("cas expecting absence succeeded on an empty value: %+v", r)
	}
	if r := mustDecode(t, s.Execute(CAS("k", []byte{}, []byte("x")))); !r.OK {
		t.Fatalf("cas expecting the empty value failed: %+v", r)
	}
}

func TestCompareAndSwapOnlyWritesOnMatch(t *testing.T) {
	s := New()
	check := func(op []byte, wantOK, wantFound bool, wantValue string) {
		t.Helper()
		before := mustSnapshot(t, s)
		r := mustDecode(t, s.Execute(op))
		if r.OK != wantOK || r.Found != wantFound || string(r.Value) != wantValue {
			t.Fatalf("got %+v, want OK=%v Found=%v Value=%q", r, wantOK, wantFound, wantValue)
		}
		if !wantOK {
			if r.Err != ErrCASMismatch {
				t.Fatalf("mismatch Err = %q, want %q", r.Err, ErrCASMismatch)
			}
			if after := mustSnapshot(t, s); !bytes.Equal(before, after) {
				t.Fatal("a failed compare-and-swap changed the state")
			}
		}
	}
	check(CAS("k", []byte("v0"), []byte("v1")), false, false, "")  // absent, expected a value
	check(CAS("k", nil, []byte("v1")), true, false, "")            // absent, expected absent: written
	check(CAS("k", nil, []byte("v2")), false, true, "v1")          // present, expected absent
	check(CAS("k", []byte("v0"), []byte("v2")), false, true, "v1") // wrong expected value
	check(CAS("k", []byte("v1"), []byte("v2")), true, true, "")    // match: written
	check(Get("k"), true, true, "v2")
	check(CAS("k", []byte("v2"), nil), true, true, "") // swap to the empty value
	check(Get("k"), true, true, "")
}

func TestSnapshotIsIndependentOfInsertionOrder(t *testing.T) {
	type kv struct{ k, v string }
	var entries []kv
	for i := range 200 {
		entries = append(entries, kv{fmt.Sprintf("key-%03d", i), fmt.Sprint("value", i)})
	}
	build := func(seed uint64) []byte {
		r := rand.New(rand.NewPCG(seed, seed))
		perm := slices.Clone(entries)
		r.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
		s := New()
		// Overwrite and delete some keys on the way, to vary the history as well.
		for _, e := range perm {
			s.Execute(Put(e.k, []byte("temporary")))
			s.Execute(Put("scratch", []byte(e.v)))
		}
		s.Execute(Delete("scratch"))
		for _, e := range perm {
			s.Execute(Put(e.k, []byte(e.v)))
		}
		return mustSnapshot(t, s)
	}
	want := build(1)
	for seed := uint64(2); seed < 10; seed++ {
		if got := build(seed); !bytes.Equal(got, want) {
			t.Fatalf("seed %d: snapshot differs", seed)
		}
	}
	if empty1, empty2 := mustSnapshot(t, New()), func() []byte {
		s := New()
		s.Execute(Put("x", nil))
		s.Execute(Delete("x"))
		return mustSnapshot(t, s)
	}(); !bytes.Equal(empty1, empty2) {
		t.Fatal("empty stores with different histories give different snapshots")
	}
}

func TestRestoreRoundTripsAndReplacesWholeState(t *testing.T) {
	src := New()
	src.Execute(Put("a", []byte("1")))
	src.Execute(Put("b", nil))
	src.Execute(Put("ключ", []byte{0, 1, 2}))
	snap := mustSnapshot(t, src)

	dst := New()
	dst.Execute(Put("stale", []byte("gone after restore")))
	if err := dst.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if got := mustSnapshot(t, dst); !bytes.Equal(got, snap) {
		t.Fatal("snapshot after restore differs")
	}
	if dst.Len() != 3 {
		t.Fatalf("Len = %d, want 3", dst.Len())
	}
	if r := mustDecode(t, dst.Execute(Get("stale"))); r.Found {
		t.Fatal("restore merged instead of replacing")
	}
	// The restored store must not share memory with the snapshot buffer.
	for i := range snap {
		snap[i] = 0
	}
	if r := mustDecode(t, dst.Execute(Get("a"))); string(r.Value) != "1" {
		t.Fatalf("restored value changed with the snapshot buffer: %q", r.Value)
	}
}

func TestRestoreRejectsMalformedSnapshotAndKeepsState(t *testing.T) {
	enc := func(v any) []byte {
		b, err := appcbor.Encode(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := func() []byte {
		s := New()
		s.Execute(Put("a", []byte("1")))
		s.Execute(Put("b", []byte("2")))
		return mustSnapshot(t, s)
	}()
	cases := map[string][]byte{
		"nil":                   nil,
		"garbage":               []byte("not a snapshot"),
		"truncated":             good[:len(good)-1],
		"trailing bytes":        append(slices.Clone(good), 0),
		"wrong version":         enc([]any{2, []any{}}),
		"missing entries":       enc([]any{1}),
		"null entries":          enc([]any{1, nil}),
		"map instead of array":  enc(map[string][]byte{"a": []byte("1")}),
		"unsorted keys":         enc([]any{1, []any{[]any{"b", []byte("2")}, []any{"a", []byte("1")}}}),
		"duplicate keys":        enc([]any{1, []any{[]any{"a", []byte("1")}, []any{"a", []byte("2")}}}),
		"null value":            enc([]any{1, []any{[]any{"a", nil}}}),
		"text value":            enc([]any{1, []any{[]any{"a", "1"}}}),
		"entry with extra item": enc([]any{1, []any{[]any{"a", []byte("1"), 0}}}),
		"oversize key":          enc([]any{1, []any{[]any{strings.Repeat("k", MaxKeyLen+1), []byte("1")}}}),
		"oversize value":        enc([]any{1, []any{[]any{"a", make([]byte, MaxValueLen+1)}}}),
		"non-minimal integer":   append([]byte{0x82, 0x18, 0x01}, good[2:]...),
		"indefinite array":      append(append([]byte{0x9f}, good[1:]...), 0xff),
		"tagged":                append([]byte{0xd8, 0x20}, good...),
	}
	if good[0] != 0x82 || good[1] != 0x01 {
		t.Fatalf("unexpected snapshot prefix %x; fix the hand-made cases", good[:2])
	}
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			s := New()
			s.Execute(Put("keep", []byte("me")))
			before := mustSnapshot(t, s)
			err := s.Restore(bad)
			if !errors.Is(err, ErrInvalidSnapshot) {
				t.Fatalf("Restore(%x) = %v, want ErrInvalidSnapshot", bad, err)
			}
			if after := mustSnapshot(t, s); !bytes.Equal(before, after) {
				t.Fatal("a rejected snapshot changed the state")
			}
		})
	}
}

func TestEncodedOperationsAreCanonical(t *testing.T) {
	ops := [][]byte{Put("k", []byte("v")), Put("k", nil), Get("k"), Delete(""), CAS("k", nil, []byte("v")), CAS("k", []byte{}, nil)}
	for _, b := range ops {
		op, err := DecodeOp(b)
		if err != nil {
			t.Fatalf("DecodeOp(%x): %v", b, err)
		}
		if again := op.Encode(); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding %x gave %x", b, again)
		}
		var generic any
		if err := cbor.Unmarshal(b, &generic); err != nil {
			t.Fatal(err)
		}
		if canon := enc(t, generic); !bytes.Equal(canon, b) {
			t.Fatalf("%x is not in core deterministic encoding (%x)", b, canon)
		}
	}
	// CAS distinguishes "must be absent" from "must be empty".
	if bytes.Equal(CAS("k", nil, nil), CAS("k", []byte{}, nil)) {
		t.Fatal("CAS(nil) and CAS(empty) encode the same")
	}
}

func enc(t *testing.T, v any) []byte {
	b, err := appcbor.Encode(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestExecuteDoesNotRetainOperationBuffer(t *testing.T) {
	s := New()
	op := Put("k", []byte("original"))
	s.Execute(op)
	for i := range op {
		op[i] = 0
	}
	if r := mustDecode(t, s.Execute(Get("k"))); string(r.Value) != "original" {
		t.Fatalf("stored value aliased the op buffer: %q", r.Value)
	}
}

func TestDecodeResultRejectsInconsistentResult(t *testing.T) {
	for _, r := range []Result{{}, {OK: true, Err: "x"}} {
		if _, err := DecodeResult(mustEncode(r)); err == nil {
			t.Fatalf("DecodeResult accepted %+v", r)
		}
	}
	if _, err := DecodeResult([]byte("junk")); err == nil {
		t.Fatal("DecodeResult accepted junk")
	}
}

func TestConcurrentUseIsSafe(t *testing.T) {
	s := New()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 200 {
			s.Execute(Put(fmt.Sprint(i), []byte("v")))
		}
	}()
	for range 50 {
		snap := mustSnapshot(t, s)
		_ = s.Len()
		if err := New().Restore(snap); err != nil {
			t.Fatal(err)
		}
	}
	<-done
}

func FuzzExecute(f *testing.F) {
	for _, op := range [][]byte{
		Put("k", []byte("v")), Get("k"), Delete("k"), CAS("k", nil, []byte("v")), CAS("k", []byte("v"), []byte("w")),
		Op{Kind: "nope"}.Encode(), {}, {0xff}, {0xa1, 0x01, 0x63, 'g', 'e', 't'}, {0xbf, 0xff},
	} {
		f.Add(op)
	}
	f.Fuzz(func(t *testing.T, op []byte) {
		a, b := New(), New()
		for _, s := range []*Store{a, b} {
			s.Execute(Put("k", []byte("v")))
			s.Execute(Put("", nil))
		}
		for range 2 { // twice: the second run sees the state left by the first
			ra, rb := a.Execute(op), b.Execute(op)
			if !bytes.Equal(ra, rb) {
				t.Fatalf("results differ: %x vs %x", ra, rb)
			}
			r := mustDecode(t, ra)
			if !r.OK && r.Err == "" {
				t.Fatalf("failed result without error: %+v", r)
			}
		}
		sa, sb := mustSnapshot(t, a), mustSnapshot(t, b)
		if !bytes.Equal(sa, sb) {
			t.Fatal("snapshots differ")
		}
		c := New()
		if err := c.Restore(sa); err != nil {
			t.Fatalf("Restore(own snapshot): %v", err)
		}
		// The fuzzed bytes as a snapshot: never a panic, and if accepted, canonical.
		d := New()
		if err := d.Restore(op); err == nil {
			if got := mustSnapshot(t, d); !bytes.Equal(got, op) {
				t.Fatalf("accepted snapshot %x re-encodes as %x", op, got)
			}
		}
	})
}
