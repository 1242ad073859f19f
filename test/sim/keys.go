package sim

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/pbftkit/pbft/crypto"
	"github.com/pbftkit/pbft/pbft"
)

const cluster = "sim"

// keys is one run's key material, derived from the seed so a run is reproducible.
type keys struct {
	signers map[nodeKey]pbft.Signer
	ring    pbft.KeyRing
}

type nodeKey struct {
	client bool
	id     uint32
}

func newKeys(scheme string, fast bool, seed uint64, n int, clients []pbft.ClientID) (*keys, error) {
	k := &keys{signers: make(map[nodeKey]pbft.Signer)}
	seedBytes := func(kind string, id uint32) []byte {
		b := make([]byte, 0, 32)
		b = fmt.Appendf(b, "%s/%d/", kind, id)
		return binary.BigEndian.AppendUint64(b, seed)
	}
	if fast {
		ring := &fastRing{replicas: make([][]byte, n), clients: make(map[pbft.ClientID][]byte)}
		for i := 0; i < n; i++ {
			s := crypto.Hash(seedBytes("replica", uint32(i)))
			ring.replicas[i] = s[:]
			k.signers[nodeKey{id: uint32(i)}] = &fastSigner{secret: s[:]}
		}
		for _, c := range clients {
			s := crypto.Hash(seedBytes("client", uint32(c)))
			ring.clients[c] = s[:]
			k.signers[nodeKey{client: true, id: uint32(c)}] = &fastSigner{secret: s[:]}
		}
		k.ring = ring
		return k, nil
	}
	sch, err := crypto.SchemeByName(scheme)
	if err != nil {
		return nil, err
	}
	ring := &pbft.PublicKeyRing{Cluster: cluster, Clients: make(map[pbft.ClientID]*crypto.PublicKey)}
	for i := 0; i < n; i++ {
		sk := sch.DeriveKey(seedBytes("replica", uint32(i)))
		ring.Replicas = append(ring.Replicas, sk.Public())
		k.signers[nodeKey{id: uint32(i)}] = &pbft.KeySigner{Cluster: cluster, Key: sk}
	}
	for _, c := range clients {
		sk := sch.DeriveKey(seedBytes("client", uint32(c)))
		ring.Clients[c] = sk.Public()
		k.signers[nodeKey{client: true, id: uint32(c)}] = &pbft.KeySigner{Cluster: cluster, Key: sk}
	}
	k.ring = ring
	return k, nil
}

// fastSigner is the simulator's cheap stand-in for signatures (--fast-crypto): an HMAC
// under a per-node secret that only that node's signer and the simulator's key ring
// hold. Byzantine nodes get only their own signer, so within the simulation it is as
// unforgeable as a real signature. It exists only in this package.
type fastSigner struct{ secret []byte }

func fastMAC(secret []byte, t pbft.MsgType, from uint32, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	var hdr [5]byte
	hdr[0] = byte(t)
	binary.BigEndian.PutUint32(hdr[1:], from)
	m.Write(hdr[:])
	m.Write(body)
	return m.Sum(nil)[:16]
}

func (s *fastSigner) Sign(t pbft.MsgType, from uint32, body []byte) []byte {
	return fastMAC(s.secret, t, from, body)
}

type fastRing struct {
	replicas [][]byte
	clients  map[pbft.ClientID][]byte
}

func (r *fastRing) VerifyReplica(id pbft.ReplicaID, t pbft.MsgType, body, sig []byte) bool {
	if int(id) >= len(r.replicas) {
		return false
	}
	return hmac.Equal(fastMAC(r.replicas[id], t, uint32(id), body), sig)
}

func (r *fastRing) VerifyClient(id pbft.ClientID, t pbft.MsgType, body, sig []byte) bool {
	s, ok := r.clients[id]
	if !ok {
		return false
	}
	return hmac.Equal(fastMAC(s, t, uint32(id), body), sig)
}

// verifiedSet is a cache of verified signatures, for a node's Verifier.
type verifiedSet map[crypto.Digest]struct{}

func (v verifiedSet) Verified(k crypto.Digest) bool { _, ok := v[k]; return ok }
func (v verifiedSet) Add(k crypto.Digest)           { v[k] = struct{}{} }

// memoRing memoises a key ring for one simulated run. A signature check is a pure
// function of the signer, type, body and signature, and every simulated node shares the
// cluster's keys, so each distinct signed message is checked once per run (with the real
// scheme) and every node gets exactly the answer it would have computed, failures
// included, at about a third of the cost.
type memoRing struct {
	ring pbft.KeyRing
	memo map[crypto.Digest]bool
}

func newMemoRing(r pbft.KeyRing) *memoRing {
	return &memoRing{ring: r, memo: make(map[crypto.Digest]bool)}
}

func memoKey(client bool, id uint32, t pbft.MsgType, body, sig []byte) crypto.Digest {
	var hdr [14]byte
	if client {
		hdr[0] = 1
	}
	hdr[1] = byte(t)
	binary.BigEndian.PutUint32(hdr[2:], id)
	binary.BigEndian.PutUint32(hdr[6:], uint32(len(body)))
	binary.BigEndian.PutUint32(hdr[10:], uint32(len(sig)))
	return crypto.Hash(hdr[:], body, sig)
}

func (m *memoRing) VerifyReplica(id pbft.ReplicaID, t pbft.MsgType, body, sig []byte) bool {
	return m.check(memoKey(false, uint32(id), t, body, sig), func() bool { return m.ring.VerifyReplica(id, t, body, sig) })
}

func (m *memoRing) VerifyClient(id pbft.ClientID, t pbft.MsgType, body, sig []byte) bool {
	return m.check(memoKey(true, uint32(id), t, body, sig), func() bool { return m.ring.VerifyClient(id, t, body, sig) })
}

func (m *memoRing) check(k crypto.Digest, verify func() bool) bool {
	ok, seen := m.memo[k]
	if !seen {
		ok = verify()
		m.memo[k] = ok
	}
	return ok
}
