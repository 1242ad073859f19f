package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/pbftkit/pbft/app/kvstore"
	"github.com/pbftkit/pbft/network"
	"github.com/pbftkit/pbft/pbft"
	"github.com/pbftkit/pbft/pbft/client"
)

// executeAs has an earlier process of client id run a put of key under each of
// timestamps, in order, on a bare host with the client's identity, waiting for f+1
// replies to each; the host is closed before it returns. It stands for a process whose
// clock was wrong, or another process using the same client id.
func (tc *testCluster) executeAs(t *testing.T, id uint32, key string, timestamps []uint64) {
	t.Helper()
	all := make([]int, len(tc.cl.Replicas))
	for i := range all {
		all[i] = i
	}
	h := tc.rawHost(tc.clientKey(id), nil, all...)
	var mu sync.Mutex
	voters := map[uint64]map[pbft.ReplicaID]bool{}
	replica := map[peer.ID]pbft.ReplicaID{}
	for _, m := range tc.cl.Replicas {
		replica[m.PeerID] = pbft.ReplicaID(m.ID)
	}
	h.Handle(network.ClientProtocol, func(from peer.ID, frame []byte) {
		env, err := pbft.DecodeEnvelope(frame, tc.cl.Limits())
		if err != nil {
			return
		}
		rm, err := pbft.OpenReply(&env.Msg, replica[from], tc.cl.Limits())
		if err != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if voters[rm.Reply.Timestamp] == nil {
			voters[rm.Reply.Timestamp] = map[pbft.ReplicaID]bool{}
		}
		voters[rm.Reply.Timestamp][rm.From] = true
	})
	signer := &pbft.KeySigner{Cluster: tc.cl.Name, Key: tc.clientKey(id)}
	for i, ts := range timestamps {
		req := pbft.Request{Client: pbft.ClientID(id), Timestamp: ts, Op: kvstore.Put(key, fmt.Appendf(nil, "old-%d", i))}
		frame := pbft.EncodeEnvelope(&pbft.Envelope{Msg: pbft.Sign(signer, pbft.MsgRequest, id, req)})
		answered := func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(voters[ts]) >= tc.cl.F+1
		}
		deadline := time.Now().Add(30 * time.Second)
		for !answered() {
			if time.Now().After(deadline) {
				t.Fatalf("the earlier process's request t=%d got no f+1 replies", ts)
			}
			for _, m := range tc.cl.Replicas {
				h.Send(m.PeerID, network.ClientProtocol, bytes.Clone(frame))
			}
			for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end) && !answered(); {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	h.Close()
}

// get reads key through client c.
func get(t *testing.T, c *client.Client, key string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.Invoke(ctx, kvstore.Get(key))
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	r, err := kvstore.DecodeResult(res.Value)
	if err != nil || !r.OK {
		t.Fatalf("get %s: %+v, %v", key, r, err)
	}
	return string(r.Value)
}

// The lock-out of issue 8 on real replicas: an earlier process of client 1 executed
// ReplyWindow+1 requests with timestamps just below the maximum, so the replicas refuse
// every timestamp a clock gives. The client says so at once, wrapping
// client.ErrTimestampSuperseded, instead of timing out; nothing of it executes.
func TestClientLockedOutNearTheMaximumTimestampFailsAtOnce(t *testing.T) {
	proto := fastProtocol()
	proto.ReplyWindow = 4
	tc := startCluster(t, 4, 2, proto)
	var high []uint64
	for i := range proto.ReplyWindow + 1 {
		high = append(high, math.MaxUint64-10-uint64(proto.ReplyWindow-i))
	}
	tc.executeAs(t, 1, "k", high)

	c := tc.client(1, 500*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	begin := time.Now()
	_, err := c.Invoke(ctx, kvstore.Put("k", []byte("new")))
	if !errors.Is(err, client.ErrTimestampSuperseded) {
		t.Fatalf("want ErrTimestampSuperseded, got %v", err)
	}
	t.Log(err)
	for _, w := range []string{fmt.Sprintf("up to %d for client 1", uint64(math.MaxUint64-10)), "years ahead", "use another client id"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	if d := time.Since(begin); d > 10*time.Second {
		t.Errorf("took %v to fail", d)
	}
	if v := get(t, tc.client(2, 500*time.Millisecond), "k"); v != fmt.Sprintf("old-%d", proto.ReplyWindow) {
		t.Fatalf("k = %q after the refused put, want the earlier process's last write", v)
	}
}

// A client restarted with its clock a few seconds behind the timestamps its earlier
// process executed: the replicas refuse its first request as superseded, and it moves
// past their marks, re-issues the put and succeeds.
func TestClientRestartedBehindTheReplicasTimestampsMovesPastThem(t *testing.T) {
	proto := fastProtocol()
	proto.ReplyWindow = 4
	tc := startCluster(t, 4, 1, proto)
	ahead := uint64(time.Now().Add(3 * time.Second).UnixNano())
	var ts []uint64
	for i := range proto.ReplyWindow + 1 {
		ts = append(ts, ahead+uint64(i))
	}
	tc.executeAs(t, 1, "k", ts)

	c := tc.client(1, 500*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.Invoke(ctx, kvstore.Put("k", []byte("new")))
	if err != nil {
		t.Fatal(err)
	}
	if last := ts[len(ts)-1]; res.Timestamp <= last {
		t.Fatalf("put executed at t=%d, not past the earlier process's last timestamp %d", res.Timestamp, last)
	}
	tc.checkVoters(t, "put", res)
	if v := get(t, c, "k"); v != "new" {
		t.Fatalf("k = %q, want the re-issued put's value", v)
	}
}
