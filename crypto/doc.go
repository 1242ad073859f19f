// Package crypto provides the hashing and signing primitives of the PBFT
// framework: SHA-256 digests, pluggable signature schemes (classical,
// post-quantum and hybrid, all backed by github.com/cloudflare/circl),
// domain-separated signatures, and PEM key files.
//
// # Schemes
//
// Three signature schemes are supported (see [Schemes]):
//
//   - "Ed25519" ([DefaultScheme]): 64-byte signatures, fastest.
//   - "ML-DSA-44": the NIST FIPS 204 post-quantum scheme (2420-byte signatures).
//   - "Ed25519-Dilithium2": a hybrid whose signatures only verify if both the
//     Ed25519 and the Dilithium2 halves verify.
//
// Scheme names are matched case-insensitively by [SchemeByName] and always
// reported in the canonical spelling above.
//
// # What is signed
//
// A signature never covers the raw message alone. [PrivateKey.Sign] and
// [PublicKey.Verify] take a [Domain] and sign the fixed-size (81-byte) string
//
//	"pbft/sig/v1\x00" || SHA-256(Cluster) || Type (1 byte) || Signer (4 bytes, big-endian) || SHA-256(msg)
//
// where "pbft/sig/v1\x00" is the 11 ASCII bytes "pbft/sig/v1" followed by one
// zero byte. Binding the cluster name, the message type and the claimed signer
// id means a signature cannot be replayed in another cluster, as another kind
// of message, or as coming from another replica. Signing the SHA-256 digest of
// the message rather than the message itself keeps the cost of signing and
// verifying independent of the message size.
//
// # Key files
//
// Keys are stored as single PEM blocks of type "PBFT PRIVATE KEY" or
// "PBFT PUBLIC KEY" carrying a "Scheme: <name>" header; the block payload is
// the circl binary encoding of the key. Private key files are written with mode
// 0600, public key files with mode 0644. A private key file that group or
// others may read or write is refused when loaded, with the chmod that fixes
// it. Every error returned while loading a key file names the file.
//
// For configuration files, a public key also has a one-line text form,
// "<scheme>:<standard base64 of the key bytes>" (see [PublicKey.String] and
// [ParsePublicKeyString]).
//
// # Concurrency
//
// Keys and schemes are immutable once constructed; all their methods are safe
// for concurrent use. The package keeps no mutable global state, logs nothing
// and starts no goroutines.
package crypto
