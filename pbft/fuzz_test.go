package pbft_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/pbftkit/pbft/crypto"
	"github.com/pbftkit/pbft/pbft"
)

// The fuzz targets check, for every decoder of network input, that it never panics, that
// every error wraps pbft.ErrMalformed (or pbft.ErrBadSignature), and that whatever it
// accepts is the one canonical encoding of what it decoded. Their seed corpus is in
// testdata/fuzz/<target>/ and runs with every `go test`; regenerate its valid-* and
// malformed-* files after a change of the wire format with
//
//	PBFT_WRITE_CORPUS=1 go test -run '^TestWriteFuzzCorpus$' ./pbft/
//
// (keys and Ed25519 signatures are deterministic, so the files are reproducible).

// codecTightLimits are small enough that the fuzzer reaches every limit check.
var codecTightLimits = pbft.Limits{
	MaxMessageBytes:  4 << 10,
	MaxBatchRequests: 1,
	MaxOpBytes:       4,
	MaxResultBytes:   1,
	MaxReplicas:      2,
	MaxPrepared:      1,
	MaxStateBytes:    64,
}

// codecAcceptAll is a key ring that accepts every signature, so that fuzzed bodies
// (whose signatures never verify) still reach the structural checks behind them.
type codecAcceptAll struct{}

func (codecAcceptAll) VerifyReplica(pbft.ReplicaID, pbft.MsgType, []byte, []byte) bool { return true }
func (codecAcceptAll) VerifyClient(pbft.ClientID, pbft.MsgType, []byte, []byte) bool   { return true }

// codecCheckErr fails unless err is nil or one of the documented error kinds.
func codecCheckErr(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil && !errors.Is(err, pbft.ErrMalformed) && !errors.Is(err, pbft.ErrBadSignature) {
		t.Fatalf("%s: error %q wraps neither ErrMalformed nor ErrBadSignature", what, err)
	}
}

// codecCheckOpened checks the invariants of a message Open accepted from e.
func codecCheckOpened(t *testing.T, what string, e *pbft.Envelope, m pbft.Message, lim pbft.Limits) {
	t.Helper()
	if m == nil {
		t.Fatalf("%s: nil message without error", what)
	}
	if !reflect.DeepEqual(*m.Raw(), e.Msg) {
		t.Fatalf("%s: Raw() = %+v, want %+v", what, *m.Raw(), e.Msg)
	}
	var body any
	switch m := m.(type) {
	case *pbft.RequestMsg:
		if len(m.Request.Op) > lim.MaxOpBytes || uint32(m.Request.Client) != m.Signed.From || m.Digest != pbft.RequestDigest(m.Signed.Body) {
			t.Fatalf("%s: accepted request %+v", what, m)
		}
		body = &m.Request
	case *pbft.PrePrepareMsg:
		if !m.HasBatch || len(m.Batch) != len(e.Batch) || len(m.Batch) > lim.MaxBatchRequests {
			t.Fatalf("%s: pre-prepare with batch of %d, envelope %d", what, len(m.Batch), len(e.Batch))
		}
		ds := make([]crypto.Digest, len(m.Batch))
		for i, r := range m.Batch {
			ds[i] = r.Digest
		}
		if pbft.BatchDigest(ds) != m.PrePrepare.Digest {
			t.Fatalf("%s: pre-prepare accepted with a batch not matching its digest", what)
		}
		if len(e.Batch) > 0 && !bytes.Equal(pbft.EncodeEnvelope(m.Envelope()), pbft.EncodeEnvelope(e)) {
			t.Fatalf("%s: PrePrepareMsg.Envelope() differs from the envelope opened", what)
		}
		body = &m.PrePrepare
	case *pbft.PrepareMsg:
		body = &m.Prepare
	case *pbft.CommitMsg:
		body = &m.Commit
	case *pbft.CheckpointMsg:
		body = &m.Checkpoint
	case *pbft.ViewChangeMsg:
		if len(m.ViewChange.CheckpointProof) > lim.MaxReplicas || len(m.ViewChange.Prepared) > lim.MaxPrepared ||
			len(m.Proof) != len(m.ViewChange.CheckpointProof) || len(m.Certs) != len(m.ViewChange.Prepared) {
			t.Fatalf("%s: view change over limits accepted", what)
		}
		body = &m.ViewChange
	case *pbft.NewViewMsg:
		if len(m.ViewChanges) != len(m.NewView.ViewChanges) || len(m.PrePrepares) != len(m.NewView.PrePrepares) ||
			len(m.ViewChanges) > lim.MaxReplicas || len(m.PrePrepares) > lim.MaxPrepared {
			t.Fatalf("%s: new view %+v", what, m)
		}
		body = &m.NewView
	case *pbft.StateRequestMsg:
		body = &m.StateRequest
	case *pbft.FetchBatchMsg:
		body = &m.FetchBatch
	case *pbft.BatchReplyMsg:
		ds := make([]crypto.Digest, len(m.Batch))
		for i, r := range m.Batch {
			ds[i] = r.Digest
		}
		if len(m.Batch) != len(e.Batch) || pbft.BatchDigest(ds) != m.BatchReply.Digest {
			t.Fatalf("%s: batch reply accepted with a batch not matching its digest", what)
		}
		body = &m.BatchReply
	case *pbft.StateResponseMsg:
		if len(m.Proof) != len(m.StateResponse.Proof) || len(m.Proof) > lim.MaxReplicas || len(m.StateResponse.State) > lim.MaxStateBytes {
			t.Fatalf("%s: state response %+v", what, m)
		}
		seen := map[uint32]bool{}
		for _, c := range m.Proof {
			if seen[c.Signed.From] || c.Checkpoint.Seq != m.StateResponse.Seq {
				t.Fatalf("%s: state response with a bad proof accepted", what)
			}
			seen[c.Signed.From] = true
		}
		body = &m.StateResponse
	default:
		t.Fatalf("%s: Open returned a %T", what, m)
	}
	if got := pbft.Marshal(body); !bytes.Equal(got, e.Msg.Body) {
		t.Fatalf("%s: accepted body %x re-encodes to %x", what, e.Msg.Body, got)
	}
}

func FuzzDecodeEnvelope(f *testing.F) {
	for _, s := range codecSamples() {
		f.Add(pbft.EncodeEnvelope(s.env))
	}
	for _, m := range codecMalformedEnvelopes() {
		f.Add(m.b)
	}
	k := codecTestKeys()
	lim := pbft.DefaultLimits()
	strict := k.verifier(lim)
	open := &pbft.Verifier{Keys: codecAcceptAll{}, N: codecN, Limits: lim}
	tight := &pbft.Verifier{Keys: codecAcceptAll{}, N: codecN, Limits: codecTightLimits}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := pbft.DecodeEnvelope(b, lim)
		if err != nil {
			if !errors.Is(err, pbft.ErrMalformed) {
				t.Fatalf("DecodeEnvelope error %q does not wrap ErrMalformed", err)
			}
			if e != nil {
				t.Fatalf("DecodeEnvelope returned %+v with error %v", e, err)
			}
			return
		}
		if again := pbft.EncodeEnvelope(e); !bytes.Equal(again, b) {
			t.Fatalf("DecodeEnvelope accepted %x, which re-encodes to %x", b, again)
		}
		if len(e.Batch) > 0 && e.Msg.Type != pbft.MsgPrePrepare && e.Msg.Type != pbft.MsgBatchReply || len(e.Batch) > lim.MaxBatchRequests {
			t.Fatalf("DecodeEnvelope accepted a %s with a batch of %d", e.Msg.Type, len(e.Batch))
		}
		tb, terr := pbft.DecodeEnvelope(b, codecTightLimits)
		if terr == nil && !reflect.DeepEqual(tb, e) {
			t.Fatalf("decodings under two limits differ")
		}

		if e.Msg.Type == pbft.MsgReply {
			r, err := pbft.OpenReply(&e.Msg, pbft.ReplicaID(e.Msg.From), lim)
			codecCheckErr(t, "OpenReply", err)
			if err == nil && (r.From != pbft.ReplicaID(e.Msg.From) || !bytes.Equal(pbft.Marshal(&r.Reply), e.Msg.Body)) {
				t.Fatalf("OpenReply accepted %+v from %x", r, b)
			}
		}
		if e.Msg.Type == pbft.MsgSuperseded {
			n, err := pbft.OpenSuperseded(&e.Msg, pbft.ReplicaID(e.Msg.From), lim)
			codecCheckErr(t, "OpenSuperseded", err)
			if err == nil && (n.From != pbft.ReplicaID(e.Msg.From) || !bytes.Equal(pbft.Marshal(&n.Superseded), e.Msg.Body)) {
				t.Fatalf("OpenSuperseded accepted %+v from %x", n, b)
			}
		}

		m, err := strict.Open(e)
		codecCheckErr(t, "Open", err)
		if err == nil {
			codecCheckOpened(t, "Open", e, m, lim)
		}
		om, oerr := open.Open(e)
		codecCheckErr(t, "Open without signatures", oerr)
		if errors.Is(oerr, pbft.ErrBadSignature) {
			t.Fatalf("a key ring accepting every signature gave %v", oerr)
		}
		if oerr == nil {
			codecCheckOpened(t, "Open without signatures", e, om, lim)
		}
		if err == nil && oerr != nil {
			t.Fatalf("valid message rejected once signatures are not checked: %v", oerr)
		}
		if err == nil && !reflect.DeepEqual(m, om) {
			t.Fatalf("Open results differ with and without signature checks:\n%+v\n%+v", m, om)
		}
		tm, terr := tight.Open(e)
		codecCheckErr(t, "Open under tight limits", terr)
		if terr == nil {
			codecCheckOpened(t, "Open under tight limits", e, tm, codecTightLimits)
			if oerr != nil {
				t.Fatalf("accepted under tight limits but rejected under the defaults: %v", oerr)
			}
		}
	})
}

func FuzzOpenReply(f *testing.F) {
	w := codecTestWorld()
	for _, b := range codecReplyBodies() {
		f.Add(b, w.reply.From)
	}
	f.Add(w.prep1.Body, uint32(1))
	f.Add([]byte{}, uint32(0))
	lim := pbft.DefaultLimits()
	f.Fuzz(func(t *testing.T, body []byte, from uint32) {
		s := &pbft.Signed{Type: pbft.MsgReply, From: from, Body: body}
		r, err := pbft.OpenReply(s, pbft.ReplicaID(from), lim)
		if err != nil {
			if !errors.Is(err, pbft.ErrMalformed) {
				t.Fatalf("OpenReply error %q does not wrap ErrMalformed", err)
			}
		} else {
			if r.From != pbft.ReplicaID(from) || len(r.Reply.Result) > lim.MaxResultBytes {
				t.Fatalf("OpenReply accepted %+v", r)
			}
			if again := pbft.Marshal(&r.Reply); !bytes.Equal(again, body) {
				t.Fatalf("OpenReply accepted %x, which re-encodes to %x", body, again)
			}
		}
		// The same body from any other replica's channel, or as another type, is refused.
		if r, err := pbft.OpenReply(s, pbft.ReplicaID(from+1), lim); !errors.Is(err, pbft.ErrMalformed) {
			t.Fatalf("reply naming %d accepted on the channel of %d: %+v, %v", from, from+1, r, err)
		}
		other := *s
		other.Type = pbft.MsgCommit
		if r, err := pbft.OpenReply(&other, pbft.ReplicaID(from), lim); !errors.Is(err, pbft.ErrMalformed) {
			t.Fatalf("commit opened as a reply: %+v, %v", r, err)
		}
		tr, terr := pbft.OpenReply(s, pbft.ReplicaID(from), codecTightLimits)
		if terr == nil && (err != nil || !reflect.DeepEqual(tr, r)) {
			t.Fatalf("accepted under tight limits (%+v) but not under the defaults (%v)", tr, err)
		}
	})
}

func FuzzOpenSuperseded(f *testing.F) {
	w := codecTestWorld()
	for _, b := range codecSupersededBodies() {
		f.Add(b, w.superseded.From)
	}
	f.Add(w.reply.Body, uint32(2))
	f.Add([]byte{}, uint32(0))
	lim := pbft.DefaultLimits()
	f.Fuzz(func(t *testing.T, body []byte, from uint32) {
		s := &pbft.Signed{Type: pbft.MsgSuperseded, From: from, Body: body}
		n, err := pbft.OpenSuperseded(s, pbft.ReplicaID(from), lim)
		if err != nil {
			if !errors.Is(err, pbft.ErrMalformed) {
				t.Fatalf("OpenSuperseded error %q does not wrap ErrMalformed", err)
			}
		} else {
			b := n.Superseded
			if n.From != pbft.ReplicaID(from) || b.Timestamp > b.Low || b.Low > b.High {
				t.Fatalf("OpenSuperseded accepted %+v", n)
			}
			if again := pbft.Marshal(&n.Superseded); !bytes.Equal(again, body) {
				t.Fatalf("OpenSuperseded accepted %x, which re-encodes to %x", body, again)
			}
		}
		// The same body from any other replica's channel, or as another type, is refused.
		if n, err := pbft.OpenSuperseded(s, pbft.ReplicaID(from+1), lim); !errors.Is(err, pbft.ErrMalformed) {
			t.Fatalf("notice naming %d accepted on the channel of %d: %+v, %v", from, from+1, n, err)
		}
		other := *s
		other.Type = pbft.MsgReply
		if n, err := pbft.OpenSuperseded(&other, pbft.ReplicaID(from), lim); !errors.Is(err, pbft.ErrMalformed) {
			t.Fatalf("reply opened as a superseded notice: %+v, %v", n, err)
		}
		tn, terr := pbft.OpenSuperseded(s, pbft.ReplicaID(from), codecTightLimits)
		if terr == nil && (err != nil || !reflect.DeepEqual(tn, n)) {
			t.Fatalf("accepted under tight limits (%+v) but not under the defaults (%v)", tn, err)
		}
	})
}

func FuzzUnmarshalCheckpointState(f *testing.F) {
	for _, b := range codecCheckpointStates() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var cs pbft.CheckpointState
		if err := pbft.Unmarshal(b, &cs); err != nil {
			if !errors.Is(err, pbft.ErrMalformed) {
				t.Fatalf("Unmarshal error %q does not wrap ErrMalformed", err)
			}
			return
		}
		if again := pbft.Marshal(&cs); !bytes.Equal(again, b) {
			t.Fatalf("Unmarshal accepted %x, which re-encodes to %x", b, again)
		}
		var cs2 pbft.CheckpointState
		if err := pbft.Unmarshal(b, &cs2); err != nil || !reflect.DeepEqual(cs, cs2) {
			t.Fatalf("second decoding differs: %+v, %v", cs2, err)
		}
		// The digest is a function of the decoded value.
		if pbft.StateDigest(cs.App, cs.Clients) != pbft.StateDigest(cs2.App, cs2.Clients) {
			t.Fatal("state digest is not deterministic")
		}
	})
}

// codecBodyType is one type decoded from network input, with a valid sample of it.
type codecBodyType struct {
	name   string
	zero   func() any
	sample func() any
}

// codecBodyTypes are the types FuzzUnmarshalBodies decodes, selected by the first byte
// of the input (modulo their number). Never reorder: the corpus refers to them by index.
var codecBodyTypes = []codecBodyType{
	{"Request", func() any { return new(pbft.Request) }, func() any { return &codecTestWorld().req1Body }},
	{"PrePrepare", func() any { return new(pbft.PrePrepare) }, func() any { return &codecTestWorld().ppBody }},
	{"Prepare", func() any { return new(pbft.Prepare) }, func() any { return &codecTestWorld().prepBody }},
	{"Commit", func() any { return new(pbft.Commit) }, func() any { return &codecTestWorld().commitBody }},
	{"Reply", func() any { return new(pbft.Reply) }, func() any { return &codecTestWorld().replyBody }},
	{"Checkpoint", func() any { return new(pbft.Checkpoint) }, func() any { return &codecTestWorld().cpBody }},
	{"ViewChange", func() any { return new(pbft.ViewChange) }, func() any { return &codecTestWorld().vcBodies[3] }},
	{"NewView", func() any { return new(pbft.NewView) }, func() any { return &codecTestWorld().nvBody }},
	{"StateRequest", func() any { return new(pbft.StateRequest) }, func() any { return &pbft.StateRequest{Seq: 10} }},
	{"StateResponse", func() any { return new(pbft.StateResponse) }, func() any {
		w := codecTestWorld()
		return &pbft.StateResponse{Seq: 10, Proof: w.cps[:3], State: w.stateCBOR}
	}},
	{"CheckpointState", func() any { return new(pbft.CheckpointState) }, func() any { return &codecTestWorld().state }},
	{"Signed", func() any { return new(pbft.Signed) }, func() any { return &codecTestWorld().prep1 }},
	{"Envelope", func() any { return new(pbft.Envelope) }, func() any {
		w := codecTestWorld()
		return &pbft.Envelope{Msg: w.pp, Batch: []pbft.Signed{w.req1, w.req2}}
	}},
	{"PreparedCert", func() any { return new(pbft.PreparedCert) }, func() any { return &codecTestWorld().vcBodies[3].Prepared[0] }},
	{"ClientRecord", func() any { return new(pbft.ClientRecord) }, func() any { return &codecTestWorld().state.Clients[0] }},
	{"CachedReply", func() any { return new(pbft.CachedReply) }, func() any { return &codecTestWorld().state.Clients[0].Replies[0] }},
	{"Superseded", func() any { return new(pbft.Superseded) }, func() any { return &codecTestWorld().supersededBody }},
}

func FuzzUnmarshalBodies(f *testing.F) {
	for _, b := range codecBodyInputs() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		bt := codecBodyTypes[int(data[0])%len(codecBodyTypes)]
		b := data[1:]
		v := bt.zero()
		if err := pbft.Unmarshal(b, v); err != nil {
			if !errors.Is(err, pbft.ErrMalformed) {
				t.Fatalf("%s: Unmarshal error %q does not wrap ErrMalformed", bt.name, err)
			}
			return
		}
		if again := pbft.Marshal(v); !bytes.Equal(again, b) {
			t.Fatalf("%s: Unmarshal accepted %x, which re-encodes to %x", bt.name, b, again)
		}
		v2 := bt.zero()
		if err := pbft.Unmarshal(b, v2); err != nil || !reflect.DeepEqual(v, v2) {
			t.Fatalf("%s: second decoding differs: %+v, %v", bt.name, v2, err)
		}
	})
}

// --- corpus inputs ---

type codecNamedInput struct {
	name string
	b    []byte
}

// codecMalformedEnvelopes are inputs each decoder or Open must reject.
func codecMalformedEnvelopes() []codecNamedInput {
	w := codecTestWorld()
	k := w.k
	prep := pbft.EncodeEnvelope(&pbft.Envelope{Msg: w.prep1})
	p := codecParts(w.prep1)
	flipped := w.req2
	flipped.Sig = bytes.Clone(flipped.Sig)
	flipped.Sig[9] ^= 4
	dupProof := k.replica(2, pbft.MsgStateResponse, pbft.StateResponse{Seq: 10, Proof: []pbft.Signed{w.cps[0], w.cps[0]}})
	return []codecNamedInput{
		{"empty", nil},
		{"truncated", prep[:len(prep)-1]},
		{"trailing-byte", codecCat(prep, []byte{0})},
		{"long-form-sender", codecEnvelopeBytes(codecCat(p.head, p.typ, codecLongHead(0, 1, 2), p.body, p.sig))},
		{"indefinite-envelope", codecCat([]byte{0x9f}, p.bytes(), []byte{codecNull, codecBreak})},
		{"unknown-type", pbft.EncodeEnvelope(&pbft.Envelope{Msg: pbft.Signed{Type: 11, From: 1, Body: w.prep1.Body, Sig: w.prep1.Sig}})},
		{"batch-on-prepare", pbft.EncodeEnvelope(&pbft.Envelope{Msg: w.prep1, Batch: []pbft.Signed{w.req1}})},
		{"prepare-in-batch", pbft.EncodeEnvelope(&pbft.Envelope{Msg: w.pp, Batch: []pbft.Signed{w.req1, w.prep2}})},
		{"batch-digest-mismatch", pbft.EncodeEnvelope(&pbft.Envelope{Msg: w.pp, Batch: []pbft.Signed{w.req2, w.req1}})},
		{"tampered-request-signature", pbft.EncodeEnvelope(&pbft.Envelope{Msg: w.pp, Batch: []pbft.Signed{w.req1, flipped}})},
		{"prepare-relabelled-commit", pbft.EncodeEnvelope(&pbft.Envelope{Msg: pbft.Signed{Type: pbft.MsgCommit, From: 1, Body: w.prep1.Body, Sig: w.prep1.Sig}})},
		{"duplicate-checkpoint-proof", pbft.EncodeEnvelope(&pbft.Envelope{Msg: dupProof})},
		{"unknown-replica", pbft.EncodeEnvelope(&pbft.Envelope{Msg: pbft.Sign(k.replicas[1], pbft.MsgPrepare, 1<<32-1, w.prepBody)})},
		{"reply-to-replica-with-signature", pbft.EncodeEnvelope(&pbft.Envelope{Msg: pbft.Sign(k.replicas[2], pbft.MsgReply, 2, w.replyBody)})},
		{"superseded-to-replica-with-signature", pbft.EncodeEnvelope(&pbft.Envelope{Msg: pbft.Sign(k.replicas[2], pbft.MsgSuperseded, 2, w.supersededBody)})},
		{"batch-on-superseded", pbft.EncodeEnvelope(&pbft.Envelope{Msg: w.superseded, Batch: []pbft.Signed{w.req1}})},
	}
}

func codecReplyBodies() [][]byte {
	w := codecTestWorld()
	return [][]byte{
		w.reply.Body,
		pbft.Marshal(&pbft.Reply{View: 1 << 40, Timestamp: 1<<64 - 1, Client: 1<<32 - 1, Result: []byte{}}),
		pbft.Marshal(&pbft.Reply{}),
	}
}

func codecMalformedReplyBodies() []codecNamedInput {
	w := codecTestWorld()
	return []codecNamedInput{
		{"trailing-byte", codecCat(w.reply.Body, []byte{0})},
		{"long-form-view", codecCat(codecHead(4, 4), codecLongHead(0, 0, 1), w.reply.Body[2:])},
		{"prepare-body", w.prep1.Body},
		{"indefinite-result", codecCat(w.reply.Body[:len(w.reply.Body)-2], []byte{0x5f, 0x41, '1', codecBreak})},
	}
}

func codecSupersededBodies() [][]byte {
	w := codecTestWorld()
	return [][]byte{
		w.superseded.Body,
		pbft.Marshal(&pbft.Superseded{View: 1 << 40, Client: 1<<32 - 1, Timestamp: 1<<64 - 1, Low: 1<<64 - 1, High: 1<<64 - 1}),
		pbft.Marshal(&pbft.Superseded{}),
	}
}

func codecMalformedSupersededBodies() []codecNamedInput {
	w := codecTestWorld()
	return []codecNamedInput{
		{"trailing-byte", codecCat(w.superseded.Body, []byte{0})},
		{"long-form-view", codecCat(codecHead(4, 5), codecLongHead(0, 0, 1), w.superseded.Body[2:])},
		{"reply-body", w.reply.Body},
		{"timestamp-above-low", pbft.Marshal(&pbft.Superseded{Client: codecAlice, Timestamp: 3, Low: 2, High: 5})},
		{"low-above-high", pbft.Marshal(&pbft.Superseded{Client: codecAlice, Timestamp: 1, Low: 6, High: 5})},
		{"missing-high", codecCat(codecHead(4, 4), w.superseded.Body[1:len(w.superseded.Body)-1])},
	}
}

func codecCheckpointStates() [][]byte {
	w := codecTestWorld()
	return [][]byte{
		w.stateCBOR,
		pbft.Marshal(&pbft.CheckpointState{}),
		pbft.Marshal(&pbft.CheckpointState{App: []byte{}, Clients: []pbft.ClientRecord{{Client: 1}}}),
	}
}

func codecMalformedCheckpointStates() []codecNamedInput {
	w := codecTestWorld()
	return []codecNamedInput{
		{"trailing-byte", codecCat(w.stateCBOR, []byte{0})},
		{"indefinite-clients", codecCat(codecHead(4, 2), codecBstr(w.state.App), []byte{0x9f, codecBreak})},
		{"long-form-low", codecCat(codecHead(4, 2), []byte{codecNull}, codecHead(4, 1), codecHead(4, 3), codecHead(0, 1), codecLongHead(0, 5, 4), []byte{codecNull})},
		{"nested-too-deep", bytes.Repeat([]byte{0x81}, 20)},
	}
}

func codecBodyInputs() [][]byte {
	var out [][]byte
	for i, bt := range codecBodyTypes {
		out = append(out, append([]byte{byte(i)}, pbft.Marshal(bt.sample())...))
	}
	return out
}

// --- the committed corpus ---

// codecCorpus lists the files of testdata/fuzz: target -> file name -> values.
func codecCorpus() map[string]map[string][]any {
	c := map[string]map[string][]any{
		"FuzzDecodeEnvelope":           {},
		"FuzzOpenReply":                {},
		"FuzzOpenSuperseded":           {},
		"FuzzUnmarshalCheckpointState": {},
		"FuzzUnmarshalBodies":          {},
	}
	for _, s := range codecSamples() {
		c["FuzzDecodeEnvelope"]["valid-"+s.name] = []any{pbft.EncodeEnvelope(s.env)}
	}
	for _, m := range codecMalformedEnvelopes() {
		c["FuzzDecodeEnvelope"]["malformed-"+m.name] = []any{m.b}
	}
	for i, b := range codecReplyBodies() {
		c["FuzzOpenReply"][fmt.Sprintf("valid-reply-%d", i)] = []any{b, uint32(2)}
	}
	for _, m := range codecMalformedReplyBodies() {
		c["FuzzOpenReply"]["malformed-"+m.name] = []any{m.b, uint32(2)}
	}
	for i, b := range codecSupersededBodies() {
		c["FuzzOpenSuperseded"][fmt.Sprintf("valid-superseded-%d", i)] = []any{b, uint32(2)}
	}
	for _, m := range codecMalformedSupersededBodies() {
		c["FuzzOpenSuperseded"]["malformed-"+m.name] = []any{m.b, uint32(2)}
	}
	for i, b := range codecCheckpointStates() {
		c["FuzzUnmarshalCheckpointState"][fmt.Sprintf("valid-state-%d", i)] = []any{b}
	}
	for _, m := range codecMalformedCheckpointStates() {
		c["FuzzUnmarshalCheckpointState"]["malformed-"+m.name] = []any{m.b}
	}
	for i, b := range codecBodyInputs() {
		c["FuzzUnmarshalBodies"]["valid-"+strings.ToLower(codecBodyTypes[i].name)] = []any{b}
	}
	c["FuzzUnmarshalBodies"]["malformed-prepare-long-seq"] = []any{
		append([]byte{2}, codecCat(codecHead(4, 3), codecHead(0, 0), codecLongHead(0, 11, 2), codecBstr(make([]byte, 32)))...),
	}
	c["FuzzUnmarshalBodies"]["malformed-checkpoint-short-digest"] = []any{
		append([]byte{5}, codecCat(codecHead(4, 2), codecHead(0, 10), codecBstr(make([]byte, 31)))...),
	}
	return c
}

// codecMarshalCorpusFile encodes values in the "go test fuzz v1" format.
func codecMarshalCorpusFile(vals []any) []byte {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	for _, v := range vals {
		switch v := v.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%s)\n", strconv.Quote(string(v)))
		case uint32:
			fmt.Fprintf(&b, "uint32(%d)\n", v)
		default:
			panic(fmt.Sprintf("corpus value of type %T", v))
		}
	}
	return b.Bytes()
}

// codecReadCorpusByteFile reads a one-[]byte corpus file.
func codecReadCorpusByteFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<24)
	var lines []string
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			lines = append(lines, l)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(lines) != 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "[]byte(") || !strings.HasSuffix(lines[1], ")") {
		return nil, fmt.Errorf("%s: not a one-[]byte fuzz corpus file", path)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return []byte(s), nil
}

// TestWriteFuzzCorpus writes the valid-* and malformed-* files of testdata/fuzz. It
// leaves every other file alone, in particular crashers the fuzzer saved.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("PBFT_WRITE_CORPUS") != "1" {
		t.Skip("set PBFT_WRITE_CORPUS=1 to regenerate testdata/fuzz")
	}
	for target, files := range codecCorpus() {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, vals := range files {
			if err := os.WriteFile(filepath.Join(dir, name), codecMarshalCorpusFile(vals), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestFuzzCorpusIsCurrent checks the committed corpus holds every input codecCorpus
// lists, and that its valid envelopes still open: otherwise the fuzz targets would run
// on stale or only-malformed seeds without anyone noticing.
func TestFuzzCorpusIsCurrent(t *testing.T) {
	v := codecTestKeys().verifier(pbft.DefaultLimits())
	for target, files := range codecCorpus() {
		for name, vals := range files {
			path := filepath.Join("testdata", "fuzz", target, name)
			got, err := os.ReadFile(path)
			if err != nil {
				t.Errorf("%v (regenerate with PBFT_WRITE_CORPUS=1 go test -run '^TestWriteFuzzCorpus$' ./pbft/)", err)
				continue
			}
			if want := codecMarshalCorpusFile(vals); !bytes.Equal(got, want) {
				t.Errorf("%s is stale (regenerate with PBFT_WRITE_CORPUS=1 go test -run '^TestWriteFuzzCorpus$' ./pbft/)", path)
			}
		}
	}
	paths, err := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzDecodeEnvelope", "valid-*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range paths {
		b, err := codecReadCorpusByteFile(path)
		if err != nil {
			t.Fatal(err)
		}
		e, err := pbft.DecodeEnvelope(b, v.Limits)
		if err == nil {
			_, err = codecOpen(v, e)
		}
		if err != nil {
			t.Errorf("%s: %v", path, err)
		}
	}
}
