package pbft

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"
	"github.com/pbftkit/pbft/crypto"
)

// Limits bound what a decoder accepts from the network. Everything is checked before or
// during decoding, so a hostile frame costs at most MaxMessageBytes of work.
type Limits struct {
	MaxMessageBytes  int // whole encoded envelope
	MaxBatchRequests int // requests in one pre-prepare
	MaxOpBytes       int // one request's operation
	MaxResultBytes   int // one reply's result
	MaxReplicas      int // signatures in a certificate (checkpoint proof, prepares, view changes)
	MaxPrepared      int // prepared certificates in a view change (the log window)
	MaxStateBytes    int // checkpoint state in one state response
}

// DefaultLimits fit a cluster of up to 64 replicas, batches of up to 1024 requests and a
// log window of up to 1024 sequence numbers.
func DefaultLimits() Limits {
	return Limits{
		MaxMessageBytes:  64 << 20,
		MaxBatchRequests: 1024,
		MaxOpBytes:       64 << 10,
		MaxResultBytes:   64 << 10,
		MaxReplicas:      64,
		MaxPrepared:      1024,
		MaxStateBytes:    60 << 20,
	}
}

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	// Nil and empty containers encode alike (as empty), so a decoded null never
	// re-encodes to its own bytes: every message has exactly one accepted form.
	enc := cbor.CoreDetEncOptions()
	enc.NilContainers = cbor.NilContainerAsEmpty
	encMode, err = enc.EncMode()
	if err != nil {
		panic(err) // static options: a failure is a programming error caught by every test
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   8,
		MaxArrayElements:  1 << 16,
		MaxMapPairs:       1 << 10,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// ErrMalformed wraps every decoding and validation failure of network input.
var ErrMalformed = errors.New("malformed message")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// Marshal encodes v in canonical CBOR (RFC 8949 core deterministic encoding).
func Marshal(v any) []byte {
	b, err := encMode.Marshal(v)
	if err != nil {
		// Only our own fixed types are encoded: an error is a programming error.
		panic(fmt.Sprintf("pbft: encode %T: %v", v, err))
	}
	return b
}

// unmarshalCanonical decodes b into v and rejects any encoding that is not the canonical
// one: a message has exactly one byte form, so digests and duplicates are well defined.
func unmarshalCanonical(b []byte, v any) error {
	rest, err := decMode.UnmarshalFirst(b, v)
	if err != nil {
		return malformed("%T: %v", v, err)
	}
	if len(rest) != 0 {
		return malformed("%T: %d trailing bytes", v, len(rest))
	}
	again, err := encMode.Marshal(v)
	if err != nil || !bytes.Equal(again, b) {
		return malformed("%T: not canonical CBOR", v)
	}
	return nil
}

// EncodeEnvelope returns the wire form of e.
func EncodeEnvelope(e *Envelope) []byte { return Marshal(e) }

// DecodeEnvelope parses one wire frame. It enforces the size limits and the structure of
// the envelope; bodies are decoded and signatures checked by Verifier.Open.
func DecodeEnvelope(b []byte, lim Limits) (*Envelope, error) {
	if len(b) > lim.MaxMessageBytes {
		return nil, malformed("envelope of %d bytes exceeds limit %d", len(b), lim.MaxMessageBytes)
	}
	var e Envelope
	if err := unmarshalCanonical(b, &e); err != nil {
		return nil, err
	}
	if !e.Msg.Type.valid() {
		return nil, malformed("unknown message type %d", e.Msg.Type)
	}
	if len(e.Batch) > 0 && !e.Msg.Type.carriesBatch() {
		return nil, malformed("%s carries a batch", e.Msg.Type)
	}
	if len(e.Batch) > lim.MaxBatchRequests {
		return nil, malformed("batch of %d requests exceeds limit %d", len(e.Batch), lim.MaxBatchRequests)
	}
	for i := range e.Batch {
		if e.Batch[i].Type != MsgRequest {
			return nil, malformed("batch entry %d is a %s", i, e.Batch[i].Type)
		}
	}
	return &e, nil
}

// RequestDigest identifies a request by its signed body.
func RequestDigest(body []byte) crypto.Digest { return crypto.Hash(body) }

var batchDomain = []byte("pbft/batch/v1")

// BatchDigest is the digest a pre-prepare assigns a sequence number to: SHA-256 over the
// digests of its requests in order. The empty batch is the null request of a view change.
func BatchDigest(reqDigests []crypto.Digest) crypto.Digest {
	parts := make([][]byte, 0, len(reqDigests)+1)
	parts = append(parts, batchDomain)
	for i := range reqDigests {
		parts = append(parts, reqDigests[i][:])
	}
	return crypto.Hash(parts...)
}

var stateDomain = []byte("pbft/state/v1")

// StateDigest is the checkpoint digest of an application snapshot and client table.
func StateDigest(app []byte, clients []ClientRecord) crypto.Digest {
	a := crypto.Hash(app)
	c := crypto.Hash(Marshal(clients))
	return crypto.Hash(stateDomain, a[:], c[:])
}

// Unmarshal decodes canonical CBOR into v, rejecting any other encoding of it.
func Unmarshal(b []byte, v any) error { return unmarshalCanonical(b, v) }
