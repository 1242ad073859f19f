package integration

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/pbftkit/pbft/app/kvstore"
	"github.com/pbftkit/pbft/pbft/client"
)

// kvInput is one operation of the history: a put of value or a get of key.
type kvInput struct {
	put   bool
	key   string
	value string
}

// kvOutput is what the client saw: for a get, whether the key existed and its value;
// for a put, whether the key existed before. unknown marks an operation that returned
// no result (an error or timeout): it may or may not have taken effect.
type kvOutput struct {
	found   bool
	value   string
	unknown bool
}

// kvModel is a key-value register per key: the state of a partition is the key's
// value, "" when absent (values put are never empty).
var kvModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var order []string
		for _, op := range history {
			k := op.Input.(kvInput).key
			if _, ok := byKey[k]; !ok {
				order = append(order, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		var out [][]porcupine.Operation
		for _, k := range order {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(string), input.(kvInput), output.(kvOutput)
		if in.put {
			return out.unknown || out.found == (st != ""), in.value
		}
		return out.unknown || (out.found == (st != "") && out.value == st), st
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(kvInput), output.(kvOutput)
		res := fmt.Sprintf("found=%v", out.found)
		if out.unknown {
			res = "?"
		}
		if in.put {
			return fmt.Sprintf("put(%s, %s) -> %s", in.key, in.value, res)
		}
		if !out.unknown && out.found {
			res = out.value
		}
		return fmt.Sprintf("get(%s) -> %s", in.key, res)
	},
}

// TestPrimaryCrashKeepsAcknowledgedWritesLinearizable runs concurrent clients doing
// puts and gets on a few keys, and part-way stops the primary. The backups
// must change view and resume service, and the history the clients saw (with requests
// that got no answer counted as possibly executed at any time after their call) must
// be linearizable.
func TestPrimaryCrashKeepsAcknowledgedWritesLinearizable(t *testing.T) {
	const (
		clients = 4
		workers = 2 // concurrent callers per client, each a porcupine process
	)
	before, after := 150, 150 // completed operations wanted before and after the crash
	if raceEnabled {
		before, after = 100, 100
	}
	tc := startCluster(t, 4, clients, fastProtocol())
	keys := []string{"x", "y", "z"}

	start := time.Now()
	now := func() int64 { return int64(time.Since(start)) }
	var (
		mu       sync.Mutex
		history  []porcupine.Operation
		problems []string
	)
	var completed atomic.Int64  // operations that returned a result
	var crashedAt atomic.Int64  // when the primary was stopped (0: not yet)
	var afterCrash atomic.Int64 // operations called after the crash that returned a result
	var unanswered atomic.Int64 // operations without a result
	stopWorkers := make(chan struct{})
	// Stopping also abandons the calls in flight: they are recorded as unanswered.
	base, abandon := context.WithCancel(context.Background())
	defer abandon()
	var wg sync.WaitGroup
	for c := range clients {
		cli := tc.client(uint32(c+1), 200*time.Millisecond)
		for w := range workers {
			proc := c*workers + w
			wg.Add(1)
			go func(cli *client.Client) {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stopWorkers:
						return
					default:
					}
					key := keys[(proc+i)%len(keys)]
					in := kvInput{key: key}
					var op []byte
					if i%2 == 0 {
						in.put, in.value = true, fmt.Sprintf("p%d-%d", proc, i)
						op = kvstore.Put(key, []byte(in.value))
					} else {
						op = kvstore.Get(key)
					}
					call := now()
					ctx, cancel := context.WithTimeout(base, 8*time.Second)
					res, err := cli.Invoke(ctx, op)
					cancel()
					ret := now()
					var out kvOutput
					if err != nil {
						// It may still execute, at any time: it returns at infinity.
						out.unknown, ret = true, math.MaxInt64
						unanswered.Add(1)
					} else {
						tc.checkVoters(t, fmt.Sprintf("process %d op %d", proc, i), res)
						r, derr := kvstore.DecodeResult(res.Value)
						if derr != nil || !r.OK {
							mu.Lock()
							problems = append(problems, fmt.Sprintf("process %d op %d: result %+v, %v", proc, i, r, derr))
							mu.Unlock()
							out.unknown = true
						}
						out.found, out.value = r.Found, string(r.Value)
						completed.Add(1)
						if at := crashedAt.Load(); at != 0 && call > at {
							afterCrash.Add(1)
						}
					}
					mu.Lock()
					history = append(history, porcupine.Operation{ClientId: proc, Input: in, Call: call, Output: out, Return: ret})
					mu.Unlock()
				}
			}(cli)
		}
	}
	stopAll := sync.OnceFunc(func() { close(stopWorkers); abandon(); wg.Wait() })
	t.Cleanup(stopAll)

	waitFor(t, 20*time.Second, fmt.Sprintf("%d operations completed before the crash", before),
		func() bool { return completed.Load() >= int64(before) }, nil)
	// The primary of the view the cluster is in now: under the race detector on a
	// loaded machine a view change may already have replaced the primary of view 0.
	// The replicas agree on it once they all run in one view.
	var primary int
	var crashView uint64
	waitFor(t, 20*time.Second, "every replica active in one view", func() bool {
		st := tc.reps[0].Status()
		for _, r := range tc.reps {
			if s := r.Status(); !s.Active || s.View != st.View {
				return false
			}
		}
		primary, crashView = int(st.Primary), st.View
		return true
	}, func() string { return fmt.Sprint(views(tc)) })
	tc.stop(primary)
	crashedAt.Store(now())
	crashTime := time.Now()
	waitFor(t, 30*time.Second, fmt.Sprintf("%d operations called after the crash completed", after),
		func() bool { return afterCrash.Load() >= int64(after) },
		func() string {
			return fmt.Sprintf("%d completed after the crash, views %v", afterCrash.Load(), views(tc))
		})
	resumed := time.Since(crashTime)
	stopAll()

	for _, p := range problems {
		t.Error(p)
	}
	for i, r := range tc.reps {
		if r != nil && r.Status().View <= crashView {
			t.Errorf("replica %d is still in view %d after the primary of that view (replica %d) stopped", i, r.Status().View, primary)
		}
	}
	res, info := porcupine.CheckOperationsVerbose(kvModel, history, 30*time.Second)
	switch res {
	case porcupine.Ok:
	case porcupine.Illegal:
		t.Errorf("the history of %d operations is not linearizable; first partial linearizations:\n%s",
			len(history), describePartial(info))
	default:
		t.Errorf("linearizability check of %d operations: %v", len(history), res)
	}
	t.Logf("%d operations (%d unanswered, the calls abandoned at the end included), %d completed after the crash within %v; views %v",
		len(history), unanswered.Load(), afterCrash.Load(), resumed.Round(time.Millisecond), views(tc))
}

func views(tc *testCluster) []string {
	var out []string
	for i, r := range tc.reps {
		if r == nil {
			out = append(out, fmt.Sprintf("%d:stopped", i))
			continue
		}
		st := r.Status()
		out = append(out, fmt.Sprintf("%d:v%d/active=%v/exec=%d", i, st.View, st.Active, st.Executed))
	}
	return out
}

// describePartial shows the longest partial linearization of each partition.
func describePartial(info porcupine.LinearizationInfo) string {
	var b strings.Builder
	for p, lins := range info.PartialLinearizationsOperations() {
		var longest []porcupine.Operation
		for _, l := range lins {
			if len(l) > len(longest) {
				longest = l
			}
		}
		fmt.Fprintf(&b, "  partition %d:", p)
		for _, op := range longest {
			fmt.Fprintf(&b, " %s;", kvModel.DescribeOperation(op.Input, op.Output))
		}
		b.WriteString("\n")
	}
	return b.String()
}
