package pbft

import (
	"github.com/pbftkit/pbft/crypto"
)

// Signer signs the messages of one node (a replica or a client).
type Signer interface {
	Sign(t MsgType, from uint32, body []byte) []byte
}

// KeyRing checks signatures against the cluster's public keys.
type KeyRing interface {
	// VerifyReplica reports whether sig is replica id's signature over (t, body).
	VerifyReplica(id ReplicaID, t MsgType, body, sig []byte) bool
	// VerifyClient reports whether sig is client id's signature over (t, body); false for
	// unknown clients.
	VerifyClient(id ClientID, t MsgType, body, sig []byte) bool
}

// KeySigner signs with a crypto.PrivateKey, domain-separated by cluster, type and sender.
type KeySigner struct {
	Cluster string
	Key     *crypto.PrivateKey
}

// Sign implements Signer.
func (s *KeySigner) Sign(t MsgType, from uint32, body []byte) []byte {
	return s.Key.Sign(crypto.Domain{Cluster: s.Cluster, Type: uint8(t), Signer: from}, body)
}

// PublicKeyRing verifies with the cluster's configured public keys.
type PublicKeyRing struct {
	Cluster  string
	Replicas []*crypto.PublicKey
	Clients  map[ClientID]*crypto.PublicKey
}

// VerifyReplica implements KeyRing.
func (k *PublicKeyRing) VerifyReplica(id ReplicaID, t MsgType, body, sig []byte) bool {
	if uint64(id) >= uint64(len(k.Replicas)) {
		return false
	}
	return k.Replicas[id].Verify(crypto.Domain{Cluster: k.Cluster, Type: uint8(t), Signer: uint32(id)}, body, sig)
}

// VerifyClient implements KeyRing.
func (k *PublicKeyRing) VerifyClient(id ClientID, t MsgType, body, sig []byte) bool {
	pk, ok := k.Clients[id]
	if !ok {
		return false
	}
	return pk.Verify(crypto.Domain{Cluster: k.Cluster, Type: uint8(t), Signer: uint32(id)}, body, sig)
}

// Sign builds a Signed message from body, signed by from.
func Sign(s Signer, t MsgType, from uint32, body any) Signed {
	b := Marshal(body)
	return Signed{Type: t, From: from, Body: b, Sig: s.Sign(t, from, b)}
}
