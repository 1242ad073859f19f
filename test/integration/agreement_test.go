package integration

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/pbftkit/pbft/app/kvstore"
	"github.com/pbftkit/pbft/pbft/client"
)

// TestAllResultsAreVotedAndStatesAgree runs a mixed workload of put, get, delete and
// compare-and-swap on a few shared keys from concurrent clients against four replicas.
// Every result a client accepts must be voted by f+1 replicas, and once the replicas
// executed the same sequence numbers their key-value stores must be identical.
func TestAllResultsAreVotedAndStatesAgree(t *testing.T) {
	const (
		replicas = 4
		clients  = 8
		workers  = 2 // requests in flight per client
	)
	requests := 1000
	if raceEnabled {
		requests = 500
	}
	tc := startCluster(t, replicas, clients, fastProtocol())
	keys := []string{"a", "b", "c", "d"}

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	var (
		mu       sync.Mutex
		done     int
		failures []string
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	var wg sync.WaitGroup
	perWorker := requests / (clients * workers)
	extra := requests % (clients * workers)
	for c := range clients {
		cli := tc.client(uint32(c+1), 0)
		for w := range workers {
			n := perWorker
			if c*workers+w < extra {
				n++
			}
			wg.Add(1)
			go func(cli *client.Client, worker, n int) {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(worker), 7))
				for i := range n {
					key := keys[rng.IntN(len(keys))]
					val := fmt.Appendf(nil, "w%d-%d", worker, i)
					var op []byte
					switch rng.IntN(4) {
					case 0:
						op = kvstore.Put(key, val)
					case 1:
						op = kvstore.Get(key)
					case 2:
						op = kvstore.Delete(key)
					default:
						// A swap that may or may not match: absent, or some worker's value.
						var expected []byte
						if rng.IntN(2) == 0 {
							expected = fmt.Appendf(nil, "w%d-%d", rng.IntN(clients*workers), rng.IntN(n+1))
						}
						op = kvstore.CAS(key, expected, val)
					}
					res, err := cli.Invoke(ctx, op)
					if err != nil {
						fail("worker %d request %d: %v", worker, i, err)
						return
					}
					what := fmt.Sprintf("worker %d request %d", worker, i)
					if !tc.checkVoters(t, what, res) {
						return
					}
					r, err := kvstore.DecodeResult(res.Value)
					switch {
					case err != nil:
						fail("%s: result %x: %v", what, res.Value, err)
					case !r.OK && r.Err != kvstore.ErrCASMismatch:
						fail("%s: %s", what, r.Err)
					}
					mu.Lock()
					done++
					mu.Unlock()
				}
			}(cli, c*workers+w, n)
		}
	}
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	if done != requests {
		t.Fatalf("%d of %d requests completed", done, requests)
	}

	// Every request executed on f+1 replicas at least; the others catch up.
	waitFor(t, 20*time.Second, "every replica executed the same sequence numbers",
		func() bool { ok, _ := sameExecuted(tc.reps, 1); return ok },
		func() string { _, ex := sameExecuted(tc.reps, 1); return fmt.Sprintf("executed %v", ex) })
	_, executed := sameExecuted(tc.reps, 1)
	for i := range tc.reps {
		tc.stop(i)
	}
	var snaps [][]byte
	for i, st := range tc.stores {
		s, err := st.Snapshot()
		if err != nil {
			t.Fatalf("replica %d: snapshot: %v", i, err)
		}
		snaps = append(snaps, s)
	}
	for i := 1; i < len(snaps); i++ {
		if !bytes.Equal(snaps[i], snaps[0]) {
			t.Errorf("replica %d's store differs from replica 0's:\n%x\n%x", i, snaps[i], snaps[0])
		}
	}
	t.Logf("%d requests in %d sequence numbers; %d keys in the store", requests, executed[0], tc.stores[0].Len())
}
