package pbft_test

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/pbftkit/pbft/crypto"
	"github.com/pbftkit/pbft/pbft"
)

// TestOpenRejectsNonCanonicalBody signs non-canonical body bytes with a valid key: the
// signature verifies, but the body has another (canonical) form, so it must be dropped.
func TestOpenRejectsNonCanonicalBody(t *testing.T) {
	w := codecTestWorld()
	k := w.k
	v := k.verifier(pbft.DefaultLimits())
	d := w.prepBody.Digest
	view, seq := codecHead(0, w.prepBody.View), codecHead(0, w.prepBody.Seq)
	cases := []struct {
		name string
		body []byte
	}{
		{"seq in a two-byte argument", codecCat(codecHead(4, 3), view, codecLongHead(0, w.prepBody.Seq, 2), codecBstr(d[:]))},
		{"view in an eight-byte argument", codecCat(codecHead(4, 3), codecLongHead(0, w.prepBody.View, 8), seq, codecBstr(d[:]))},
		{"digest length in a two-byte argument", codecCat(codecHead(4, 3), view, seq, codecLongHead(2, 32, 2), d[:])},
		{"digest of 31 bytes", codecCat(codecHead(4, 3), view, seq, codecBstr(d[:31]))},
		{"digest of 33 bytes", codecCat(codecHead(4, 3), view, seq, codecBstr(append(d[:], 0)))},
		{"digest as an array of integers", func() []byte {
			b := codecCat(codecHead(4, 3), view, seq, codecHead(4, 32))
			for _, x := range d {
				b = append(b, codecHead(0, uint64(x))...)
			}
			return b
		}()},
		{"indefinite-length body array", codecCat([]byte{0x9f}, view, seq, codecBstr(d[:]), []byte{codecBreak})},
		{"body as a map", codecCat([]byte{0xa3, 0x00}, view, []byte{0x01}, seq, []byte{0x02}, codecBstr(d[:]))},
		{"trailing byte", codecCat(w.prep1.Body, []byte{0x00})},
		{"empty body", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := pbft.Signed{Type: pbft.MsgPrepare, From: 1, Body: c.body, Sig: k.replicas[1].Sign(pbft.MsgPrepare, 1, c.body)}
			if !k.ring.VerifyReplica(1, pbft.MsgPrepare, s.Body, s.Sig) {
				t.Fatal("test setup: signature does not verify")
			}
			env, err := pbft.DecodeEnvelope(pbft.EncodeEnvelope(&pbft.Envelope{Msg: s}), v.Limits)
			if err != nil {
				t.Fatalf("the envelope itself is canonical, DecodeEnvelope: %v", err)
			}
			if m, err := v.Open(env); !errors.Is(err, pbft.ErrMalformed) {
				t.Fatalf("Open = %+v, %v; want ErrMalformed", m, err)
			}
		})
	}
	// The same for a request, whose body is checked on another path.
	op := []byte("put a 1")
	body := codecCat(codecHead(4, 3), codecLongHead(0, uint64(codecAlice), 4), codecHead(0, 1), codecBstr(op))
	s := pbft.Signed{Type: pbft.MsgRequest, From: uint32(codecAlice), Body: body, Sig: k.clients[codecAlice].Sign(pbft.MsgRequest, uint32(codecAlice), body)}
	if m, err := v.Open(&pbft.Envelope{Msg: s}); !errors.Is(err, pbft.ErrMalformed) {
		t.Fatalf("request with a non-canonical client id: Open = %+v, %v; want ErrMalformed", m, err)
	}
}

func TestOpenRejectsReply(t *testing.T) {
	w := codecTestWorld()
	if m, err := w.k.verifier(pbft.DefaultLimits()).Open(&pbft.Envelope{Msg: w.reply}); !errors.Is(err, pbft.ErrMalformed) {
		t.Fatalf("Open(reply) = %+v, %v; want ErrMalformed", m, err)
	}
}

// A superseded notice, like a reply, is for clients: a replica refuses it, with or
// without a signature.
func TestOpenRejectsSupersededNotice(t *testing.T) {
	w := codecTestWorld()
	v := w.k.verifier(pbft.DefaultLimits())
	signed := w.k.replica(2, pbft.MsgSuperseded, w.supersededBody)
	for _, s := range []pbft.Signed{w.superseded, signed} {
		if m, err := v.Open(&pbft.Envelope{Msg: s}); !errors.Is(err, pbft.ErrMalformed) {
			t.Fatalf("Open(superseded, %d-byte signature) = %+v, %v; want ErrMalformed", len(s.Sig), m, err)
		}
	}
}

func TestOpenRejectsSignatureFromAnotherCluster(t *testing.T) {
	w := codecTestWorld()
	k := w.k
	v := k.verifier(pbft.DefaultLimits())
	other := &pbft.KeySigner{Cluster: "other", Key: k.replicas[1].Key}
	s := pbft.Sign(other, pbft.MsgPrepare, 1, w.prepBody)
	if !bytes.Equal(s.Body, w.prep1.Body) {
		t.Fatal("test setup: bodies differ")
	}
	if m, err := v.Open(&pbft.Envelope{Msg: s}); !errors.Is(err, pbft.ErrBadSignature) {
		t.Fatalf("Open = %+v, %v; want ErrBadSignature", m, err)
	}
	otherClient := &pbft.KeySigner{Cluster: "other", Key: k.clients[codecAlice].Key}
	r := pbft.Sign(otherClient, pbft.MsgRequest, uint32(codecAlice), w.req1Body)
	if m, err := v.Open(&pbft.Envelope{Msg: r}); !errors.Is(err, pbft.ErrBadSignature) {
		t.Fatalf("request: Open = %+v, %v; want ErrBadSignature", m, err)
	}
	// Conversely a verifier of the other cluster rejects our messages.
	ring := *k.ring
	ring.Cluster = "other"
	ov := &pbft.Verifier{Keys: &ring, N: codecN, Limits: pbft.DefaultLimits()}
	if m, err := ov.Open(&pbft.Envelope{Msg: w.prep1}); !errors.Is(err, pbft.ErrBadSignature) {
		t.Fatalf("verifier of another cluster: Open = %+v, %v; want ErrBadSignature", m, err)
	}
}

func TestOpenRejectsSignatureAsAnotherType(t *testing.T) {
	w := codecTestWorld()
	v := w.k.verifier(pbft.DefaultLimits())
	// PREPARE and COMMIT have the same body: only the signed type tells them apart.
	s := w.prep1
	s.Type = pbft.MsgCommit
	if m, err := v.Open(&pbft.Envelope{Msg: s}); !errors.Is(err, pbft.ErrBadSignature) {
		t.Fatalf("prepare re-labelled as a commit: Open = %+v, %v; want ErrBadSignature", m, err)
	}
	s = w.commit3
	s.Type = pbft.MsgPrepare
	if m, err := v.Open(&pbft.Envelope{Msg: s}); !errors.Is(err, pbft.ErrBadSignature) {
		t.Fatalf("commit re-labelled as a prepare: Open = %+v, %v; want ErrBadSignature", m, err)
	}
	// Nor does a prepare pass as the pre-prepare of a prepared certificate.
	s = w.prep1
	s.Type = pbft.MsgPrePrepare
	if m, err := v.Open(&pbft.Envelope{Msg: s, Batch: []pbft.Signed{w.req1, w.req2}}); !errors.Is(err, pbft.ErrBadSignature) {
		t.Fatalf("prepare re-labelled as a pre-prepare: Open = %+v, %v; want ErrBadSignature", m, err)
	}
}

func TestOpenRejectsSenderThatDidNotSign(t *testing.T) {
	w := codecTestWorld()
	v := w.k.verifier(pbft.DefaultLimits())
	for _, from := range []uint32{0, 2, 3} {
		s := w.prep1
		s.From = from
		if m, err := v.Open(&pbft.Envelope{Msg: s}); !errors.Is(err, pbft.ErrBadSignature) {
			t.Errorf("prepare of 1 claimed by %d: Open = %+v, %v; want ErrBadSignature", from, m, err)
		}
	}
	// A sender outside the cluster is malformed, whatever its signature.
	for _, from := range []uint32{codecN, 1 << 31, 1<<32 - 1} {
		s := pbft.Sign(codecTestKeys().replicas[1], pbft.MsgPrepare, from, w.prepBody)
		if m, err := v.Open(&pbft.Envelope{Msg: s}); !errors.Is(err, pbft.ErrMalformed) {
			t.Errorf("prepare from replica %d of %d: Open = %+v, %v; want ErrMalformed", from, codecN, m, err)
		}
	}
	// A signature of the wrong length, or none.
	for _, sig := range [][]byte{nil, {}, w.prep1.Sig[:63], append(w.prep1.Sig[:64:64], 0)} {
		s := w.prep1
		s.Sig = sig
		if m, err := v.Open(&pbft.Envelope{Msg: s}); !errors.Is(err, pbft.ErrBadSignature) {
			t.Errorf("signature of %d bytes: Open = %+v, %v; want ErrBadSignature", len(sig), m, err)
		}
	}
}

func TestOpenRejectsRequestSignedByAnotherClient(t *testing.T) {
	w := codecTestWorld()
	k := w.k
	v := k.verifier(pbft.DefaultLimits())
	// Bob signs, as himself, a request in Alice's name.
	s := pbft.Sign(k.clients[codecBob], pbft.MsgRequest, uint32(codecBob), w.req1Body)
	if m, err := v.Open(&pbft.Envelope{Msg: s}); !errors.Is(err, pbft.ErrMalformed) {
		t.Errorf("request of Alice signed by Bob as Bob: Open = %+v, %v; want ErrMalformed", m, err)
	}
	// Bob signs it claiming to be Alice.
	s = pbft.Sign(k.clients[codecBob], pbft.MsgRequest, uint32(codecAlice), w.req1Body)
	if m, err := v.Open(&pbft.Envelope{Msg: s}); !errors.Is(err, pbft.ErrBadSignature) {
		t.Errorf("request of Alice signed by Bob as Alice: Open = %+v, %v; want ErrBadSignature", m, err)
	}
	// Alice's own request re-attributed to Bob.
	s = w.req1
	s.From = uint32(codecBob)
	if m, err := v.Open(&pbft.Envelope{Msg: s}); !errors.Is(err, pbft.ErrMalformed) {
		t.Errorf("request of Alice with From = Bob: Open = %+v, %v; want ErrMalformed", m, err)
	}
	// A replica cannot issue requests: client and replica ids are separate name spaces.
	body := pbft.Request{Client: 1, Timestamp: 1, Op: []byte("x")}
	s = pbft.Sign(k.replicas[1], pbft.MsgRequest, 1, body)
	if m, err := v.Open(&pbft.Envelope{Msg: s}); !errors.Is(err, pbft.ErrBadSignature) {
		t.Errorf("request signed by replica 1 as client 1: Open = %+v, %v; want ErrBadSignature", m, err)
	}
	// Nor may an unregistered client.
	stranger := &pbft.KeySigner{Cluster: codecCluster, Key: k.scheme.DeriveKey([]byte("stranger"))}
	s = pbft.Sign(stranger, pbft.MsgRequest, 999, pbft.Request{Client: 999, Timestamp: 1})
	if m, err := v.Open(&pbft.Envelope{Msg: s}); !errors.Is(err, pbft.ErrBadSignature) {
		t.Errorf("request of an unregistered client: Open = %+v, %v; want ErrBadSignature", m, err)
	}
	// The same checks apply inside a batch.
	bad := pbft.Sign(k.clients[codecBob], pbft.MsgRequest, uint32(codecBob), w.req1Body)
	pp := k.replica(0, pbft.MsgPrePrepare, pbft.PrePrepare{View: 0, Seq: 11, Digest: codecBatchDigest(bad, w.req2)})
	if m, err := v.Open(&pbft.Envelope{Msg: pp, Batch: []pbft.Signed{bad, w.req2}}); !errors.Is(err, pbft.ErrMalformed) {
		t.Errorf("batch holding a request of Alice signed by Bob: Open = %+v, %v; want ErrMalformed", m, err)
	}
}

func TestOpenRejectsPrePrepareWhoseBatchDoesNotMatchDigest(t *testing.T) {
	w := codecTestWorld()
	v := w.k.verifier(pbft.DefaultLimits())
	batches := map[string][]pbft.Signed{
		"reordered":      {w.req2, w.req1},
		"missing a req":  {w.req1},
		"an extra req":   {w.req1, w.req2, w.reqEmpty},
		"a repeated req": {w.req1, w.req2, w.req2},
		"another req":    {w.req1, w.reqEmpty},
		"empty":          nil,
	}
	for name, batch := range batches {
		if m, err := v.Open(&pbft.Envelope{Msg: w.pp, Batch: batch}); !errors.Is(err, pbft.ErrMalformed) {
			t.Errorf("batch %s: Open = %+v, %v; want ErrMalformed", name, m, err)
		}
	}
	// A batch request whose op changed (re-signed by its client) changes the digest too.
	changed := w.k.request(codecAlice, 1, "put a 2")
	if m, err := v.Open(&pbft.Envelope{Msg: w.pp, Batch: []pbft.Signed{changed, w.req2}}); !errors.Is(err, pbft.ErrMalformed) {
		t.Errorf("batch with a changed request: Open = %+v, %v; want ErrMalformed", m, err)
	}
}

func TestOpenRejectsBatchWithTamperedRequestSignature(t *testing.T) {
	w := codecTestWorld()
	v := w.k.verifier(pbft.DefaultLimits())
	for i := range 2 {
		batch := []pbft.Signed{w.req1, w.req2}
		sig := bytes.Clone(batch[i].Sig)
		sig[len(sig)/2] ^= 0x01
		batch[i].Sig = sig
		// The digest covers request bodies only, so it still matches: the signature must
		// be checked on its own.
		env := &pbft.Envelope{Msg: w.pp, Batch: batch}
		if _, err := pbft.DecodeEnvelope(pbft.EncodeEnvelope(env), v.Limits); err != nil {
			t.Fatalf("DecodeEnvelope: %v", err)
		}
		if m, err := v.Open(env); !errors.Is(err, pbft.ErrBadSignature) {
			t.Errorf("request %d with a flipped signature bit: Open = %+v, %v; want ErrBadSignature", i, m, err)
		}
	}
}

func TestOpenRejectsCheckpointProofCountingAReplicaTwice(t *testing.T) {
	w := codecTestWorld()
	k := w.k
	v := k.verifier(pbft.DefaultLimits())
	// Another, equally valid checkpoint of replica 0 for the same sequence number.
	otherCP := k.replica(0, pbft.MsgCheckpoint, pbft.Checkpoint{Seq: 10, State: crypto.Hash([]byte("other state"))})
	proofs := map[string][]pbft.Signed{
		"same checkpoint twice":            {w.cps[0], w.cps[1], w.cps[0]},
		"two checkpoints of one replica":   {w.cps[0], w.cps[1], otherCP},
		"one checkpoint three times":       {w.cps[2], w.cps[2], w.cps[2]},
		"duplicate after a full quorum":    {w.cps[0], w.cps[1], w.cps[2], w.cps[3], w.cps[1]},
		"duplicate adjacent to the source": {w.cps[3], w.cps[3]},
	}
	for name, proof := range proofs {
		vc := k.replica(2, pbft.MsgViewChange, pbft.ViewChange{NewView: 1, StableSeq: 10, CheckpointProof: proof})
		if m, err := v.Open(&pbft.Envelope{Msg: vc}); !errors.Is(err, pbft.ErrMalformed) {
			t.Errorf("view change, %s: Open = %+v, %v; want ErrMalformed", name, m, err)
		}
		sr := k.replica(2, pbft.MsgStateResponse, pbft.StateResponse{Seq: 10, Proof: proof, State: w.stateCBOR})
		if m, err := v.Open(&pbft.Envelope{Msg: sr}); !errors.Is(err, pbft.ErrMalformed) {
			t.Errorf("state response, %s: Open = %+v, %v; want ErrMalformed", name, m, err)
		}
		// Nested one level further, in a new view.
		nv := k.replica(1, pbft.MsgNewView, pbft.NewView{View: 1, ViewChanges: []pbft.Signed{w.vcs[1], vc}})
		if m, err := v.Open(&pbft.Envelope{Msg: nv}); !errors.Is(err, pbft.ErrMalformed) {
			t.Errorf("new view holding a view change, %s: Open = %+v, %v; want ErrMalformed", name, m, err)
		}
	}
}

func TestOpenRejectsCheckpointProofForAnotherSeq(t *testing.T) {
	w := codecTestWorld()
	k := w.k
	v := k.verifier(pbft.DefaultLimits())
	cp20 := k.replica(2, pbft.MsgCheckpoint, pbft.Checkpoint{Seq: 20, State: w.cpBody.State})
	proof := []pbft.Signed{w.cps[0], w.cps[1], cp20}
	vc := k.replica(3, pbft.MsgViewChange, pbft.ViewChange{NewView: 1, StableSeq: 10, CheckpointProof: proof})
	if m, err := v.Open(&pbft.Envelope{Msg: vc}); !errors.Is(err, pbft.ErrMalformed) {
		t.Errorf("view change: Open = %+v, %v; want ErrMalformed", m, err)
	}
	sr := k.replica(3, pbft.MsgStateResponse, pbft.StateResponse{Seq: 20, Proof: proof})
	if m, err := v.Open(&pbft.Envelope{Msg: sr}); !errors.Is(err, pbft.ErrMalformed) {
		t.Errorf("state response: Open = %+v, %v; want ErrMalformed", m, err)
	}
}

// TestOpenRejectsWrongTypeInCertificate puts a validly signed message of the wrong type in
// each slot of a certificate.
func TestOpenRejectsWrongTypeInCertificate(t *testing.T) {
	w := codecTestWorld()
	k := w.k
	v := k.verifier(pbft.DefaultLimits())
	commit1 := k.replica(1, pbft.MsgCommit, pbft.Commit(w.prepBody))
	vcs := map[string]pbft.ViewChange{
		"commit in the prepares":          {NewView: 1, Prepared: []pbft.PreparedCert{{PrePrepare: w.pp, Prepares: []pbft.Signed{w.prep1, commit1}}}},
		"prepare as the pre-prepare":      {NewView: 1, Prepared: []pbft.PreparedCert{{PrePrepare: w.prep1, Prepares: []pbft.Signed{w.prep2}}}},
		"prepare in the checkpoint proof": {NewView: 1, StableSeq: 10, CheckpointProof: []pbft.Signed{w.cps[0], w.prep1}},
		"request in the prepares":         {NewView: 1, Prepared: []pbft.PreparedCert{{PrePrepare: w.pp, Prepares: []pbft.Signed{w.req1}}}},
	}
	for name, body := range vcs {
		vc := k.replica(3, pbft.MsgViewChange, body)
		if m, err := v.Open(&pbft.Envelope{Msg: vc}); !errors.Is(err, pbft.ErrMalformed) {
			t.Errorf("view change, %s: Open = %+v, %v; want ErrMalformed", name, m, err)
		}
	}
	nvs := map[string]pbft.NewView{
		"prepare among the view changes":  {View: 1, ViewChanges: []pbft.Signed{w.vcs[1], w.prep2}},
		"commit among the pre-prepares":   {View: 1, ViewChanges: []pbft.Signed{w.vcs[1]}, PrePrepares: []pbft.Signed{commit1}},
		"new view among the view changes": {View: 1, ViewChanges: []pbft.Signed{w.nv}},
	}
	for name, body := range nvs {
		nv := k.replica(1, pbft.MsgNewView, body)
		if m, err := v.Open(&pbft.Envelope{Msg: nv}); !errors.Is(err, pbft.ErrMalformed) {
			t.Errorf("new view, %s: Open = %+v, %v; want ErrMalformed", name, m, err)
		}
	}
	sr := k.replica(2, pbft.MsgStateResponse, pbft.StateResponse{Seq: 10, Proof: []pbft.Signed{w.cps[0], w.commit3}})
	if m, err := v.Open(&pbft.Envelope{Msg: sr}); !errors.Is(err, pbft.ErrMalformed) {
		t.Errorf("state response with a commit in its proof: Open = %+v, %v; want ErrMalformed", m, err)
	}
}

// TestOpenRejectsTamperedNestedSignature flips one bit of a signature nested in each kind
// of certificate.
func TestOpenRejectsTamperedNestedSignature(t *testing.T) {
	w := codecTestWorld()
	k := w.k
	v := k.verifier(pbft.DefaultLimits())
	flip := func(s pbft.Signed) pbft.Signed {
		s.Sig = bytes.Clone(s.Sig)
		s.Sig[0] ^= 0x80
		return s
	}
	bodies := map[string]struct {
		t    pbft.MsgType
		from uint32
		body any
	}{
		"checkpoint proof of a view change": {pbft.MsgViewChange, 3, pbft.ViewChange{NewView: 1, StableSeq: 10, CheckpointProof: []pbft.Signed{w.cps[0], flip(w.cps[1])}}},
		"pre-prepare of a prepared cert":    {pbft.MsgViewChange, 3, pbft.ViewChange{NewView: 1, Prepared: []pbft.PreparedCert{{PrePrepare: flip(w.pp), Prepares: []pbft.Signed{w.prep1}}}}},
		"prepare of a prepared cert":        {pbft.MsgViewChange, 3, pbft.ViewChange{NewView: 1, Prepared: []pbft.PreparedCert{{PrePrepare: w.pp, Prepares: []pbft.Signed{w.prep1, flip(w.prep2)}}}}},
		"view change of a new view":         {pbft.MsgNewView, 1, pbft.NewView{View: 1, ViewChanges: []pbft.Signed{w.vcs[1], flip(w.vcs[2])}}},
		"pre-prepare of a new view":         {pbft.MsgNewView, 1, pbft.NewView{View: 1, ViewChanges: []pbft.Signed{w.vcs[1]}, PrePrepares: []pbft.Signed{flip(w.nvPP)}}},
		"proof of a state response":         {pbft.MsgStateResponse, 2, pbft.StateResponse{Seq: 10, Proof: []pbft.Signed{flip(w.cps[0])}}},
	}
	for name, b := range bodies {
		s := k.replica(b.from, b.t, b.body)
		if m, err := v.Open(&pbft.Envelope{Msg: s}); !errors.Is(err, pbft.ErrBadSignature) {
			t.Errorf("%s: Open = %+v, %v; want ErrBadSignature", name, m, err)
		}
	}
}

func TestOpenRejectsOpOverLimit(t *testing.T) {
	w := codecTestWorld()
	k := w.k
	lim := pbft.DefaultLimits()
	lim.MaxOpBytes = 8
	v := k.verifier(lim)
	atLimit := k.request(codecAlice, 3, "12345678")
	overLimit := k.request(codecAlice, 4, "123456789")
	if _, err := v.Open(&pbft.Envelope{Msg: atLimit}); err != nil {
		t.Fatalf("op of exactly MaxOpBytes: %v", err)
	}
	if m, err := v.Open(&pbft.Envelope{Msg: overLimit}); !errors.Is(err, pbft.ErrMalformed) {
		t.Fatalf("op over MaxOpBytes: Open = %+v, %v; want ErrMalformed", m, err)
	}
	pp := k.replica(0, pbft.MsgPrePrepare, pbft.PrePrepare{View: 0, Seq: 12, Digest: codecBatchDigest(atLimit, overLimit)})
	if m, err := v.Open(&pbft.Envelope{Msg: pp, Batch: []pbft.Signed{atLimit, overLimit}}); !errors.Is(err, pbft.ErrMalformed) {
		t.Fatalf("batch with an op over MaxOpBytes: Open = %+v, %v; want ErrMalformed", m, err)
	}
}

func TestOpenRejectsStateOverLimit(t *testing.T) {
	w := codecTestWorld()
	k := w.k
	lim := pbft.DefaultLimits()
	lim.MaxStateBytes = len(w.stateCBOR)
	sr := k.replica(2, pbft.MsgStateResponse, pbft.StateResponse{Seq: 10, Proof: []pbft.Signed{w.cps[0]}, State: w.stateCBOR})
	if _, err := k.verifier(lim).Open(&pbft.Envelope{Msg: sr}); err != nil {
		t.Fatalf("state of exactly MaxStateBytes: %v", err)
	}
	lim.MaxStateBytes--
	if m, err := k.verifier(lim).Open(&pbft.Envelope{Msg: sr}); !errors.Is(err, pbft.ErrMalformed) {
		t.Fatalf("state over MaxStateBytes: Open = %+v, %v; want ErrMalformed", m, err)
	}
}

// TestOpenRejectsCertificateOverLimit checks MaxReplicas and MaxPrepared in every
// certificate: each case is accepted at the limit and rejected one over it.
func TestOpenRejectsCertificateOverLimit(t *testing.T) {
	w := codecTestWorld()
	k := w.k
	cert := pbft.PreparedCert{PrePrepare: w.pp, Prepares: []pbft.Signed{w.prep1, w.prep2}}
	cases := []struct {
		name string
		msg  pbft.Signed
		set  func(l *pbft.Limits, n int)
		n    int // entries in the certificate
	}{
		{
			name: "checkpoint proof of a view change",
			msg:  w.vcs[3],
			set:  func(l *pbft.Limits, n int) { l.MaxReplicas = n },
			n:    3, // the largest certificate of vcs[3]
		},
		{
			name: "prepares of a prepared certificate",
			msg:  k.replica(3, pbft.MsgViewChange, pbft.ViewChange{NewView: 1, Prepared: []pbft.PreparedCert{cert}}),
			set:  func(l *pbft.Limits, n int) { l.MaxReplicas = n },
			n:    2,
		},
		{
			name: "prepared certificates of a view change",
			msg:  k.replica(3, pbft.MsgViewChange, pbft.ViewChange{NewView: 1, Prepared: []pbft.PreparedCert{cert, cert, cert}}),
			set:  func(l *pbft.Limits, n int) { l.MaxPrepared = n },
			n:    3,
		},
		{
			name: "view changes of a new view",
			msg:  k.replica(1, pbft.MsgNewView, pbft.NewView{View: 1, ViewChanges: []pbft.Signed{w.vcs[0], w.vcs[1], w.vcs[2], w.vcs[3]}}),
			set:  func(l *pbft.Limits, n int) { l.MaxReplicas = n },
			n:    4,
		},
		{
			name: "pre-prepares of a new view",
			msg:  k.replica(1, pbft.MsgNewView, pbft.NewView{View: 1, PrePrepares: []pbft.Signed{w.nvPP, w.nvPP}}),
			set:  func(l *pbft.Limits, n int) { l.MaxPrepared = n },
			n:    2,
		},
		{
			name: "proof of a state response",
			msg:  k.replica(2, pbft.MsgStateResponse, pbft.StateResponse{Seq: 10, Proof: w.cps}),
			set:  func(l *pbft.Limits, n int) { l.MaxReplicas = n },
			n:    4,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lim := pbft.DefaultLimits()
			c.set(&lim, c.n)
			if _, err := k.verifier(lim).Open(&pbft.Envelope{Msg: c.msg}); err != nil {
				t.Fatalf("at the limit: %v", err)
			}
			c.set(&lim, c.n-1)
			if m, err := k.verifier(lim).Open(&pbft.Envelope{Msg: c.msg}); !errors.Is(err, pbft.ErrMalformed) {
				t.Fatalf("one over the limit: Open = %+v, %v; want ErrMalformed", m, err)
			}
		})
	}
}

func TestVerifiedCacheSkipsSecondVerification(t *testing.T) {
	w := codecTestWorld()
	ring := &codecCountingRing{inner: w.k.ring}
	cache := &codecMapCache{}
	v := &pbft.Verifier{Keys: ring, N: codecN, Limits: pbft.DefaultLimits(), Cache: cache}
	want := func(step string, replica, clients int64) {
		t.Helper()
		if r, c := ring.replica.Load(), ring.clients.Load(); r != replica || c != clients {
			t.Fatalf("after %s: %d replica and %d client checks, want %d and %d", step, r, c, replica, clients)
		}
	}
	open := func(step string, e *pbft.Envelope) {
		t.Helper()
		if _, err := v.Open(e); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
	}

	open("request", &pbft.Envelope{Msg: w.req1})
	want("request", 0, 1)
	open("request again", &pbft.Envelope{Msg: w.req1})
	want("request again", 0, 1)
	// Seen alone first, the request is not checked again inside the pre-prepare.
	open("pre-prepare", &pbft.Envelope{Msg: w.pp, Batch: []pbft.Signed{w.req1, w.req2}})
	want("pre-prepare", 1, 2)
	open("retransmitted pre-prepare", &pbft.Envelope{Msg: w.pp, Batch: []pbft.Signed{w.req1, w.req2}})
	want("retransmitted pre-prepare", 1, 2)
	// Prepares seen as votes are not checked again inside a view change's certificate,
	// nor are checkpoints in its proof once seen.
	open("prepare 1", &pbft.Envelope{Msg: w.prep1})
	open("prepare 2", &pbft.Envelope{Msg: w.prep2})
	want("prepares", 3, 2)
	for i := range 3 {
		open("checkpoint", &pbft.Envelope{Msg: w.cps[i]})
	}
	want("checkpoints", 6, 2)
	open("view change", &pbft.Envelope{Msg: w.vcs[3]})
	want("view change", 7, 2) // only the view change's own signature
	if n := cache.len(); n != 9 {
		t.Fatalf("cache holds %d signatures, want 9", n)
	}

	// A failed check is not cached, and a cached signature does not vouch for a tampered
	// copy of it.
	bad := w.req1
	bad.Sig = bytes.Clone(bad.Sig)
	bad.Sig[5] ^= 1
	for range 2 {
		if _, err := v.Open(&pbft.Envelope{Msg: bad}); !errors.Is(err, pbft.ErrBadSignature) {
			t.Fatalf("tampered request: err = %v, want ErrBadSignature", err)
		}
	}
	want("tampered request twice", 7, 4)
	relabelled := w.prep1
	relabelled.Type = pbft.MsgCommit
	if _, err := v.Open(&pbft.Envelope{Msg: relabelled}); !errors.Is(err, pbft.ErrBadSignature) {
		t.Fatalf("cached prepare re-labelled as a commit: err = %v, want ErrBadSignature", err)
	}
	moved := w.prep1
	moved.From = 3
	if _, err := v.Open(&pbft.Envelope{Msg: moved}); !errors.Is(err, pbft.ErrBadSignature) {
		t.Fatalf("cached prepare re-attributed to 3: err = %v, want ErrBadSignature", err)
	}
	want("re-labelled and re-attributed prepare", 9, 4)
	if n := cache.len(); n != 9 {
		t.Fatalf("cache holds %d signatures after failures, want still 9", n)
	}

	// Without a cache every open checks every signature.
	ring2 := &codecCountingRing{inner: w.k.ring}
	v2 := &pbft.Verifier{Keys: ring2, N: codecN, Limits: pbft.DefaultLimits()}
	for range 2 {
		if _, err := v2.Open(&pbft.Envelope{Msg: w.pp, Batch: []pbft.Signed{w.req1, w.req2}}); err != nil {
			t.Fatal(err)
		}
	}
	if r, c := ring2.replica.Load(), ring2.clients.Load(); r != 2 || c != 4 {
		t.Fatalf("without a cache: %d replica and %d client checks, want 2 and 4", r, c)
	}
}

// TestVerifiedCacheKeyIsNotShiftable: the cache key hashes type, sender, body and
// signature concatenated without lengths. Moving the body/signature boundary keeps the
// key, so a cached signature would vouch for the shifted message; this must still be
// rejected (today because the shifted body is never canonical CBOR).
func TestVerifiedCacheKeyIsNotShiftable(t *testing.T) {
	w := codecTestWorld()
	ring := &codecCountingRing{inner: w.k.ring}
	v := &pbft.Verifier{Keys: ring, N: codecN, Limits: pbft.DefaultLimits(), Cache: &codecMapCache{}}
	for _, s := range []pbft.Signed{w.req1, w.prep1} {
		if _, err := v.Open(&pbft.Envelope{Msg: s}); err != nil {
			t.Fatal(err)
		}
		for shift := 1; shift <= 8; shift++ {
			longer := s
			longer.Body = codecCat(s.Body, s.Sig[:shift])
			longer.Sig = s.Sig[shift:]
			shorter := s
			shorter.Body = s.Body[:len(s.Body)-shift]
			shorter.Sig = codecCat(s.Body[len(s.Body)-shift:], s.Sig)
			for _, m := range []pbft.Signed{longer, shorter} {
				if got, err := v.Open(&pbft.Envelope{Msg: m}); err == nil {
					t.Fatalf("%s with body/signature boundary moved by %d accepted: %+v", s.Type, shift, got)
				}
			}
		}
	}
}

// TestVerifierIsSafeForConcurrentUse opens the samples from many goroutines sharing one
// verifier and cache (run with -race).
func TestVerifierIsSafeForConcurrentUse(t *testing.T) {
	k := codecTestKeys()
	v := &pbft.Verifier{Keys: k.ring, N: codecN, Limits: pbft.DefaultLimits(), Cache: &codecMapCache{}}
	samples := codecSamples()
	var wg sync.WaitGroup
	errs := make(chan error, 8*len(samples))
	for range 8 {
		wg.Go(func() {
			for _, s := range samples {
				env, err := pbft.DecodeEnvelope(pbft.EncodeEnvelope(s.env), v.Limits)
				if err == nil {
					_, err = codecOpen(v, env)
				}
				if err != nil {
					errs <- fmt.Errorf("%s: %w", s.name, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
