package network

import (
	"bytes"
	"errors"
	"testing"

	"github.com/pbftkit/pbft/crypto"
)

func TestIdentityIsDeterministicPerKey(t *testing.T) {
	for _, name := range crypto.Schemes() {
		t.Run(name, func(t *testing.T) {
			s, err := crypto.SchemeByName(name)
			if err != nil {
				t.Fatal(err)
			}
			k1, k2 := s.DeriveKey([]byte("replica 1")), s.DeriveKey([]byte("replica 2"))
			sk1, id1, err := Identity(k1)
			if err != nil {
				t.Fatal(err)
			}
			again, idAgain, err := Identity(s.DeriveKey([]byte("replica 1")))
			if err != nil {
				t.Fatal(err)
			}
			if !sk1.Equals(again) || id1 != idAgain {
				t.Fatal("the same key gave two identities")
			}
			_, id2, err := Identity(k2)
			if err != nil {
				t.Fatal(err)
			}
			if id1 == id2 {
				t.Fatal("two keys share an identity")
			}

			fromPub, err := PeerIDFromPublicKey(k1.Public())
			if name != "Ed25519" {
				if !errors.Is(err, ErrNoPublicPeerID) {
					t.Fatalf("PeerIDFromPublicKey: got %v, want ErrNoPublicPeerID", err)
				}
				return
			}
			// Ed25519: the node key itself is the libp2p key.
			raw, err := sk1.Raw()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(raw, k1.Bytes()) {
				t.Fatal("the libp2p key differs from the node key")
			}
			if err != nil || fromPub != id1 {
				t.Fatalf("PeerIDFromPublicKey = %s, %v; want %s", fromPub, err, id1)
			}
		})
	}
}

func TestIdentityOfDerivedSchemesDiffersFromEd25519OfSameSeed(t *testing.T) {
	ed, _ := crypto.SchemeByName("Ed25519")
	ml, _ := crypto.SchemeByName("ML-DSA-44")
	_, a, err := Identity(ed.DeriveKey([]byte("x")))
	if err != nil {
		t.Fatal(err)
	}
	_, b, err := Identity(ml.DeriveKey([]byte("x")))
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Fatal("identities collide across schemes")
	}
}
