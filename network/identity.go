package network

import (
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"

	libp2pcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/pbftkit/pbft/crypto"
)

// identityDomain separates the derivation of transport identities from every
// other use of a node key's bytes.
const identityDomain = "pbft libp2p identity v1"

// ErrNoPublicPeerID is returned by PeerIDFromPublicKey for schemes whose
// libp2p identity is derived from the private key and so cannot be computed
// from the public key.
var ErrNoPublicPeerID = errors.New("network: peer ID is derived from the private key for this scheme")

// Identity returns the libp2p identity of a node key.
//
// An Ed25519 node key is used as is, so its peer ID follows from its public
// key alone (see PeerIDFromPublicKey) and a cluster configuration listing
// public keys also fixes who may connect. libp2p cannot authenticate with the
// other schemes, so for them the identity is an Ed25519 key derived
// deterministically from SHA-256("pbft libp2p identity v1" || k.Bytes()):
// stable across restarts and distinct per key, but its peer ID has to be
// published next to the node's public key.
func Identity(k *crypto.PrivateKey) (libp2pcrypto.PrivKey, peer.ID, error) {
	if k == nil {
		return nil, "", errors.New("network: identity of a nil key")
	}
	// libp2p keeps the slice it is given: it must be ours and left intact.
	raw := k.Bytes()
	name := k.Scheme().Name()
	var sk libp2pcrypto.PrivKey
	var err error
	if name == "Ed25519" {
		// Bytes is circl's 64-byte seed || public key form, which is also
		// what libp2p expects.
		sk, err = libp2pcrypto.UnmarshalEd25519PrivateKey(raw)
	} else {
		h := sha256.New()
		h.Write([]byte(identityDomain))
		h.Write(raw)
		clear(raw)
		seed := h.Sum(nil)
		priv := ed25519.NewKeyFromSeed(seed)
		clear(seed)
		sk, err = libp2pcrypto.UnmarshalEd25519PrivateKey(priv)
	}
	if err != nil {
		return nil, "", fmt.Errorf("network: libp2p identity of %s key: %w", name, err)
	}
	id, err := peer.IDFromPrivateKey(sk)
	if err != nil {
		return nil, "", fmt.Errorf("network: peer ID of %s key: %w", name, err)
	}
	return sk, id, nil
}

// PeerIDFromPublicKey returns the peer ID that Identity gives the private key
// of pub, when it can be known from the public key, that is for Ed25519. For
// the other schemes it returns ErrNoPublicPeerID.
func PeerIDFromPublicKey(pub *crypto.PublicKey) (peer.ID, error) {
	if pub == nil {
		return "", errors.New("network: peer ID of a nil public key")
	}
	if pub.Scheme().Name() != "Ed25519" {
		return "", fmt.Errorf("%w (%s)", ErrNoPublicPeerID, pub.Scheme().Name())
	}
	pk, err := libp2pcrypto.UnmarshalEd25519PublicKey(pub.Bytes())
	if err != nil {
		return "", fmt.Errorf("network: libp2p public key: %w", err)
	}
	id, err := peer.IDFromPublicKey(pk)
	if err != nil {
		return "", fmt.Errorf("network: peer ID of public key: %w", err)
	}
	return id, nil
}
