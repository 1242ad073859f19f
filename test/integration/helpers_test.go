// Package integration runs whole clusters in one test process: real replicas
// (replica.Start) with the key-value application and Pebble stores, real clients
// (client.New), over real libp2p on 127.0.0.1. Each test is named after the property
// it checks.
package integration

import (
	"fmt"
	"github.com/pbftkit/pbft/test/localnet"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pbftkit/pbft/app/kvstore"
	"github.com/pbftkit/pbft/crypto"
	"github.com/pbftkit/pbft/pbft/client"
	"github.com/pbftkit/pbft/pbft/cluster"
	"github.com/pbftkit/pbft/pbft/replica"
)

// fastProtocol is the default protocol with timeouts short enough for tests: a 10 ms
// tick, retransmission every 100 ms, a view change after 500 ms without progress.
func fastProtocol() cluster.Protocol {
	p := cluster.DefaultProtocol()
	p.Tick = "10ms"
	p.RetransmitTicks = 10
	p.ViewChangeTicks = 50
	return p
}

// testCluster is a cluster.yaml in a temporary directory and the replicas started
// from it. Everything started is stopped when the test ends.
type testCluster struct {
	t      *testing.T
	dir    string
	cl     *cluster.Cluster
	reps   []*replica.Replica // nil: not started, or stopped
	stores []*kvstore.Store   // the application of each replica started
}

// newCluster generates keys and cluster.yaml for n replicas (on free loopback ports)
// and clients registered clients, and loads it. No replica is started yet.
func newCluster(t *testing.T, n, clients int, proto cluster.Protocol) *testCluster {
	t.Helper()
	dir := t.TempDir()
	addrs := freePorts(t, n)
	path, err := cluster.Generate(dir, cluster.GenerateOptions{Name: "integration", Replicas: n, Clients: clients,
		Addrs: addrs, Protocol: proto})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := cluster.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	tc := &testCluster{t: t, dir: dir, cl: cl, reps: make([]*replica.Replica, n), stores: make([]*kvstore.Store, n)}
	t.Cleanup(func() {
		for i := range tc.reps {
			tc.stop(i)
		}
	})
	return tc
}

// startCluster is newCluster with every replica started.
func startCluster(t *testing.T, n, clients int, proto cluster.Protocol) *testCluster {
	t.Helper()
	tc := newCluster(t, n, clients, proto)
	for i := range n {
		tc.start(i)
	}
	return tc
}

// start starts replica i with a fresh key-value store and a Pebble data dir.
func (tc *testCluster) start(i int) {
	tc.t.Helper()
	key := tc.replicaKey(i)
	st := kvstore.New()
	r, err := replica.Start(replica.Options{Cluster: tc.cl, ID: uint32(i), Key: key, App: st,
		DataDir: filepath.Join(tc.dir, fmt.Sprintf("replica-%d.data", i)), Verifiers: 2, Logger: zap.NewNop()})
	if err != nil {
		tc.t.Fatalf("start replica %d: %v", i, err)
	}
	tc.reps[i], tc.stores[i] = r, st
}

// stop stops replica i if it runs; an error it stopped on fails the test.
func (tc *testCluster) stop(i int) {
	if tc.reps[i] == nil {
		return
	}
	if err := tc.reps[i].Stop(); err != nil {
		tc.t.Errorf("replica %d stopped on an error: %v", i, err)
	}
	tc.reps[i] = nil
}

// live returns the replicas running.
func (tc *testCluster) live() []*replica.Replica {
	var out []*replica.Replica
	for _, r := range tc.reps {
		if r != nil {
			out = append(out, r)
		}
	}
	return out
}

func (tc *testCluster) replicaKey(i int) *crypto.PrivateKey {
	tc.t.Helper()
	k, err := tc.cl.LoadKey(&tc.cl.Replicas[i])
	if err != nil {
		tc.t.Fatal(err)
	}
	return k
}

// clientKey returns the key of registered client id (ids start at 1).
func (tc *testCluster) clientKey(id uint32) *crypto.PrivateKey {
	tc.t.Helper()
	m, err := tc.cl.Client(id)
	if err != nil {
		tc.t.Fatal(err)
	}
	k, err := tc.cl.LoadKey(m)
	if err != nil {
		tc.t.Fatal(err)
	}
	return k
}

// client starts registered client id, closed when the test ends.
func (tc *testCluster) client(id uint32, timeout time.Duration) *client.Client {
	tc.t.Helper()
	c, err := client.New(client.Config{Cluster: tc.cl, ID: id, Key: tc.clientKey(id), Timeout: timeout, Logger: zap.NewNop()})
	if err != nil {
		tc.t.Fatalf("client %d: %v", id, err)
	}
	tc.t.Cleanup(func() { c.Close() })
	return c
}

// checkVoters fails unless res was voted by at least f+1 distinct replicas of the
// cluster.
func (tc *testCluster) checkVoters(t testing.TB, what string, res client.Result) bool {
	t.Helper()
	seen := map[uint32]bool{}
	for _, v := range res.Voters {
		if int(v) >= len(tc.cl.Replicas) || seen[v] {
			t.Errorf("%s: voters %v: not distinct replicas of %d", what, res.Voters, len(tc.cl.Replicas))
			return false
		}
		seen[v] = true
	}
	if len(seen) < tc.cl.F+1 {
		t.Errorf("%s: result voted by %v, fewer than f+1=%d replicas", what, res.Voters, tc.cl.F+1)
		return false
	}
	return true
}

// sameExecuted reports whether the replicas given all executed the same sequence
// number, at least min, and returns what each executed (for messages).
func sameExecuted(reps []*replica.Replica, min uint64) (bool, []uint64) {
	var ex []uint64
	for _, r := range reps {
		ex = append(ex, r.Status().Executed)
	}
	for _, e := range ex {
		if e != ex[0] || e < min {
			return false, ex
		}
	}
	return len(ex) > 0, ex
}

// waitFor is localnet.WaitFor.
var waitFor = localnet.WaitFor

// freePorts returns n free loopback TCP multiaddrs (localnet.FreePorts).
func freePorts(t testing.TB, n int) []string {
	t.Helper()
	addrs, err := localnet.FreePorts(n, false)
	if err != nil {
		t.Fatal(err)
	}
	return addrs
}
