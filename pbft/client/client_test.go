package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/pbftkit/pbft/network"
	"github.com/pbftkit/pbft/pbft"
	"github.com/pbftkit/pbft/pbft/cluster"
)

// fakeReplica is a replica's network identity whose answers the test scripts: it sees
// the client's requests and answers with whatever the test's function returns (nil:
// silence).
type fakeReplica struct {
	id   pbft.ReplicaID
	host *network.Host
	mu   sync.Mutex
	got  []pbft.Request
}

func (f *fakeReplica) requests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.got)
}

// setup starts 4 fake replicas on loopback and a real client of the generated cluster;
// each replica replies to a request with the results answer returns, possibly several.
func setup(t *testing.T, answer func(id pbft.ReplicaID, req pbft.Request) [][]byte) (*Client, []*fakeReplica) {
	t.Helper()
	return setupWith(t, func(id pbft.ReplicaID, req pbft.Request) []pbft.Signed {
		var out []pbft.Signed
		for _, res := range answer(id, req) {
			out = append(out, replyMsg(id, req, res))
		}
		return out
	})
}

// replyMsg is replica id's REPLY with result res to req.
func replyMsg(id pbft.ReplicaID, req pbft.Request, res []byte) pbft.Signed {
	body := pbft.Marshal(pbft.Reply{View: 0, Timestamp: req.Timestamp, Client: req.Client, Result: res})
	return pbft.Signed{Type: pbft.MsgReply, From: uint32(id), Body: body}
}

// supersededMsg is replica id's SUPERSEDED notice for req, with the marks low and high.
func supersededMsg(id pbft.ReplicaID, req pbft.Request, low, high uint64) pbft.Signed {
	body := pbft.Marshal(pbft.Superseded{View: 0, Client: req.Client, Timestamp: req.Timestamp, Low: low, High: high})
	return pbft.Signed{Type: pbft.MsgSuperseded, From: uint32(id), Body: body}
}

// setupWith is setup with replicas that answer with the messages respond returns.
func setupWith(t *testing.T, respond func(id pbft.ReplicaID, req pbft.Request) []pbft.Signed) (*Client, []*fakeReplica) {
	t.Helper()
	dir := t.TempDir()
	var addrs []string
	// Fake replicas listen on port 0; the cluster file then lists their real ports.
	var fakes []*fakeReplica
	path, err := cluster.Generate(dir, cluster.GenerateOptions{Replicas: 4, Clients: 1,
		Addrs: []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/tcp/0"}})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := cluster.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	allow := []peer.ID{cl.Clients[0].PeerID}
	for i := range cl.Replicas {
		key, err := cl.LoadKey(&cl.Replicas[i])
		if err != nil {
			t.Fatal(err)
		}
		ident, _, _ := network.Identity(key)
		h, err := network.New(network.Config{Identity: ident, Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Allow: allow})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		f := &fakeReplica{id: pbft.ReplicaID(i), host: h}
		h.Handle(network.ClientProtocol, func(from peer.ID, frame []byte) {
			env, err := pbft.DecodeEnvelope(frame, pbft.DefaultLimits())
			if err != nil {
				return
			}
			var req pbft.Request
			if pbft.Unmarshal(env.Msg.Body, &req) != nil {
				return
			}
			f.mu.Lock()
			f.got = append(f.got, req)
			f.mu.Unlock()
			for _, m := range respond(f.id, req) {
				h.Send(from, network.ClientProtocol, pbft.EncodeEnvelope(&pbft.Envelope{Msg: m}))
			}
		})
		fakes = append(fakes, f)
		addrs = append(addrs, h.Addrs()[0].String())
	}
	for i := range cl.Replicas {
		cl.Replicas[i].Addr = fakes[i].host.Addrs()[0]
	}
	key, err := cl.LoadKey(&cl.Clients[0])
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Cluster: cl, ID: cl.Clients[0].ID, Key: key, Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = addrs
	return c, fakes
}

func TestResultNeedsFPlusOneMatchingReplies(t *testing.T) {
	// Replica 0 (the primary) lies; replica 1 tells the truth; 2 and 3 are silent.
	c, _ := setup(t, func(id pbft.ReplicaID, _ pbft.Request) [][]byte {
		switch id {
		case 0:
			return [][]byte{[]byte("lie"), []byte("lie")} // a repeat must not count twice
		case 1:
			return [][]byte{[]byte("truth")}
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
	defer cancel()
	res, err := c.Invoke(ctx, []byte("op"))
	if err == nil {
		t.Fatalf("accepted %q with one vote per answer", res.Value)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want a deadline error, got %v", err)
	}
}

func TestMatchingRepliesFromFPlusOneReplicasAreAccepted(t *testing.T) {
	c, _ := setup(t, func(id pbft.ReplicaID, req pbft.Request) [][]byte {
		if id == 0 {
			return [][]byte{[]byte("lie")}
		}
		return [][]byte{fmt.Appendf(nil, "ok-%s", req.Op)}
	})
	res, err := c.Invoke(context.Background(), []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Value) != "ok-x" || len(res.Voters) < 2 {
		t.Fatalf("accepted %q voted by %v", res.Value, res.Voters)
	}
	for _, v := range res.Voters {
		if v == 0 {
			t.Fatalf("the lying replica is counted as a voter: %v", res.Voters)
		}
	}
}

func TestSilentPrimaryMakesTheClientRetransmitToAll(t *testing.T) {
	c, fakes := setup(t, func(id pbft.ReplicaID, req pbft.Request) [][]byte {
		if id == 0 {
			return nil
		}
		return [][]byte{[]byte("done")}
	})
	res, err := c.Invoke(context.Background(), []byte("x"))
	if err != nil || string(res.Value) != "done" {
		t.Fatalf("%q, %v", res.Value, err)
	}
	// Only the primary was sent it first: the backups' two matching votes prove the
	// retransmission to all replicas.
	got := 0
	for _, f := range fakes[1:] {
		if f.requests() > 0 {
			got++
		}
	}
	if got < 2 || len(res.Voters) < 2 {
		t.Fatalf("%d backups got the request; voters %v", got, res.Voters)
	}
}

func TestTimestampsIncreaseAndManyRequestsRunAtOnce(t *testing.T) {
	c, fakes := setup(t, func(_ pbft.ReplicaID, req pbft.Request) [][]byte { return [][]byte{req.Op} })
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			op := fmt.Appendf(nil, "op-%d", i)
			res, err := c.Invoke(context.Background(), op)
			if err == nil && string(res.Value) != string(op) {
				err = fmt.Errorf("request %s got %s", op, res.Value)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	fakes[0].mu.Lock()
	defer fakes[0].mu.Unlock()
	// A retransmission repeats a request; two operations never share a timestamp.
	opOf := map[uint64]string{}
	for _, r := range fakes[0].got {
		if op, ok := opOf[r.Timestamp]; ok && op != string(r.Op) {
			t.Fatalf("timestamp %d used for %s and %s", r.Timestamp, op, r.Op)
		}
		opOf[r.Timestamp] = string(r.Op)
	}
	if len(opOf) != 100 {
		t.Fatalf("%d distinct timestamps for 100 operations", len(opOf))
	}
}

func TestCancelledContextReturnsPromptly(t *testing.T) {
	c, fakes := setup(t, func(pbft.ReplicaID, pbft.Request) [][]byte { return nil })
	ctx, cancel := context.WithCancel(context.Background())
	var start time.Time
	go func() {
		// Cancel once the request is out, with nobody answering it.
		for fakes[0].requests() == 0 {
			time.Sleep(time.Millisecond)
		}
		start = time.Now()
		cancel()
	}()
	if _, err := c.Invoke(ctx, []byte("x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v to notice the cancellation", d)
	}
}
