// Package counter is a replicated signed 64-bit counter implementing
// [app.Application]: the smallest useful application, handy for tests and
// benchmarks of the replication layer.
//
// Operations are "add N" (N an int64, possibly negative) and "get". Both
// return the value of the counter after the operation. An addition that would
// overflow int64 is refused with an error result ([ErrOverflow]) and leaves the
// counter unchanged.
//
// # Wire format
//
// Operations and results are CBOR maps keyed by small unsigned integers (see
// the struct tags of [Op] and the unexported result type), in core
// deterministic encoding with empty fields omitted:
//
//	op:     {1: kind ("add" | "get"), 2: n (add only, omitted when 0)}
//	result: {1: value (omitted when 0), 2: error (omitted when empty)}
//
// Decoding is strict (no duplicate or unknown keys, no indefinite lengths, no
// tags, no trailing bytes); a rejected operation yields an error result with
// one of the constant Err* strings, identical on every replica.
//
// A snapshot is the CBOR array [1, value]; [Counter.Restore] accepts only that
// exact canonical encoding.
package counter

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/pbftkit/pbft/app/internal/appcbor"

	"github.com/pbftkit/pbft/app"
)

// Operation kinds (the Kind field of [Op]).
const (
	KindAdd = "add"
	KindGet = "get"
)

// MaxOpLen is the largest encoded operation accepted; every valid operation is
// far smaller.
const MaxOpLen = 64

// Error strings returned by [DecodeResult] as errMsg.
const (
	ErrOpTooLarge      = "operation too large"
	ErrMalformedOp     = "malformed operation"
	ErrUnknownKind     = "unknown operation kind"
	ErrUnexpectedField = "field not allowed for this operation kind"
	ErrOverflow        = "counter overflow"
)

// ErrInvalidSnapshot is wrapped by every error returned from [Counter.Restore].
var ErrInvalidSnapshot = errors.New("counter: invalid snapshot")

// Op is a counter operation. Use [Add] and [Get] to build encoded operations.
type Op struct {
	Kind string `cbor:"1,keyasint"`           // KindAdd or KindGet
	N    int64  `cbor:"2,keyasint,omitempty"` // the addend (add only)
}

type result struct {
	Value int64  `cbor:"1,keyasint,omitempty"`
	Err   string `cbor:"2,keyasint,omitempty"`
}

type snapshot struct {
	_       struct{} `cbor:",toarray"`
	Version uint64
	Value   int64
}

const snapshotVersion = 1

var (
	decMode    = appcbor.Strict(16, 16)
	mustEncode = appcbor.MustEncode
)

// Encode returns the canonical encoding of op (without validating it).
func (op Op) Encode() []byte { return mustEncode(op) }

// Add returns the encoded operation adding n to the counter.
func Add(n int64) []byte { return Op{Kind: KindAdd, N: n}.Encode() }

// Get returns the encoded operation reading the counter.
func Get() []byte { return Op{Kind: KindGet}.Encode() }

// DecodeResult decodes a result returned by [Counter.Execute]: the counter
// value after the operation, or a non-empty errMsg (one of the Err*
// constants) if the operation was refused. err reports bytes that are not a
// valid result at all.
func DecodeResult(b []byte) (value int64, errMsg string, err error) {
	var r result
	if err := decMode.Unmarshal(b, &r); err != nil {
		return 0, "", fmt.Errorf("counter: decoding result: %w", err)
	}
	return r.Value, r.Err, nil
}

func decodeOp(b []byte) (Op, string) {
	if len(b) > MaxOpLen {
		return Op{}, ErrOpTooLarge
	}
	var op Op
	if err := decMode.Unmarshal(b, &op); err != nil {
		return Op{}, ErrMalformedOp
	}
	switch op.Kind {
	case KindAdd:
	case KindGet:
		if op.N != 0 {
			return Op{}, ErrUnexpectedField
		}
	default:
		return Op{}, ErrUnknownKind
	}
	return op, ""
}

// Counter is a replicated int64 counter, initially 0. It is safe for
// concurrent use, although the replication layer never needs that.
type Counter struct {
	mu    sync.Mutex
	value int64
}

var _ app.Application = (*Counter)(nil)

// New returns a counter at 0.
func New() *Counter { return &Counter{} }

// Execute applies one encoded operation and returns the encoded result.
func (c *Counter) Execute(op []byte) []byte {
	o, msg := decodeOp(op)
	if msg != "" {
		return mustEncode(result{Err: msg})
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if o.Kind == KindAdd {
		if o.N > 0 && c.value > math.MaxInt64-o.N || o.N < 0 && c.value < math.MinInt64-o.N {
			return mustEncode(result{Err: ErrOverflow})
		}
		c.value += o.N
	}
	return mustEncode(result{Value: c.value})
}

// Snapshot returns the canonical encoding of the counter.
func (c *Counter) Snapshot() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return appcbor.Encode(snapshot{Version: snapshotVersion, Value: c.value})
}

// Restore sets the counter from a snapshot produced by [Counter.Snapshot]. A
// malformed or non-canonical snapshot returns an error wrapping
// [ErrInvalidSnapshot] and leaves the counter unchanged.
func (c *Counter) Restore(b []byte) error {
	var s snapshot
	if err := decMode.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidSnapshot, err)
	}
	if s.Version != snapshotVersion {
		return fmt.Errorf("%w: unsupported version %d", ErrInvalidSnapshot, s.Version)
	}
	canonical, err := appcbor.Encode(s)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidSnapshot, err)
	}
	if !bytes.Equal(canonical, b) {
		return fmt.Errorf("%w: not canonically encoded", ErrInvalidSnapshot)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.value = s.Value
	return nil
}
