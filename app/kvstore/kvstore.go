// Package kvstore is a replicated key-value store implementing
// [app.Application], with the operations put, get, delete and
// compare-and-swap.
//
// # Wire format
//
// Operations and results are CBOR maps keyed by small unsigned integers (the
// struct tags of [Op] and [Result] give the numbers), encoded with the core
// deterministic encoding of RFC 8949 §4.2.1 and with empty fields omitted, so
// that a given operation or result always has exactly one encoding produced
// by this package. A keyed map rather than a positional array was chosen so
// that fields can be added later without breaking old clients.
//
// Decoding is strict: duplicate map keys, unknown fields, indefinite-length
// items, CBOR tags, invalid UTF-8, nesting deeper than 8 levels, trailing bytes
// and type mismatches are all rejected. Any rejected operation yields an error
// [Result] whose Err is one of the constant Err* strings of this package, so
// that it is byte-identical on every replica.
//
// # Semantics
//
//   - put stores Value under Key (replacing any old value); Found reports
//     whether the key existed before.
//   - get returns the value; Found reports whether the key exists.
//   - delete removes the key; Found reports whether it existed.
//   - cas (compare-and-swap) stores Value under Key only if the current value
//     equals Expected, or, when ExpectAbsent is set, only if the key is
//     absent. On success Found reports whether the key existed before; on a
//     mismatch the result is an error result with Err [ErrCASMismatch] whose
//     Found and Value describe the current entry, so that the client can retry.
//
// As a stored value, nil and empty are the same thing: the empty byte string,
// which is present (get reports Found). Only the expected argument of [CAS]
// distinguishes nil ("must be absent") from empty ("must be empty"). Keys are
// at most [MaxKeyLen] bytes of valid UTF-8 (the empty key is allowed), values
// at most [MaxValueLen] bytes; larger ones give an error result.
//
// # Snapshots
//
// A snapshot is the CBOR array [version, [[key, value], ...]] with the entries
// sorted by key (byte-wise), so equal stores give equal snapshots whatever the
// insertion order. [Store.Restore] accepts only this exact canonical form:
// any snapshot that it accepts is reproduced byte for byte by a following
// [Store.Snapshot].
package kvstore

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/pbftkit/pbft/app/internal/appcbor"

	"github.com/pbftkit/pbft/app"
)

// Operation kinds (the Kind field of [Op]).
const (
	KindPut    = "put"
	KindGet    = "get"
	KindDelete = "delete"
	KindCAS    = "cas"
)

// Limits enforced by [Store.Execute]; violating one yields an error result.
const (
	MaxKeyLen   = 1 << 10  // maximum key length in bytes (1 KiB)
	MaxValueLen = 64 << 10 // maximum value (and Expected) length in bytes (64 KiB)
	// MaxOpLen is the largest encoded operation accepted. Any well-formed
	// operation within the key and value limits fits comfortably.
	MaxOpLen = MaxKeyLen + 2*MaxValueLen + 1024
)

// Error strings carried in [Result].Err. They are constants so that error
// results are identical on every replica.
const (
	ErrOpTooLarge      = "operation too large"
	ErrMalformedOp     = "malformed operation"
	ErrUnknownKind     = "unknown operation kind"
	ErrKeyTooLong      = "key too long"
	ErrValueTooLarge   = "value too large"
	ErrUnexpectedField = "field not allowed for this operation kind"
	ErrCASMismatch     = "compare-and-swap mismatch"
)

// ErrInvalidSnapshot is wrapped by every error returned from [Store.Restore].
var ErrInvalidSnapshot = errors.New("kvstore: invalid snapshot")

// Op is an operation on the store. Use [Put], [Get], [Delete] and [CAS] to
// build encoded operations; the struct is exported for clients that want to
// inspect or build operations themselves (see [Op.Encode] and [DecodeOp]).
//
// On the wire it is a CBOR map with integer keys 1..5; empty fields are
// omitted.
type Op struct {
	Kind     string `cbor:"1,keyasint"`           // one of the Kind* constants
	Key      string `cbor:"2,keyasint,omitempty"` // all kinds
	Value    []byte `cbor:"3,keyasint,omitempty"` // put, cas: the new value
	Expected []byte `cbor:"4,keyasint,omitempty"` // cas: the required current value
	// ExpectAbsent (cas only) requires the key to be absent; Expected must then be empty.
	ExpectAbsent bool `cbor:"5,keyasint,omitempty"`
}

// Result is the decoded result of an operation.
//
// On the wire it is a CBOR map with integer keys 1..4; empty fields are
// omitted.
type Result struct {
	// OK is true when the operation was executed; otherwise Err says why not.
	OK bool `cbor:"1,keyasint,omitempty"`
	// Value is the value read by get, or the current value after a cas mismatch.
	Value []byte `cbor:"2,keyasint,omitempty"`
	// Found reports whether the key existed (before the operation, for writes).
	Found bool `cbor:"3,keyasint,omitempty"`
	// Err is empty on success, else one of the Err* constants.
	Err string `cbor:"4,keyasint,omitempty"`
}

var (
	// opDecMode decodes operations and results.
	opDecMode = appcbor.Strict(16, 16)
	// snapDecMode decodes snapshots: like opDecMode but with room for many entries
	// (bounded by the input length).
	snapDecMode = appcbor.Strict(2147483647, 16)
	mustEncode  = appcbor.MustEncode
)

// Encode returns the canonical encoding of op. It does not validate op; an
// invalid op is rejected (with an error result) when executed.
func (op Op) Encode() []byte { return mustEncode(op) }

// DecodeOp decodes an encoded operation with the same strict rules as
// [Store.Execute], and validates it against the limits. The error text is one
// of the Err* constants.
func DecodeOp(b []byte) (Op, error) {
	op, msg := decodeOp(b)
	if msg != "" {
		return Op{}, errors.New(msg)
	}
	return op, nil
}

// Put returns the encoded operation storing value under key.
func Put(key string, value []byte) []byte {
	return Op{Kind: KindPut, Key: key, Value: value}.Encode()
}

// Get returns the encoded operation reading key.
func Get(key string) []byte { return Op{Kind: KindGet, Key: key}.Encode() }

// Delete returns the encoded operation removing key.
func Delete(key string) []byte { return Op{Kind: KindDelete, Key: key}.Encode() }

// CAS returns the encoded compare-and-swap operation: store value under key
// if the current value equals expected. A nil expected means "the key must be
// absent"; a non-nil empty expected means "the key must hold the empty value".
func CAS(key string, expected, value []byte) []byte {
	return Op{Kind: KindCAS, Key: key, Value: value, Expected: expected, ExpectAbsent: expected == nil}.Encode()
}

// DecodeResult decodes a result returned by [Store.Execute]. A value that was
// found but empty is returned as a non-nil empty slice.
func DecodeResult(b []byte) (Result, error) {
	var r Result
	if err := opDecMode.Unmarshal(b, &r); err != nil {
		return Result{}, fmt.Errorf("kvstore: decoding result: %w", err)
	}
	if r.OK == (r.Err != "") {
		return Result{}, errors.New("kvstore: decoding result: OK must be set exactly when Err is empty")
	}
	if r.Found && r.Value == nil {
		r.Value = []byte{}
	}
	return r, nil
}

// decodeOp decodes and validates an operation. On failure it returns one of
// the Err* constants; the check order is fixed, so every replica reports the
// same error for the same bytes.
func decodeOp(b []byte) (Op, string) {
	if len(b) > MaxOpLen {
		return Op{}, ErrOpTooLarge
	}
	var op Op
	if err := opDecMode.Unmarshal(b, &op); err != nil {
		return Op{}, ErrMalformedOp
	}
	switch op.Kind {
	case KindPut, KindGet, KindDelete, KindCAS:
	default:
		return Op{}, ErrUnknownKind
	}
	if len(op.Key) > MaxKeyLen {
		return Op{}, ErrKeyTooLong
	}
	hasValue := len(op.Value) > 0
	hasExpected := len(op.Expected) > 0 || op.ExpectAbsent
	switch op.Kind {
	case KindGet, KindDelete:
		if hasValue || hasExpected {
			return Op{}, ErrUnexpectedField
		}
	case KindPut:
		if hasExpected {
			return Op{}, ErrUnexpectedField
		}
	case KindCAS:
		if op.ExpectAbsent && len(op.Expected) > 0 {
			return Op{}, ErrUnexpectedField
		}
	}
	if len(op.Value) > MaxValueLen || len(op.Expected) > MaxValueLen {
		return Op{}, ErrValueTooLarge
	}
	return op, ""
}

// Store is a replicated key-value store. The zero value is not usable; call
// [New]. A Store is safe for concurrent use, although the replication layer
// never needs that.
type Store struct {
	mu   sync.Mutex
	data map[string][]byte // values are never nil
}

var _ app.Application = (*Store)(nil)

// New returns an empty store.
func New() *Store { return &Store{data: make(map[string][]byte)} }

// Len returns the number of keys in the store.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.data)
}

// Execute applies one encoded operation and returns the encoded [Result].
// Invalid operations leave the store unchanged and yield an error result.
func (s *Store) Execute(op []byte) []byte {
	o, msg := decodeOp(op)
	if msg != "" {
		return mustEncode(Result{Err: msg})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return mustEncode(s.apply(o))
}

func (s *Store) apply(op Op) Result {
	cur, found := s.data[op.Key]
	switch op.Kind {
	case KindPut:
		s.data[op.Key] = cloneValue(op.Value)
		return Result{OK: true, Found: found}
	case KindGet:
		return Result{OK: true, Found: found, Value: cur}
	case KindDelete:
		delete(s.data, op.Key)
		return Result{OK: true, Found: found}
	case KindCAS:
		match := found && !op.ExpectAbsent && bytes.Equal(cur, op.Expected) ||
			!found && op.ExpectAbsent
		if !match {
			return Result{Err: ErrCASMismatch, Found: found, Value: cur}
		}
		s.data[op.Key] = cloneValue(op.Value)
		return Result{OK: true, Found: found}
	}
	// Unreachable: decodeOp accepts only the kinds above.
	return Result{Err: ErrUnknownKind}
}

// cloneValue copies v (so the store never aliases the caller's buffers) and
// represents the empty value as a non-nil empty slice.
func cloneValue(v []byte) []byte { return append([]byte{}, v...) }

const snapshotVersion = 1

type snapshot struct {
	_       struct{} `cbor:",toarray"`
	Version uint64
	Entries []entry
}

type entry struct {
	_     struct{} `cbor:",toarray"`
	Key   string
	Value []byte
}

// encodeSnapshot encodes entries, which must be sorted by key and have
// non-nil values.
func encodeSnapshot(entries []entry) ([]byte, error) {
	if entries == nil {
		entries = []entry{} // an empty array, not null
	}
	return appcbor.Encode(snapshot{Version: snapshotVersion, Entries: entries})
}

// Snapshot returns the canonical encoding of the store (see the package
// documentation).
func (s *Store) Snapshot() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.data))
	for k := range s.data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	entries := make([]entry, len(keys))
	for i, k := range keys {
		entries[i] = entry{Key: k, Value: s.data[k]}
	}
	return encodeSnapshot(entries)
}

// Restore replaces the contents of the store with a snapshot produced by
// [Store.Snapshot]. The snapshot is validated completely first: wrong version,
// unsorted or duplicate keys, oversize keys or values, or any encoding other
// than the canonical one return an error wrapping [ErrInvalidSnapshot] and
// leave the store unchanged.
func (s *Store) Restore(b []byte) error {
	var snap snapshot
	if err := snapDecMode.Unmarshal(b, &snap); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidSnapshot, err)
	}
	if snap.Version != snapshotVersion {
		return fmt.Errorf("%w: unsupported version %d", ErrInvalidSnapshot, snap.Version)
	}
	data := make(map[string][]byte, len(snap.Entries))
	for i, e := range snap.Entries {
		if i > 0 && e.Key <= snap.Entries[i-1].Key {
			return fmt.Errorf("%w: entry %d: keys not strictly increasing", ErrInvalidSnapshot, i)
		}
		if len(e.Key) > MaxKeyLen {
			return fmt.Errorf("%w: entry %d: key too long", ErrInvalidSnapshot, i)
		}
		if len(e.Value) > MaxValueLen {
			return fmt.Errorf("%w: entry %d: value too large", ErrInvalidSnapshot, i)
		}
		if e.Value == nil {
			return fmt.Errorf("%w: entry %d: value is not a byte string", ErrInvalidSnapshot, i)
		}
		data[e.Key] = e.Value
	}
	canonical, err := encodeSnapshot(snap.Entries)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidSnapshot, err)
	}
	if !bytes.Equal(canonical, b) {
		return fmt.Errorf("%w: not canonically encoded", ErrInvalidSnapshot)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data = data
	return nil
}
