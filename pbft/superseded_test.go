package pbft

import (
	"errors"
	"fmt"
	"testing"
)

// noticesFor returns the superseded notices sent for (cl, ts), in the order sent.
func (c *tCluster) noticesFor(cl ClientID, ts uint64) []SupersededMsg {
	var out []SupersededMsg
	for _, n := range c.notices {
		if n.Superseded.Client == cl && n.Superseded.Timestamp == ts {
			out = append(out, n)
		}
	}
	return out
}

// A request at or below the client's low mark is dropped (counted) as before, and the
// client is told the marks the replica holds, so it can move past them instead of
// timing out for good (issue 8: a client whose timestamps fell behind the table was
// locked out silently).
func TestSupersededRequestIsAnsweredWithTheLowMark(t *testing.T) {
	c := newCluster(t, 4) // ReplyWindow 4
	var reqs []*Envelope
	for i := 0; i < 6; i++ {
		reqs = append(reqs, c.request(1, fmt.Sprint("op", i)))
	}
	c.submitAndRun(reqs...) // t=1..6: the table keeps 3..6, low mark 2
	if len(c.notices) != 0 {
		t.Fatalf("notices before any stale request: %+v", c.notices)
	}

	stale := c.requestAt(1, 2, "never seen") // abandoned: at the low mark, never executed
	for i := range c.n {
		c.submit(i, stale)
		c.submit(i, reqs[0]) // t=1, executed and forgotten
		c.submit(i, reqs[2]) // t=3, still cached: a reply, not a notice
	}
	c.run()
	for _, ts := range []uint64{1, 2} {
		got := c.noticesFor(1, ts)
		if len(got) != c.n {
			t.Fatalf("t=%d: %d notices, want one per replica: %+v", ts, len(got), got)
		}
		seen := map[ReplicaID]bool{}
		for _, n := range got {
			want := Superseded{View: 0, Client: 1, Timestamp: ts, Low: 2, High: 6}
			if n.Superseded != want {
				t.Fatalf("replica %d sent %+v, want %+v", n.From, n.Superseded, want)
			}
			seen[n.From] = true
		}
		if len(seen) != c.n {
			t.Fatalf("t=%d: notices from %v, want every replica", ts, seen)
		}
	}
	if got := c.noticesFor(1, 3); len(got) != 0 {
		t.Fatalf("cached t=3 was answered with notices: %+v", got)
	}
	if got := c.repliesTo(1, 3); len(got) != 2*c.n {
		t.Fatalf("cached t=3: %d replies, want %d", len(got), 2*c.n)
	}
	for i := range c.n {
		if got := len(c.dropped(i, "superseded")); got != 2 {
			t.Fatalf("replica %d counted %d superseded drops, want 2: %+v", i, got, c.drops[i])
		}
		if c.apps[i].ops != 6 {
			t.Fatalf("replica %d ran %d operations, want 6", i, c.apps[i].ops)
		}
		// The notice goes to the client that signed the request, unsigned like a reply.
		for _, ob := range c.out[i] {
			if ob.Env.Msg.Type != MsgSuperseded {
				continue
			}
			if ob.To != (Destination{Kind: ToClient, Client: 1}) || len(ob.Env.Msg.Sig) != 0 || ob.Env.Msg.From != uint32(i) {
				t.Fatalf("replica %d sent a notice to %+v from %d with a %d-byte signature", i, ob.To, ob.Env.Msg.From, len(ob.Env.Msg.Sig))
			}
			// A notice is for clients only: a replica receiving one refuses it.
			if _, err := c.vers[(i+1)%c.n].Open(ob.Env); !errors.Is(err, ErrMalformed) {
				t.Fatalf("a replica opened a superseded notice: %v", err)
			}
		}
	}
	c.requireExactlyOnce()
}
