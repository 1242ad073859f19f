package pbft_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/pbftkit/pbft/pbft"
)

// PBFT §4.1: a client accepts a result once f+1 replicas sent the same one; a replica
// votes once (its first reply); the view it learns is the (f+1)-th highest among the
// voters, so f liars can neither hold it back nor push it ahead of every correct one.
func TestReplyVotesAcceptFPlusOneMatchingResultsAndTheFPlusOnethHighestView(t *testing.T) {
	q, _ := pbft.NewQuorum(7) // f = 2: three matching replies
	v := pbft.NewReplyVotes(q)
	if acc := v.Add(5, &pbft.Reply{View: 900, Result: []byte("lie")}); acc != nil {
		t.Fatalf("one reply accepted: %+v", acc)
	}
	if acc := v.Add(6, &pbft.Reply{View: 900, Result: []byte("ok")}); acc != nil {
		t.Fatalf("one matching reply accepted: %+v", acc)
	}
	// A second reply from replica 6 does not count twice.
	if acc := v.Add(6, &pbft.Reply{View: 900, Result: []byte("ok")}); acc != nil || !v.Voted(6) {
		t.Fatalf("a replica's second reply counted: %+v", acc)
	}
	if acc := v.Add(1, &pbft.Reply{View: 3, Result: []byte("ok")}); acc != nil {
		t.Fatalf("two matching replies accepted with f = 2: %+v", acc)
	}
	acc := v.Add(0, &pbft.Reply{View: 4, Result: []byte("ok")})
	if acc == nil || string(acc.Result) != "ok" {
		t.Fatalf("three matching replies not accepted: %+v", acc)
	}
	// Views of the voters 0, 1, 6: 4, 3, 900. The (f+1)-th highest is 3: a liar's 900
	// and even a second one would not move the client past every correct replica.
	if acc.View != 3 || !slices.Equal(acc.Voters, []pbft.ReplicaID{0, 1, 6}) {
		t.Fatalf("accepted view %d voters %v, want 3 and [0 1 6]", acc.View, acc.Voters)
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
