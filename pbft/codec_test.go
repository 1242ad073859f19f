package pbft_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"

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

func TestOpenReplyRejectsResultOverLimit(t *testing.T) {
	lim := pbft.DefaultLimits()
	lim.MaxResultBytes = 4
	for _, c := range []struct {
		result string
		ok     bool
	}{{"", true}, {"1234", true}, {"12345", false}} {
		s := &pbft.Signed{Type: pbft.MsgReply, From: 1, Body: pbft.Marshal(pbft.Reply{Client: codecAlice, Result: []byte(c.result)})}
		_, err := pbft.OpenReply(s, 1, lim)
		if c.ok && err != nil {
			t.Errorf("result of %d bytes: %v", len(c.result), err)
		}
		if !c.ok && !errors.Is(err, pbft.ErrMalformed) {
			t.Errorf("result of %d bytes over %d: err = %v, want ErrMalformed", len(c.result), lim.MaxResultBytes, err)
		}
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

func TestOpenReplyRejectsReplyNamingAnotherReplica(t *testing.T) {
	w := codecTestWorld()
	lim := pbft.DefaultLimits()
	if _, err := pbft.OpenReply(&w.reply, 2, lim); err != nil {
		t.Fatalf("reply of 2 from 2: %v", err)
	}
	for _, from := range []pbft.ReplicaID{0, 1, 3, 1<<32 - 1} {
		if r, err := pbft.OpenReply(&w.reply, from, lim); !errors.Is(err, pbft.ErrMalformed) {
			t.Errorf("reply naming replica 2 on the channel of %d: OpenReply = %+v, %v; want ErrMalformed", from, r, err)
		}
	}
	// Only replies are opened this way.
	for _, s := range []pbft.Signed{w.prep2, w.req1, w.cps[2]} {
		if r, err := pbft.OpenReply(&s, pbft.ReplicaID(s.From), lim); !errors.Is(err, pbft.ErrMalformed) {
			t.Errorf("OpenReply(%s) = %+v, %v; want ErrMalformed", s.Type, r, err)
		}
	}
	// And the body must be a canonical REPLY.
	for name, body := range map[string][]byte{
		"prepare body":   w.prep2.Body,
		"trailing byte":  codecCat(w.reply.Body, []byte{0}),
		"empty":          nil,
		"long-form view": codecCat(codecHead(4, 4), codecLongHead(0, 0, 1), w.reply.Body[2:]),
	} {
		s := w.reply
		s.Body = body
		if r, err := pbft.OpenReply(&s, 2, lim); !errors.Is(err, pbft.ErrMalformed) {
			t.Errorf("reply with %s: OpenReply = %+v, %v; want ErrMalformed", name, r, err)
		}
	}
}

func TestOpenSupersededRejectsNoticeNamingAnotherReplicaOrImpossibleMarks(t *testing.T) {
	w := codecTestWorld()
	lim := pbft.DefaultLimits()
	if _, err := pbft.OpenSuperseded(&w.superseded, 2, lim); err != nil {
		t.Fatalf("notice of 2 from 2: %v", err)
	}
	for _, from := range []pbft.ReplicaID{0, 1, 3, 1<<32 - 1} {
		if n, err := pbft.OpenSuperseded(&w.superseded, from, lim); !errors.Is(err, pbft.ErrMalformed) {
			t.Errorf("notice naming replica 2 on the channel of %d: OpenSuperseded = %+v, %v; want ErrMalformed", from, n, err)
		}
	}
	// Only superseded notices are opened this way.
	for _, s := range []pbft.Signed{w.reply, w.prep2, w.req1} {
		if n, err := pbft.OpenSuperseded(&s, pbft.ReplicaID(s.From), lim); !errors.Is(err, pbft.ErrMalformed) {
			t.Errorf("OpenSuperseded(%s) = %+v, %v; want ErrMalformed", s.Type, n, err)
		}
	}
	// A notice no correct replica sends: the request above the low mark, or the low
	// mark above the highest timestamp admitted.
	for _, b := range []pbft.Superseded{
		{Client: codecAlice, Timestamp: 3, Low: 2, High: 5},
		{Client: codecAlice, Timestamp: 1, Low: 6, High: 5},
	} {
		s := w.superseded
		s.Body = pbft.Marshal(&b)
		if n, err := pbft.OpenSuperseded(&s, 2, lim); !errors.Is(err, pbft.ErrMalformed) {
			t.Errorf("notice %+v: OpenSuperseded = %+v, %v; want ErrMalformed", b, n, err)
		}
	}
	// And the body must be a canonical SUPERSEDED within the limits.
	for name, body := range map[string][]byte{
		"reply body":     w.reply.Body,
		"trailing byte":  codecCat(w.superseded.Body, []byte{0}),
		"empty":          nil,
		"long-form view": codecCat(codecHead(4, 5), codecLongHead(0, 0, 1), w.superseded.Body[2:]),
	} {
		s := w.superseded
		s.Body = body
		if n, err := pbft.OpenSuperseded(&s, 2, lim); !errors.Is(err, pbft.ErrMalformed) {
			t.Errorf("notice with %s: OpenSuperseded = %+v, %v; want ErrMalformed", name, n, err)
		}
	}
	tight := lim
	tight.MaxMessageBytes = len(w.superseded.Body) - 1
	if n, err := pbft.OpenSuperseded(&w.superseded, 2, tight); !errors.Is(err, pbft.ErrMalformed) {
		t.Errorf("notice over MaxMessageBytes: OpenSuperseded = %+v, %v; want ErrMalformed", n, err)
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

// codecCmpOpts compare decoded messages field by field, a nil and an empty container
// being equal: both have one wire form, the empty one.
var codecCmpOpts = []cmp.Option{
	cmpopts.EquateEmpty(),
	cmp.Exporter(func(reflect.Type) bool { return true }),
}

func codecEqual(a, b any) bool { return cmp.Equal(a, b, codecCmpOpts...) }
