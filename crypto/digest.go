package crypto

import (
	"crypto/sha256"
	"encoding/hex"
)

// Digest is a SHA-256 digest.
type Digest [32]byte

// Hash returns the SHA-256 digest of the concatenation of parts.
//
// Note that concatenation is not an injective encoding:
// Hash([]byte("ab"), []byte("c")) == Hash([]byte("a"), []byte("bc")).
// Callers hashing several variable-length fields must length-prefix them
// themselves.
func Hash(parts ...[]byte) Digest {
	switch len(parts) {
	case 0:
		return sha256.Sum256(nil)
	case 1:
		return sha256.Sum256(parts[0])
	}
	h := sha256.New()
	for _, p := range parts {
		h.Write(p)
	}
	var d Digest
	h.Sum(d[:0])
	return d
}

// String returns the full digest as lowercase hexadecimal (64 characters).
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// Short returns the first 8 hexadecimal characters of the digest, for logs.
func (d Digest) Short() string { return hex.EncodeToString(d[:4]) }

// IsZero reports whether d is the all-zero digest (the zero value of Digest,
// which is not the digest of anything in practice).
func (d Digest) IsZero() bool { return d == Digest{} }
