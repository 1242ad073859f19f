// Package appcbor is the canonical CBOR the bundled applications share: operations,
// results and snapshots encode deterministically (core deterministic encoding, so every
// replica's snapshot of one state is the same bytes), and decode strictly (no duplicate
// map keys, indefinite lengths, tags, invalid UTF-8 or unknown fields; bounded nesting
// and sizes), since operations come from clients and snapshots from peers.
package appcbor

import (
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// enc is the one encoding mode: RFC 8949 core deterministic.
var enc cbor.EncMode

func init() {
	var err error
	if enc, err = cbor.CoreDetEncOptions().EncMode(); err != nil {
		panic(err)
	}
}

// MustEncode encodes a value whose type cannot fail to encode (the applications' own
// structs); a failure is a programming error.
func MustEncode(v any) []byte {
	b, err := enc.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("appcbor: encoding %T: %v", v, err))
	}
	return b
}

// Strict returns a decoder with the strict rules, at most maxArray array elements and
// maxMap map pairs in any one array or map, and at most 8 levels of nesting.
func Strict(maxArray, maxMap int) cbor.DecMode {
	m, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   8,
		MaxArrayElements:  maxArray,
		MaxMapPairs:       maxMap,
		UTF8:              cbor.UTF8RejectInvalid,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return m
}

// Encode encodes v canonically.
func Encode(v any) ([]byte, error) { return enc.Marshal(v) }
