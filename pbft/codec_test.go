package pbft_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/pbftkit/pbft/crypto"
	"github.com/pbftkit/pbft/pbft"
)

// The helpers of this file and fuzz_test.go are prefixed with "codec" so they cannot
// collide with those of other black-box test files of the package.

const (
	codecCluster = "test"
	codecN       = 4 // replicas 0..3, f = 1
)

// Registered clients of the test cluster.
const (
	codecAlice pbft.ClientID = 100
	codecBob   pbft.ClientID = 101
)

// codecKeys is a deterministic cluster: every key is derived from a fixed seed, and
// Ed25519 signatures are deterministic, so every encoding built from it is reproducible
// (which is what lets the fuzz seed corpus be committed).
type codecKeys struct {
	scheme   *crypto.Scheme
	replicas []*pbft.KeySigner
	clients  map[pbft.ClientID]*pbft.KeySigner
	ring     *pbft.PublicKeyRing
}

var codecTestKeys = sync.OnceValue(func() *codecKeys {
	scheme, err := crypto.SchemeByName("Ed25519")
	if err != nil {
		panic(err)
	}
	k := &codecKeys{
		scheme:  scheme,
		clients: map[pbft.ClientID]*pbft.KeySigner{},
		ring:    &pbft.PublicKeyRing{Cluster: codecCluster, Clients: map[pbft.ClientID]*crypto.PublicKey{}},
	}
	for i := range codecN {
		key := scheme.DeriveKey(fmt.Appendf(nil, "pbft codec test replica %d", i))
		k.replicas = append(k.replicas, &pbft.KeySigner{Cluster: codecCluster, Key: key})
		k.ring.Replicas = append(k.ring.Replicas, key.Public())
	}
	for _, c := range []pbft.ClientID{codecAlice, codecBob} {
		key := scheme.DeriveKey(fmt.Appendf(nil, "pbft codec test client %d", c))
		k.clients[c] = &pbft.KeySigner{Cluster: codecCluster, Key: key}
		k.ring.Clients[c] = key.Public()
	}
	return k
})

func (k *codecKeys) verifier(lim pbft.Limits) *pbft.Verifier {
	return &pbft.Verifier{Keys: k.ring, N: codecN, Limits: lim}
}

// request is a REQUEST signed by client c.
func (k *codecKeys) request(c pbft.ClientID, ts uint64, op string) pbft.Signed {
	return pbft.Sign(k.clients[c], pbft.MsgRequest, uint32(c), pbft.Request{Client: c, Timestamp: ts, Op: []byte(op)})
}

// replica is a message of type t signed by replica id.
func (k *codecKeys) replica(id uint32, t pbft.MsgType, body any) pbft.Signed {
	return pbft.Sign(k.replicas[id], t, id, body)
}

func codecBatchDigest(reqs ...pbft.Signed) crypto.Digest {
	ds := make([]crypto.Digest, len(reqs))
	for i := range reqs {
		ds[i] = pbft.RequestDigest(reqs[i].Body)
	}
	return pbft.BatchDigest(ds)
}

func codecRequestMsg(s pbft.Signed, r pbft.Request) *pbft.RequestMsg {
	return &pbft.RequestMsg{Signed: s, Request: r, Digest: pbft.RequestDigest(s.Body)}
}

// codecSample is one valid envelope of the test cluster and what opening it yields: a
// pbft.Message from Verifier.Open, or for a REPLY the *pbft.ReplyMsg of OpenReply (for a
// SUPERSEDED notice the *pbft.SupersededMsg of OpenSuperseded).
type codecSample struct {
	name string
	env  *pbft.Envelope
	want any
}

// codecWorld holds the building blocks of the samples, for tests that recombine them.
type codecWorld struct {
	k *codecKeys

	req1, req2, reqEmpty pbft.Signed
	req1Body, req2Body   pbft.Request
	reqEmptyBody         pbft.Request

	ppBody     pbft.PrePrepare // v=0 n=11, batch {req1, req2}, from 0
	pp         pbft.Signed
	prepBody   pbft.Prepare // matches pp
	prep1      pbft.Signed  // from 1
	prep2      pbft.Signed  // from 2
	commitBody pbft.Commit
	commit3    pbft.Signed // from 3

	state     pbft.CheckpointState
	stateCBOR []byte
	cpBody    pbft.Checkpoint // n=10
	cps       []pbft.Signed   // checkpoints from 0, 1, 2, 3

	vcBodies []pbft.ViewChange // to view 1, index = sender (1..3 used)
	vcs      []pbft.Signed
	nvPPBody pbft.PrePrepare // v=1 n=11, from 1
	nvPP     pbft.Signed
	nvBody   pbft.NewView
	nv       pbft.Signed // from 1

	replyBody pbft.Reply
	reply     pbft.Signed // from 2, unsigned

	supersededBody pbft.Superseded
	superseded     pbft.Signed // from 2, unsigned
}

var codecTestWorld = sync.OnceValue(func() *codecWorld {
	k := codecTestKeys()
	w := &codecWorld{k: k}

	w.req1Body = pbft.Request{Client: codecAlice, Timestamp: 1, Op: []byte("put a 1")}
	w.req1 = k.request(codecAlice, 1, "put a 1")
	w.req2Body = pbft.Request{Client: codecBob, Timestamp: 7, Op: []byte("get a")}
	w.req2 = k.request(codecBob, 7, "get a")
	w.reqEmptyBody = pbft.Request{Client: codecAlice, Timestamp: 2, Op: []byte{}}
	w.reqEmpty = k.request(codecAlice, 2, "")

	w.ppBody = pbft.PrePrepare{View: 0, Seq: 11, Digest: codecBatchDigest(w.req1, w.req2)}
	w.pp = k.replica(0, pbft.MsgPrePrepare, w.ppBody)
	w.prepBody = pbft.Prepare{View: 0, Seq: 11, Digest: w.ppBody.Digest}
	w.prep1 = k.replica(1, pbft.MsgPrepare, w.prepBody)
	w.prep2 = k.replica(2, pbft.MsgPrepare, w.prepBody)
	w.commitBody = pbft.Commit{View: 0, Seq: 11, Digest: w.ppBody.Digest}
	w.commit3 = k.replica(3, pbft.MsgCommit, w.commitBody)

	w.state = pbft.CheckpointState{
		App: []byte("app snapshot"),
		Clients: []pbft.ClientRecord{
			{Client: codecAlice, Low: 1, Replies: []pbft.CachedReply{{Timestamp: 2, Result: []byte("ok")}}},
			{Client: codecBob, Low: 6, Replies: []pbft.CachedReply{}},
		},
	}
	w.stateCBOR = pbft.Marshal(&w.state)
	w.cpBody = pbft.Checkpoint{Seq: 10, State: pbft.StateDigest(w.state.App, w.state.Clients)}
	for i := range uint32(codecN) {
		w.cps = append(w.cps, k.replica(i, pbft.MsgCheckpoint, w.cpBody))
	}

	w.vcBodies = make([]pbft.ViewChange, codecN)
	w.vcs = make([]pbft.Signed, codecN)
	for i := range uint32(codecN) {
		w.vcBodies[i] = pbft.ViewChange{
			NewView:         1,
			StableSeq:       10,
			CheckpointProof: []pbft.Signed{w.cps[0], w.cps[1], w.cps[2]},
			Prepared: []pbft.PreparedCert{{
				PrePrepare: w.pp,
				Prepares:   []pbft.Signed{w.prep1, w.prep2},
			}},
		}
		w.vcs[i] = k.replica(i, pbft.MsgViewChange, w.vcBodies[i])
	}
	w.nvPPBody = pbft.PrePrepare{View: 1, Seq: 11, Digest: w.ppBody.Digest}
	w.nvPP = k.replica(1, pbft.MsgPrePrepare, w.nvPPBody)
	w.nvBody = pbft.NewView{
		View:        1,
		ViewChanges: []pbft.Signed{w.vcs[1], w.vcs[2], w.vcs[3]},
		PrePrepares: []pbft.Signed{w.nvPP},
	}
	w.nv = k.replica(1, pbft.MsgNewView, w.nvBody)

	w.replyBody = pbft.Reply{View: 0, Timestamp: 1, Client: codecAlice, Result: []byte("1")}
	w.reply = pbft.Signed{Type: pbft.MsgReply, From: 2, Body: pbft.Marshal(&w.replyBody)}
	w.supersededBody = pbft.Superseded{View: 0, Client: codecAlice, Timestamp: 1, Low: 2, High: 5}
	w.superseded = pbft.Signed{Type: pbft.MsgSuperseded, From: 2, Body: pbft.Marshal(&w.supersededBody)}
	return w
})

func (w *codecWorld) vcMsg(i int) *pbft.ViewChangeMsg {
	return &pbft.ViewChangeMsg{
		Signed: w.vcs[i], ViewChange: w.vcBodies[i], Proof: w.cpMsgs(0, 1, 2),
		Certs: []*pbft.PreparedCertMsg{{
			PrePrepare: &pbft.PrePrepareMsg{Signed: w.pp, PrePrepare: w.ppBody},
			Prepares: []*pbft.PrepareMsg{
				{Signed: w.prep1, Prepare: w.prepBody}, {Signed: w.prep2, Prepare: w.prepBody},
			},
		}},
	}
}

func (w *codecWorld) cpMsgs(ids ...int) []*pbft.CheckpointMsg {
	out := make([]*pbft.CheckpointMsg, len(ids))
	for i, id := range ids {
		out[i] = &pbft.CheckpointMsg{Signed: w.cps[id], Checkpoint: w.cpBody}
	}
	return out
}

// codecSamples returns a valid envelope of every message type.
func codecSamples() []codecSample {
	w := codecTestWorld()
	k := w.k

	nullPPBody := pbft.PrePrepare{View: 1, Seq: 12, Digest: pbft.BatchDigest(nil)}
	nullPP := k.replica(1, pbft.MsgPrePrepare, nullPPBody)

	srBody := pbft.StateRequest{Seq: 10}
	sr := k.replica(3, pbft.MsgStateRequest, srBody)

	respBody := pbft.StateResponse{Seq: 10, Proof: []pbft.Signed{w.cps[0], w.cps[1], w.cps[3]}, State: w.stateCBOR}
	resp := k.replica(2, pbft.MsgStateResponse, respBody)
	proofOnlyBody := pbft.StateResponse{Seq: 10, Proof: []pbft.Signed{w.cps[2], w.cps[1], w.cps[0]}}
	proofOnly := k.replica(0, pbft.MsgStateResponse, proofOnlyBody)

	// A view change with nothing prepared above its checkpoint, and one from the
	// genesis state (no checkpoint proof at all).
	emptyVCBody := pbft.ViewChange{NewView: 2, StableSeq: 10, CheckpointProof: []pbft.Signed{w.cps[3], w.cps[0], w.cps[1]}}
	emptyVC := k.replica(2, pbft.MsgViewChange, emptyVCBody)
	genesisVCBody := pbft.ViewChange{NewView: 1, StableSeq: 0}
	genesisVC := k.replica(0, pbft.MsgViewChange, genesisVCBody)
	fetchBody := pbft.FetchBatch{Seq: 11, Digest: w.ppBody.Digest}
	fetch := k.replica(3, pbft.MsgFetchBatch, fetchBody)
	batchBody := pbft.BatchReply{Seq: 11, Digest: w.ppBody.Digest}
	batch := k.replica(2, pbft.MsgBatchReply, batchBody)

	return []codecSample{
		{
			name: "request",
			env:  &pbft.Envelope{Msg: w.req1},
			want: codecRequestMsg(w.req1, w.req1Body),
		},
		{
			name: "request-empty-op",
			env:  &pbft.Envelope{Msg: w.reqEmpty},
			want: codecRequestMsg(w.reqEmpty, w.reqEmptyBody),
		},
		{
			name: "pre-prepare-batch",
			env:  &pbft.Envelope{Msg: w.pp, Batch: []pbft.Signed{w.req1, w.req2}},
			want: &pbft.PrePrepareMsg{
				Signed: w.pp, PrePrepare: w.ppBody, HasBatch: true,
				Batch: []*pbft.RequestMsg{codecRequestMsg(w.req1, w.req1Body), codecRequestMsg(w.req2, w.req2Body)},
			},
		},
		{
			name: "pre-prepare-null",
			env:  &pbft.Envelope{Msg: nullPP},
			want: &pbft.PrePrepareMsg{Signed: nullPP, PrePrepare: nullPPBody, HasBatch: true, Batch: []*pbft.RequestMsg{}},
		},
		{
			name: "prepare",
			env:  &pbft.Envelope{Msg: w.prep1},
			want: &pbft.PrepareMsg{Signed: w.prep1, Prepare: w.prepBody},
		},
		{
			name: "commit",
			env:  &pbft.Envelope{Msg: w.commit3},
			want: &pbft.CommitMsg{Signed: w.commit3, Commit: w.commitBody},
		},
		{
			name: "reply",
			env:  &pbft.Envelope{Msg: w.reply},
			want: &pbft.ReplyMsg{From: 2, Reply: w.replyBody},
		},
		{
			name: "superseded",
			env:  &pbft.Envelope{Msg: w.superseded},
			want: &pbft.SupersededMsg{From: 2, Superseded: w.supersededBody},
		},
		{
			name: "checkpoint",
			env:  &pbft.Envelope{Msg: w.cps[2]},
			want: w.cpMsgs(2)[0],
		},
		{
			name: "view-change",
			env:  &pbft.Envelope{Msg: w.vcs[3]},
			want: w.vcMsg(3),
		},
		{
			name: "view-change-nothing-prepared",
			env:  &pbft.Envelope{Msg: emptyVC},
			want: &pbft.ViewChangeMsg{Signed: emptyVC, ViewChange: emptyVCBody, Proof: w.cpMsgs(3, 0, 1)},
		},
		{
			name: "view-change-genesis",
			env:  &pbft.Envelope{Msg: genesisVC},
			want: &pbft.ViewChangeMsg{Signed: genesisVC, ViewChange: genesisVCBody},
		},
		{
			name: "new-view",
			env:  &pbft.Envelope{Msg: w.nv},
			want: &pbft.NewViewMsg{
				Signed: w.nv, NewView: w.nvBody,
				ViewChanges: []*pbft.ViewChangeMsg{w.vcMsg(1), w.vcMsg(2), w.vcMsg(3)},
				PrePrepares: []*pbft.PrePrepareMsg{{Signed: w.nvPP, PrePrepare: w.nvPPBody}},
			},
		},
		{
			name: "fetch-batch",
			env:  &pbft.Envelope{Msg: fetch},
			want: &pbft.FetchBatchMsg{Signed: fetch, FetchBatch: fetchBody},
		},
		{
			name: "batch-reply",
			env:  &pbft.Envelope{Msg: batch, Batch: []pbft.Signed{w.req1, w.req2}},
			want: &pbft.BatchReplyMsg{
				Signed: batch, BatchReply: batchBody,
				Batch: []*pbft.RequestMsg{codecRequestMsg(w.req1, w.req1Body), codecRequestMsg(w.req2, w.req2Body)},
			},
		},
		{
			name: "state-request",
			env:  &pbft.Envelope{Msg: sr},
			want: &pbft.StateRequestMsg{Signed: sr, StateRequest: srBody},
		},
		{
			name: "state-response",
			env:  &pbft.Envelope{Msg: resp},
			want: &pbft.StateResponseMsg{Signed: resp, StateResponse: respBody, Proof: w.cpMsgs(0, 1, 3)},
		},
		{
			name: "state-response-proof-only",
			env:  &pbft.Envelope{Msg: proofOnly},
			want: &pbft.StateResponseMsg{Signed: proofOnly, StateResponse: proofOnlyBody, Proof: w.cpMsgs(2, 1, 0)},
		},
	}
}

// codecOpen opens a decoded envelope the way its receiver would: a client with
// OpenReply or OpenSuperseded, a replica with Verifier.Open.
func codecOpen(v *pbft.Verifier, e *pbft.Envelope) (any, error) {
	switch e.Msg.Type {
	case pbft.MsgReply:
		return pbft.OpenReply(&e.Msg, pbft.ReplicaID(e.Msg.From), v.Limits)
	case pbft.MsgSuperseded:
		return pbft.OpenSuperseded(&e.Msg, pbft.ReplicaID(e.Msg.From), v.Limits)
	}
	return v.Open(e)
}

func TestEnvelopeRoundTripEveryMessageType(t *testing.T) {
	samples := codecSamples()
	seen := map[pbft.MsgType]bool{}
	for _, s := range samples {
		seen[s.env.Msg.Type] = true
	}
	for typ := pbft.MsgRequest; typ <= pbft.MsgSuperseded; typ++ {
		if !seen[typ] {
			t.Errorf("no round-trip sample of %s", typ)
		}
	}

	v := codecTestKeys().verifier(pbft.DefaultLimits())
	for _, s := range samples {
		t.Run(s.name, func(t *testing.T) {
			b := pbft.EncodeEnvelope(s.env)
			env, err := pbft.DecodeEnvelope(b, v.Limits)
			if err != nil {
				t.Fatalf("DecodeEnvelope: %v", err)
			}
			if !codecEqual(env, s.env) {
				t.Fatalf("decoded envelope differs:\n got %+v\nwant %+v", env, s.env)
			}
			if again := pbft.EncodeEnvelope(env); !bytes.Equal(again, b) {
				t.Fatalf("re-encoding differs:\n got %x\nwant %x", again, b)
			}
			got, err := codecOpen(v, env)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			if !codecEqual(got, s.want) {
				t.Fatalf("opened message differs: %s", cmp.Diff(s.want, got, codecCmpOpts...))
			}
			if m, ok := got.(pbft.Message); ok {
				if !codecEqual(*m.Raw(), s.env.Msg) || pbft.From(m) != s.env.Msg.From {
					t.Fatalf("Raw() = %+v, want %+v", *m.Raw(), s.env.Msg)
				}
				if pp, ok := m.(*pbft.PrePrepareMsg); ok {
					if e := pp.Envelope(); !bytes.Equal(pbft.EncodeEnvelope(e), b) {
						t.Fatalf("PrePrepareMsg.Envelope() re-encodes to %x, want %x", pbft.EncodeEnvelope(e), b)
					}
				}
			}
		})
	}
}

func TestBodiesRoundTrip(t *testing.T) {
	for _, bt := range codecBodyTypes {
		t.Run(bt.name, func(t *testing.T) {
			b := pbft.Marshal(bt.sample())
			v := bt.zero()
			if err := pbft.Unmarshal(b, v); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if !reflect.DeepEqual(v, bt.sample()) {
				t.Fatalf("got %+v, want %+v", v, bt.sample())
			}
			if err := pbft.Unmarshal(append(b[:len(b):len(b)], 0), bt.zero()); !errors.Is(err, pbft.ErrMalformed) {
				t.Fatalf("trailing byte: err = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestUnmarshalCheckpointStateRoundTrip(t *testing.T) {
	w := codecTestWorld()
	var cs pbft.CheckpointState
	if err := pbft.Unmarshal(w.stateCBOR, &cs); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cs, w.state) {
		t.Fatalf("got %+v, want %+v", cs, w.state)
	}
	if pbft.StateDigest(cs.App, cs.Clients) != w.cpBody.State {
		t.Fatal("state digest changed across a round trip")
	}
}

// --- hand-built CBOR ---

// codecHead is the canonical head of major type major with argument n.
func codecHead(major byte, n uint64) []byte {
	switch {
	case n < 24:
		return []byte{major<<5 | byte(n)}
	case n <= 0xff:
		return []byte{major<<5 | 24, byte(n)}
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16([]byte{major<<5 | 25}, uint16(n))
	case n <= 0xffffffff:
		return binary.BigEndian.AppendUint32([]byte{major<<5 | 26}, uint32(n))
	default:
		return binary.BigEndian.AppendUint64([]byte{major<<5 | 27}, n)
	}
}

// codecLongHead is the head of major type major with argument n in a size-byte argument
// (1, 2, 4 or 8), canonical only when that is the shortest form.
func codecLongHead(major byte, n uint64, size int) []byte {
	switch size {
	case 1:
		return []byte{major<<5 | 24, byte(n)}
	case 2:
		return binary.BigEndian.AppendUint16([]byte{major<<5 | 25}, uint16(n))
	case 4:
		return binary.BigEndian.AppendUint32([]byte{major<<5 | 26}, uint32(n))
	default:
		return binary.BigEndian.AppendUint64([]byte{major<<5 | 27}, n)
	}
}

func codecBstr(b []byte) []byte { return append(codecHead(2, uint64(len(b))), b...) }

func codecCat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

const (
	codecNull      = 0xf6
	codecUndefined = 0xf7
	codecBreak     = 0xff
)

// codecSignedParts are the encoded fields of a Signed, to be reassembled.
type codecSignedParts struct {
	head, typ, from, body, sig []byte
}

func codecParts(s pbft.Signed) codecSignedParts {
	return codecSignedParts{
		head: codecHead(4, 4),
		typ:  codecHead(0, uint64(s.Type)),
		from: codecHead(0, uint64(s.From)),
		body: codecBstr(s.Body),
		sig:  codecBstr(s.Sig),
	}
}

func (p codecSignedParts) bytes() []byte { return codecCat(p.head, p.typ, p.from, p.body, p.sig) }

// codecEnvelopeBytes is an envelope of one signed message and no batch (an empty array:
// null is not the canonical form of an empty container).
func codecEnvelopeBytes(signed []byte) []byte {
	return codecCat(codecHead(4, 2), signed, codecHead(4, 0))
}

func TestHandBuiltEncodingIsCanonical(t *testing.T) {
	// The non-canonical cases below are variations of these bytes: check they are right.
	w := codecTestWorld()
	if got, want := codecEnvelopeBytes(codecParts(w.prep1).bytes()), pbft.EncodeEnvelope(&pbft.Envelope{Msg: w.prep1}); !bytes.Equal(got, want) {
		t.Fatalf("hand-built envelope %x, EncodeEnvelope %x", got, want)
	}
	body := codecCat(codecHead(4, 3), codecHead(0, w.prepBody.View), codecHead(0, w.prepBody.Seq), codecBstr(w.prepBody.Digest[:]))
	if !bytes.Equal(body, w.prep1.Body) {
		t.Fatalf("hand-built prepare body %x, Marshal %x", body, w.prep1.Body)
	}
}

func TestDecodeRejectsNonCanonicalEncoding(t *testing.T) {
	w := codecTestWorld()
	lim := pbft.DefaultLimits()
	p := codecParts(w.prep1)
	with := func(f func(*codecSignedParts)) []byte {
		q := p
		f(&q)
		return codecEnvelopeBytes(q.bytes())
	}
	envBody := p.bytes()
	cases := []struct {
		name string
		b    []byte
	}{
		{"type in a one-byte argument", with(func(q *codecSignedParts) { q.typ = codecLongHead(0, uint64(pbft.MsgPrepare), 1) })},
		{"type in an eight-byte argument", with(func(q *codecSignedParts) { q.typ = codecLongHead(0, uint64(pbft.MsgPrepare), 8) })},
		{"sender in a two-byte argument", with(func(q *codecSignedParts) { q.from = codecLongHead(0, 1, 2) })},
		{"sender in a four-byte argument", with(func(q *codecSignedParts) { q.from = codecLongHead(0, 1, 4) })},
		{"body length in a two-byte argument", with(func(q *codecSignedParts) {
			q.body = append(codecLongHead(2, uint64(len(w.prep1.Body)), 2), w.prep1.Body...)
		})},
		{"signature length in an eight-byte argument", with(func(q *codecSignedParts) {
			q.sig = append(codecLongHead(2, uint64(len(w.prep1.Sig)), 8), w.prep1.Sig...)
		})},
		{"signed array head in a one-byte argument", with(func(q *codecSignedParts) { q.head = codecLongHead(4, 4, 1) })},
		{"indefinite-length signed array", codecCat(codecHead(4, 2), []byte{0x9f}, p.typ, p.from, p.body, p.sig, []byte{codecBreak}, []byte{codecNull})},
		{"indefinite-length envelope array", codecCat([]byte{0x9f}, envBody, []byte{codecNull, codecBreak})},
		{"indefinite-length body byte string", with(func(q *codecSignedParts) {
			half := len(w.prep1.Body) / 2
			q.body = codecCat([]byte{0x5f}, codecBstr(w.prep1.Body[:half]), codecBstr(w.prep1.Body[half:]), []byte{codecBreak})
		})},
		{"empty batch as an indefinite-length array", codecCat(codecHead(4, 2), envBody, []byte{0x9f, codecBreak})},
		{"batch as undefined", codecCat(codecHead(4, 2), envBody, []byte{codecUndefined})},
		{"signature as undefined", with(func(q *codecSignedParts) { q.sig = []byte{codecUndefined} })},
		{"signature as a text string", with(func(q *codecSignedParts) { q.sig = append(codecHead(3, uint64(len(w.prep1.Sig))), w.prep1.Sig...) })},
		{"type as a half-precision float", with(func(q *codecSignedParts) { q.typ = []byte{0xf9, 0x42, 0x00} })},
		{"type as a float of the next-larger width", with(func(q *codecSignedParts) { q.typ = []byte{0xfa, 0x40, 0x40, 0x00, 0x00} })},
		{"tagged body (tag 24, embedded CBOR)", with(func(q *codecSignedParts) { q.body = codecCat([]byte{0xd8, 0x18}, p.body) })},
		{"tagged envelope (self-describe tag 55799)", codecCat([]byte{0xd9, 0xd9, 0xf7}, codecEnvelopeBytes(envBody))},
		{"envelope as a map", codecCat([]byte{0xa2, 0x00}, envBody, []byte{0x01, codecNull})},
		{"envelope with a third element", codecCat(codecHead(4, 3), envBody, []byte{codecNull, 0x00})},
		{"envelope with one element", codecCat(codecHead(4, 1), envBody)},
		{"signed with five elements", with(func(q *codecSignedParts) { q.head = codecHead(4, 5); q.sig = append(q.sig, 0x00) })},
		{"negative sender", with(func(q *codecSignedParts) { q.from = codecHead(1, 0) })},
		{"sender overflowing uint32", with(func(q *codecSignedParts) { q.from = codecHead(0, 1<<32) })},
		{"type overflowing uint8", with(func(q *codecSignedParts) { q.typ = codecHead(0, 256+uint64(pbft.MsgPrepare)) })},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if env, err := pbft.DecodeEnvelope(c.b, lim); !errors.Is(err, pbft.ErrMalformed) {
				t.Fatalf("DecodeEnvelope(%x) = %+v, %v; want ErrMalformed", c.b, env, err)
			}
		})
	}
}

func TestDecodeRejectsOversizedEnvelope(t *testing.T) {
	w := codecTestWorld()
	b := pbft.EncodeEnvelope(&pbft.Envelope{Msg: w.pp, Batch: []pbft.Signed{w.req1, w.req2}})
	lim := pbft.DefaultLimits()
	lim.MaxMessageBytes = len(b)
	if _, err := pbft.DecodeEnvelope(b, lim); err != nil {
		t.Fatalf("envelope of exactly MaxMessageBytes: %v", err)
	}
	lim.MaxMessageBytes = len(b) - 1
	if _, err := pbft.DecodeEnvelope(b, lim); !errors.Is(err, pbft.ErrMalformed) {
		t.Fatalf("envelope one byte over MaxMessageBytes: err = %v, want ErrMalformed", err)
	}
	// The limit is checked before decoding: garbage over the limit is rejected for its size.
	lim.MaxMessageBytes = 16
	if _, err := pbft.DecodeEnvelope(bytes.Repeat([]byte{0x9f}, 17), lim); !errors.Is(err, pbft.ErrMalformed) {
		t.Fatalf("oversized garbage: err = %v, want ErrMalformed", err)
	}
	// And Open bounds a body on its own, for envelopes not produced by DecodeEnvelope.
	lim = pbft.DefaultLimits()
	lim.MaxMessageBytes = len(w.prep1.Body) - 1
	if m, err := w.k.verifier(lim).Open(&pbft.Envelope{Msg: w.prep1}); !errors.Is(err, pbft.ErrMalformed) {
		t.Fatalf("body over MaxMessageBytes: Open = %+v, %v; want ErrMalformed", m, err)
	}
}

func TestDecodeRejectsBatchOverLimit(t *testing.T) {
	w := codecTestWorld()
	env := &pbft.Envelope{Msg: w.pp, Batch: []pbft.Signed{w.req1, w.req2}}
	b := pbft.EncodeEnvelope(env)
	lim := pbft.DefaultLimits()
	lim.MaxBatchRequests = 2
	if _, err := pbft.DecodeEnvelope(b, lim); err != nil {
		t.Fatalf("batch of exactly MaxBatchRequests: %v", err)
	}
	if _, err := w.k.verifier(lim).Open(env); err != nil {
		t.Fatalf("batch of exactly MaxBatchRequests: Open: %v", err)
	}
	lim.MaxBatchRequests = 1
	if _, err := pbft.DecodeEnvelope(b, lim); !errors.Is(err, pbft.ErrMalformed) {
		t.Fatalf("batch over MaxBatchRequests: DecodeEnvelope err = %v, want ErrMalformed", err)
	}
	if m, err := w.k.verifier(lim).Open(env); !errors.Is(err, pbft.ErrMalformed) {
		t.Fatalf("batch over MaxBatchRequests: Open = %+v, %v; want ErrMalformed", m, err)
	}
}

func TestDecodeRejectsTrailingBytes(t *testing.T) {
	w := codecTestWorld()
	lim := pbft.DefaultLimits()
	b := pbft.EncodeEnvelope(&pbft.Envelope{Msg: w.commit3})
	for _, tail := range [][]byte{{0x00}, {codecNull}, b} {
		in := codecCat(b, tail)
		if _, err := pbft.DecodeEnvelope(in, lim); !errors.Is(err, pbft.ErrMalformed) {
			t.Errorf("DecodeEnvelope(envelope || %x): err = %v, want ErrMalformed", tail, err)
		}
	}
	// A truncated envelope is no better.
	for n := range len(b) {
		if _, err := pbft.DecodeEnvelope(b[:n], lim); !errors.Is(err, pbft.ErrMalformed) {
			t.Fatalf("DecodeEnvelope of the first %d of %d bytes: err = %v, want ErrMalformed", n, len(b), err)
		}
	}
}

func TestDecodeRejectsUnknownMessageType(t *testing.T) {
	w := codecTestWorld()
	k := w.k
	lim := pbft.DefaultLimits()
	v := k.verifier(lim)
	for _, typ := range []pbft.MsgType{0, pbft.MsgSuperseded + 1, 100, 255} {
		s := pbft.Signed{Type: typ, From: 1, Body: w.prep1.Body, Sig: k.replicas[1].Sign(typ, 1, w.prep1.Body)}
		env := &pbft.Envelope{Msg: s}
		if _, err := pbft.DecodeEnvelope(pbft.EncodeEnvelope(env), lim); !errors.Is(err, pbft.ErrMalformed) {
			t.Errorf("type %d: DecodeEnvelope err = %v, want ErrMalformed", typ, err)
		}
		if m, err := v.Open(env); !errors.Is(err, pbft.ErrMalformed) {
			t.Errorf("type %d: Open = %+v, %v; want ErrMalformed", typ, m, err)
		}
		if typ.String() != "unknown" {
			t.Errorf("MsgType(%d).String() = %q, want \"unknown\"", typ, typ.String())
		}
	}
}

func TestDecodeRejectsBatchOnAnotherType(t *testing.T) {
	w := codecTestWorld()
	lim := pbft.DefaultLimits()
	v := w.k.verifier(lim)
	for _, s := range []pbft.Signed{w.req1, w.prep1, w.commit3, w.cps[0], w.vcs[1], w.nv, w.reply, w.superseded} {
		env := &pbft.Envelope{Msg: s, Batch: []pbft.Signed{w.req2}}
		if _, err := pbft.DecodeEnvelope(pbft.EncodeEnvelope(env), lim); !errors.Is(err, pbft.ErrMalformed) {
			t.Errorf("%s with a batch: DecodeEnvelope err = %v, want ErrMalformed", s.Type, err)
		}
		if m, err := v.Open(env); !errors.Is(err, pbft.ErrMalformed) {
			t.Errorf("%s with a batch: Open = %+v, %v; want ErrMalformed", s.Type, m, err)
		}
	}
	// A batch holds requests only.
	env := &pbft.Envelope{Msg: w.pp, Batch: []pbft.Signed{w.req1, w.prep1}}
	if _, err := pbft.DecodeEnvelope(pbft.EncodeEnvelope(env), lim); !errors.Is(err, pbft.ErrMalformed) {
		t.Errorf("batch with a prepare: DecodeEnvelope err = %v, want ErrMalformed", err)
	}
	if m, err := v.Open(env); !errors.Is(err, pbft.ErrMalformed) {
		t.Errorf("batch with a prepare: Open = %+v, %v; want ErrMalformed", m, err)
	}
}

// --- the verified-signature cache ---

// codecCountingRing counts the signature checks that reach the key ring.
type codecCountingRing struct {
	inner            pbft.KeyRing
	replica, clients atomic.Int64
}

func (r *codecCountingRing) VerifyReplica(id pbft.ReplicaID, t pbft.MsgType, body, sig []byte) bool {
	r.replica.Add(1)
	return r.inner.VerifyReplica(id, t, body, sig)
}

func (r *codecCountingRing) VerifyClient(id pbft.ClientID, t pbft.MsgType, body, sig []byte) bool {
	r.clients.Add(1)
	return r.inner.VerifyClient(id, t, body, sig)
}

type codecMapCache struct {
	mu sync.Mutex
	m  map[crypto.Digest]bool
}

func (c *codecMapCache) Verified(k crypto.Digest) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}

func (c *codecMapCache) Add(k crypto.Digest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[crypto.Digest]bool{}
	}
	c.m[k] = true
}

func (c *codecMapCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// codecCmpOpts compare decoded messages field by field, a nil and an empty container
// being equal: both have one wire form, the empty one.
var codecCmpOpts = []cmp.Option{
	cmpopts.EquateEmpty(),
	cmp.Exporter(func(reflect.Type) bool { return true }),
}

func codecEqual(a, b any) bool { return cmp.Equal(a, b, codecCmpOpts...) }
