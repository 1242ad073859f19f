package client

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pbftkit/pbft/pbft"
)

// fakeTable is the part of a replica's client table the notices report: every
// timestamp <= low is refused, high is the highest one executed.
type fakeTable struct {
	mu        sync.Mutex
	low, high uint64
}

func (t *fakeTable) set(low, high uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.low, t.high = low, high
}

func (t *fakeTable) marks() (low, high uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.low, t.high
}

// respond answers req like a replica holding t: a notice at or below the low mark,
// else the operation echoed as its result.
func (t *fakeTable) respond(id pbft.ReplicaID, req pbft.Request) []pbft.Signed {
	t.mu.Lock()
	defer t.mu.Unlock()
	if req.Timestamp <= t.low {
		return []pbft.Signed{supersededMsg(id, req, t.low, t.high)}
	}
	return []pbft.Signed{replyMsg(id, req, req.Op)}
}

// timestampsOf returns the distinct timestamps replica f saw op under, in the order
// they first came.
func timestampsOf(f *fakeReplica, op string) []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []uint64
	for _, r := range f.got {
		if string(r.Op) == op && !slices.Contains(out, r.Timestamp) {
			out = append(out, r.Timestamp)
		}
	}
	return out
}

func TestTimestampsComeFromTheClockAndNeverRunAheadOfIt(t *testing.T) {
	c, _ := setup(t, func(_ pbft.ReplicaID, req pbft.Request) [][]byte { return [][]byte{req.Op} })
	start := c.clock.now()
	if wall := uint64(time.Now().UnixNano()); start > wall+uint64(time.Second) || wall > start+uint64(time.Second) {
		t.Fatalf("clock reads %d, wall clock %d", start, wall)
	}
	var last uint64
	for i := range 8 {
		res, err := c.Invoke(context.Background(), []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		// lastTS+1 may add a nanosecond, never more: the clock does not go back.
		if now := c.clock.now(); res.Timestamp <= last || res.Timestamp < start || res.Timestamp > now {
			t.Fatalf("request %d: timestamp %d after %d, clock %d (started at %d)", i, res.Timestamp, last, now, start)
		}
		last = res.Timestamp
	}
}

// A restart whose clock is a few seconds behind the timestamps its predecessor had
// executed: the replicas refuse its request as superseded, and the client moves past
// their marks and re-issues the operation, transparently.
func TestSupersededRequestIsReissuedPastTheReplicasTimestamps(t *testing.T) {
	var table fakeTable
	c, fakes := setupWith(t, table.respond)
	table.set(c.clock.now()+uint64(3*time.Second)-64, c.clock.now()+uint64(3*time.Second))
	low, high := table.marks()

	res, err := c.Invoke(context.Background(), []byte("put"))
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Value) != "put" || res.Timestamp <= high || res.Timestamp > high+jitter {
		t.Fatalf("result %q at t=%d, want the operation's past the high mark %d (by at most %d)", res.Value, res.Timestamp, high, uint64(jitter))
	}
	ts := timestampsOf(fakes[0], "put")
	if len(ts) != 2 || ts[0] > low || ts[1] != res.Timestamp {
		t.Fatalf("the primary saw the operation at %v, want once below the low mark %d, then at %d", ts, low, res.Timestamp)
	}
	// The next request starts past the marks: no notice, no re-issue.
	res2, err := c.Invoke(context.Background(), []byte("next"))
	if err != nil {
		t.Fatal(err)
	}
	if got := timestampsOf(fakes[0], "next"); len(got) != 1 || res2.Timestamp <= res.Timestamp {
		t.Fatalf("the next request was sent at %v, answered at %d after %d", got, res2.Timestamp, res.Timestamp)
	}
}

// A single replica may lie: its notice alone changes nothing, and among f+1 notices the
// client takes the least high mark, so a liar cannot move it forward.
func TestOneLyingReplicaCannotMoveTheClientForward(t *testing.T) {
	const huge = math.MaxUint64 - 615
	t.Run("alone", func(t *testing.T) {
		c, _ := setupWith(t, func(id pbft.ReplicaID, req pbft.Request) []pbft.Signed {
			if id == 0 {
				return []pbft.Signed{supersededMsg(id, req, huge, huge)}
			}
			return []pbft.Signed{replyMsg(id, req, req.Op)}
		})
		res, err := c.Invoke(context.Background(), []byte("x"))
		if err != nil || string(res.Value) != "x" {
			t.Fatalf("%q, %v", res.Value, err)
		}
		if now := c.clock.now(); res.Timestamp > now {
			t.Fatalf("timestamp %d ahead of the clock %d after one lying notice", res.Timestamp, now)
		}
	})
	t.Run("among f+1", func(t *testing.T) {
		var table fakeTable
		c, _ := setupWith(t, func(id pbft.ReplicaID, req pbft.Request) []pbft.Signed {
			if low, _ := table.marks(); id == 0 && req.Timestamp <= low {
				return []pbft.Signed{supersededMsg(id, req, huge, huge)}
			}
			return table.respond(id, req)
		})
		high := c.clock.now() + uint64(2*time.Second)
		table.set(high-10, high)
		res, err := c.Invoke(context.Background(), []byte("x"))
		if err != nil || string(res.Value) != "x" {
			t.Fatalf("%q, %v", res.Value, err)
		}
		if res.Timestamp <= high || res.Timestamp > high+jitter {
			t.Fatalf("re-issued at t=%d, want past the correct replicas' high mark %d by at most %d", res.Timestamp, high, uint64(jitter))
		}
	})
}

// The lock-out of issue 8: the replicas executed timestamps near the maximum for this
// client id. Every request is refused, and Invoke says why at once instead of timing out.
func TestTimestampsFarAheadOfTheClockFailInvokeAtOnceWithTheReason(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ahead func(now uint64) uint64
		want  []string
	}{
		{"near the maximum", func(uint64) uint64 { return math.MaxUint64 - 615 },
			[]string{"executed timestamps up to 18446744073709551000 for client 1", "years ahead of this client's clock", "it can never issue a newer one", "use another client id", "does another process use client id 1?"}},
		{"two hours ahead", func(now uint64) uint64 { return now + uint64(2*time.Hour) },
			[]string{"2h0m0", "ahead of this client's clock", "more than the 1m0s it may run ahead (Config.MaxClockAhead)", "use another client id"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var table fakeTable
			c, fakes := setupWith(t, table.respond)
			high := tc.ahead(c.clock.now())
			table.set(high-10, high)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			begin := time.Now()
			_, err := c.Invoke(ctx, []byte("x"))
			if !errors.Is(err, ErrTimestampSuperseded) {
				t.Fatalf("want ErrTimestampSuperseded, got %v", err)
			}
			t.Log(err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if d := time.Since(begin); d > 10*time.Second {
				t.Errorf("took %v", d)
			}
			if ts := timestampsOf(fakes[0], "x"); len(ts) != 1 {
				t.Errorf("the operation was re-issued: the primary saw it at %v", ts)
			}
		})
	}
}

// Another process issuing newer timestamps under the same id keeps the table ahead of
// every fresh timestamp: the client gives up after a few re-issues.
func TestRequestSupersededAgainAndAgainFails(t *testing.T) {
	c, fakes := setupWith(t, func(id pbft.ReplicaID, req pbft.Request) []pbft.Signed {
		return []pbft.Signed{supersededMsg(id, req, req.Timestamp, req.Timestamp+uint64(time.Second)+jitter)}
	})
	_, err := c.Invoke(context.Background(), []byte("x"))
	if !errors.Is(err, ErrTimestampSuperseded) || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("want ErrTimestampSuperseded naming another process, got %v", err)
	}
	t.Log(err)
	if ts := timestampsOf(fakes[0], "x"); len(ts) != supersededRetries+1 {
		t.Fatalf("the primary saw the operation at %d timestamps %v, want %d", len(ts), ts, supersededRetries+1)
	}
}
