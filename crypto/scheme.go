package crypto

import (
	"crypto/rand"
	"crypto/sha3"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/cloudflare/circl/sign"
	"github.com/cloudflare/circl/sign/schemes"
)

// DefaultScheme is the signature scheme used when none is configured.
const DefaultScheme = "Ed25519"

// schemeNames lists the supported schemes, in canonical spelling, in the order
// reported by Schemes.
var schemeNames = [...]string{"Ed25519", "ML-DSA-44", "Ed25519-Dilithium2"}

// supported holds one immutable *Scheme per entry of schemeNames.
var supported = func() []*Scheme {
	out := make([]*Scheme, len(schemeNames))
	for i, name := range schemeNames {
		s := schemes.ByName(name)
		if s == nil {
			panic("crypto: circl does not provide signature scheme " + name)
		}
		out[i] = &Scheme{name: name, s: s}
	}
	return out
}()

// Schemes returns the names of the supported signature schemes:
// "Ed25519", "ML-DSA-44" and "Ed25519-Dilithium2". The returned slice is a
// fresh copy.
func Schemes() []string {
	out := make([]string, len(schemeNames))
	copy(out, schemeNames[:])
	return out
}

// Scheme is a signature scheme. It wraps a circl sign.Scheme. The *Scheme
// values returned by SchemeByName are shared and immutable; compare schemes
// with == or by Name.
type Scheme struct {
	name string
	s    sign.Scheme
}

// SchemeByName returns the scheme called name, matched case-insensitively
// against the names returned by Schemes. An unknown name yields an error that
// lists the supported names.
func SchemeByName(name string) (*Scheme, error) {
	for _, s := range supported {
		if strings.EqualFold(s.name, name) {
			return s, nil
		}
	}
	return nil, fmt.Errorf("unknown signature scheme %q (supported: %s)",
		name, strings.Join(schemeNames[:], ", "))
}

// Name returns the canonical name of the scheme, e.g. "Ed25519".
func (s *Scheme) Name() string { return s.name }

// String returns s.Name().
func (s *Scheme) String() string { return s.name }

// SignatureSize returns the size in bytes of the scheme's signatures.
func (s *Scheme) SignatureSize() int { return s.s.SignatureSize() }

// PublicKeySize returns the size in bytes of the scheme's encoded public keys.
func (s *Scheme) PublicKeySize() int { return s.s.PublicKeySize() }

// PrivateKeySize returns the size in bytes of the scheme's encoded private keys.
func (s *Scheme) PrivateKeySize() int { return s.s.PrivateKeySize() }

// GenerateKey generates a fresh key pair, reading the scheme's seed from rand.
// If rand is nil, crypto/rand is used.
func (s *Scheme) GenerateKey(rand io.Reader) (*PrivateKey, error) {
	if rand == nil {
		rand = cryptoRand
	}
	seed := make([]byte, s.s.SeedSize())
	if _, err := io.ReadFull(rand, seed); err != nil {
		return nil, fmt.Errorf("generate %s key: read random seed: %w", s.name, err)
	}
	k := s.mustPrivateKey(s.s.DeriveKey(seed))
	clear(seed)
	return k, nil
}

// cryptoRand is the default randomness source of GenerateKey.
var cryptoRand io.Reader = rand.Reader

// deriveKeyPrefix domain-separates the seed expansion of DeriveKey.
const deriveKeyPrefix = "pbft/derive-key/v1\x00"

// DeriveKey deterministically derives a key pair from seed, which may have any
// length. The same (scheme, seed) always gives the same key, which lets the
// simulator and tests build reproducible clusters. Seeds must be secret and
// high-entropy for the resulting keys to be secret; use GenerateKey for real
// deployments.
//
// The seed is expanded with SHAKE-256 over
//
//	"pbft/derive-key/v1\x00" || scheme name || 0x00 || seed
//
// to the scheme's native seed size, which is then passed to circl's
// DeriveKey. Including the scheme name means the same seed gives unrelated
// keys under different schemes.
func (s *Scheme) DeriveKey(seed []byte) *PrivateKey {
	h := sha3.NewSHAKE256()
	h.Write([]byte(deriveKeyPrefix))
	h.Write([]byte(s.name))
	h.Write([]byte{0})
	h.Write(seed)
	native := make([]byte, s.s.SeedSize())
	h.Read(native)
	k := s.mustPrivateKey(s.s.DeriveKey(native))
	clear(native)
	return k
}

// ParsePublicKey decodes a public key from its binary encoding (as returned by
// PublicKey.Bytes).
func (s *Scheme) ParsePublicKey(raw []byte) (*PublicKey, error) {
	if len(raw) != s.s.PublicKeySize() {
		return nil, fmt.Errorf("invalid %s public key: %d bytes, want %d",
			s.name, len(raw), s.s.PublicKeySize())
	}
	pk, err := s.s.UnmarshalBinaryPublicKey(raw)
	if err != nil {
		return nil, fmt.Errorf("invalid %s public key: %w", s.name, err)
	}
	return s.newPublicKey(pk)
}

// ParsePrivateKey decodes a private key from its binary encoding (as returned
// by PrivateKey.Bytes). The key is checked for internal consistency by signing
// and verifying a probe message, so a corrupted key is rejected here rather
// than producing signatures that nobody accepts.
func (s *Scheme) ParsePrivateKey(raw []byte) (*PrivateKey, error) {
	if len(raw) != s.s.PrivateKeySize() {
		return nil, fmt.Errorf("invalid %s private key: %d bytes, want %d",
			s.name, len(raw), s.s.PrivateKeySize())
	}
	sk, err := s.s.UnmarshalBinaryPrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("invalid %s private key: %w", s.name, err)
	}
	pk, ok := sk.Public().(sign.PublicKey)
	if !ok {
		return nil, fmt.Errorf("invalid %s private key: cannot derive its public key", s.name)
	}
	k, err := s.newPrivateKey(pk, sk)
	if err != nil {
		return nil, fmt.Errorf("invalid %s private key: %w", s.name, err)
	}
	if !k.selfCheck() {
		return nil, fmt.Errorf("invalid %s private key: %w", s.name, errInconsistentKey)
	}
	return k, nil
}

var errInconsistentKey = errors.New("key is corrupt (its signatures do not verify under its own public key)")
