package crypto

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/cloudflare/circl/sign"
)

// Domain separates signatures. What is signed always includes the cluster
// name, the message type and the claimed signer id, so a signature cannot be
// replayed as another message type, in another cluster, or as another sender.
// See the package documentation for the exact signed bytes.
type Domain struct {
	// Cluster names the cluster (deployment) the message belongs to.
	Cluster string
	// Type is the protocol message type.
	Type uint8
	// Signer is the id of the replica or client that claims to have signed.
	Signer uint32
}

// sigContext is the versioned prefix of every signed string.
const sigContext = "pbft/sig/v1\x00"

// signedLen is the length of the string actually signed:
// context || SHA-256(Cluster) || Type || Signer || SHA-256(msg).
const signedLen = len(sigContext) + sha256.Size + 1 + 4 + sha256.Size // 81

// signedBytes builds the fixed-size string signed for (d, msg):
//
//	"pbft/sig/v1\x00" || SHA-256(d.Cluster) || d.Type || BE32(d.Signer) || SHA-256(msg)
func signedBytes(d Domain, msg []byte) [signedLen]byte {
	var b [signedLen]byte
	n := copy(b[:], sigContext)
	ch := sha256.Sum256([]byte(d.Cluster))
	n += copy(b[n:], ch[:])
	b[n] = d.Type
	n++
	binary.BigEndian.PutUint32(b[n:], d.Signer)
	n += 4
	mh := sha256.Sum256(msg)
	copy(b[n:], mh[:])
	return b
}

// PublicKey is a public signature key of one of the supported schemes.
// PublicKeys are immutable and safe for concurrent use.
type PublicKey struct {
	scheme *Scheme
	pk     sign.PublicKey
	raw    []byte // cached binary encoding
}

func (s *Scheme) newPublicKey(pk sign.PublicKey) (*PublicKey, error) {
	raw, err := pk.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode %s public key: %w", s.name, err)
	}
	return &PublicKey{scheme: s, pk: pk, raw: raw[:len(raw):len(raw)]}, nil
}

// Scheme returns the key's signature scheme.
func (k *PublicKey) Scheme() *Scheme { return k.scheme }

// Bytes returns the binary encoding of the key (circl's MarshalBinary). The
// encoding is computed once; the returned slice is shared and must not be
// modified.
func (k *PublicKey) Bytes() []byte { return k.raw }

// Equal reports whether k and o are the same key of the same scheme. Two nil
// keys are equal; a nil key is not equal to a non-nil one.
func (k *PublicKey) Equal(o *PublicKey) bool {
	if k == nil || o == nil {
		return k == o
	}
	return k.scheme == o.scheme && bytes.Equal(k.raw, o.raw)
}

// Verify reports whether sig is a valid signature of msg under domain d by the
// holder of k (see the package documentation for what exactly is signed).
//
// Verify never panics: a nil or zero key, a signature of the wrong length or
// any other malformed input simply yields false.
func (k *PublicKey) Verify(d Domain, msg, sig []byte) (ok bool) {
	if k == nil || k.pk == nil || len(sig) != k.scheme.s.SignatureSize() {
		return false
	}
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	b := signedBytes(d, msg)
	return k.scheme.s.Verify(k.pk, b[:], sig, nil)
}

// String encodes the key for configuration files as
// "<scheme>:<standard base64 of Bytes()>", e.g. "Ed25519:3q2+7w...". It is the
// inverse of ParsePublicKeyString.
func (k *PublicKey) String() string {
	if k == nil || k.scheme == nil {
		return "<nil>"
	}
	return k.scheme.name + ":" + base64.StdEncoding.EncodeToString(k.raw)
}

// MarshalText implements encoding.TextMarshaler using the String form, so keys
// can be embedded directly in YAML/JSON configuration structs.
func (k *PublicKey) MarshalText() ([]byte, error) {
	if k == nil || k.scheme == nil {
		return nil, fmt.Errorf("marshal public key: key is nil")
	}
	return []byte(k.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler, accepting the String
// form. It must not be called on a key that is in use concurrently.
func (k *PublicKey) UnmarshalText(text []byte) error {
	p, err := ParsePublicKeyString(string(text))
	if err != nil {
		return err
	}
	*k = *p
	return nil
}

// ParsePublicKeyString decodes a public key from the "<scheme>:<base64>" form
// produced by PublicKey.String. The scheme name is matched case-insensitively
// and surrounding white space is ignored.
func ParsePublicKeyString(s string) (*PublicKey, error) {
	s = strings.TrimSpace(s)
	name, b64, ok := strings.Cut(s, ":")
	if !ok {
		return nil, fmt.Errorf("public key %q: want \"<scheme>:<base64>\", e.g. \"%s:...\"",
			abbreviate(s), DefaultScheme)
	}
	scheme, err := SchemeByName(name)
	if err != nil {
		return nil, fmt.Errorf("public key %q: %w", abbreviate(s), err)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("public key %q: bad base64: %w", abbreviate(s), err)
	}
	k, err := scheme.ParsePublicKey(raw)
	if err != nil {
		return nil, fmt.Errorf("public key %q: %w", abbreviate(s), err)
	}
	return k, nil
}

// abbreviate shortens long key strings (ML-DSA keys are kilobytes of base64)
// for error messages.
func abbreviate(s string) string {
	const maxLen = 48
	if len(s) <= maxLen {
		return s
	}
	return s[:maxLen] + "..."
}

// PrivateKey is a private signature key of one of the supported schemes,
// together with its public key. PrivateKeys are immutable and safe for
// concurrent use.
type PrivateKey struct {
	scheme *Scheme
	sk     sign.PrivateKey
	pub    *PublicKey
	raw    []byte // cached binary encoding
}

func (s *Scheme) newPrivateKey(pk sign.PublicKey, sk sign.PrivateKey) (*PrivateKey, error) {
	pub, err := s.newPublicKey(pk)
	if err != nil {
		return nil, err
	}
	raw, err := sk.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode %s private key: %w", s.name, err)
	}
	return &PrivateKey{scheme: s, sk: sk, pub: pub, raw: raw}, nil
}

// mustPrivateKey is newPrivateKey for keys freshly produced by circl, whose
// encoding cannot fail.
func (s *Scheme) mustPrivateKey(pk sign.PublicKey, sk sign.PrivateKey) *PrivateKey {
	k, err := s.newPrivateKey(pk, sk)
	if err != nil {
		panic("crypto: " + err.Error())
	}
	return k
}

// selfCheck signs a probe and verifies it under the key's own public key.
// It never panics.
func (k *PrivateKey) selfCheck() (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	d := Domain{Cluster: "pbft/self-check"}
	msg := []byte("pbft private key self-check")
	return k.pub.Verify(d, msg, k.Sign(d, msg))
}

// Scheme returns the key's signature scheme.
func (k *PrivateKey) Scheme() *Scheme { return k.scheme }

// Public returns the public key corresponding to k.
func (k *PrivateKey) Public() *PublicKey { return k.pub }

// Bytes returns the binary encoding of the key (circl's MarshalBinary). It is
// secret material. A fresh copy is returned on each call.
func (k *PrivateKey) Bytes() []byte { return bytes.Clone(k.raw) }

// Sign signs msg under domain d and returns the signature, of
// k.Scheme().SignatureSize() bytes. See the package documentation for what
// exactly is signed. Sign panics if k is nil or not a key obtained from this
// package.
func (k *PrivateKey) Sign(d Domain, msg []byte) []byte {
	b := signedBytes(d, msg)
	return k.scheme.s.Sign(k.sk, b[:], nil)
}
