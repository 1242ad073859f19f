package main

import (
	"bytes"
	"context"
	"fmt"
	"github.com/pbftkit/pbft/test/localnet"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"go.uber.org/zap"

	"github.com/pbftkit/pbft/app/kvstore"
	"github.com/pbftkit/pbft/pbft/client"
	"github.com/pbftkit/pbft/pbft/cluster"
	"github.com/pbftkit/pbft/pbft/replica"
)

// localCluster is n replicas and some clients in this process, over real libp2p on
// loopback: what `pbft demo` and `pbft bench` run.
type localCluster struct {
	dir     string
	cl      *cluster.Cluster
	reps    []*replica.Replica
	clients []*client.Client
	log     *zap.Logger
	cleanup []func()
}

type clusterOptions struct {
	Replicas, Clients int
	ReplyWindow       int // at least the requests in flight per client
	Scheme            string
	Dir               string // "" = a temporary directory, removed by close
	LogLevel          string
	NoSync            bool // records reach the OS, not the disk, before messages leave
}

func startLocalCluster(o clusterOptions) (lc *localCluster, err error) {
	if o.Replicas < 4 {
		return nil, fmt.Errorf("--replicas: %d is too few; PBFT needs n >= 3f+1 with f >= 1, so at least 4", o.Replicas)
	}
	if o.Clients < 1 {
		return nil, fmt.Errorf("--clients: must be at least 1")
	}
	lc = &localCluster{dir: o.Dir}
	defer func() {
		if err != nil {
			lc.close()
		}
	}()
	if lc.dir == "" {
		tmp, err := os.MkdirTemp("", "pbft-local-")
		if err != nil {
			return nil, err
		}
		lc.cleanup = append(lc.cleanup, func() { os.RemoveAll(tmp) })
		lc.dir = tmp
	}
	addrs, err := localnet.FreePorts(o.Replicas, false)
	if err != nil {
		return nil, err
	}
	proto := cluster.DefaultProtocol()
	proto.ReplyWindow = max(proto.ReplyWindow, o.ReplyWindow)
	// Deep pipelining: with batches filled under load (see pbft's maybePropose) more
	// batches in flight hide the fsync on each phase.
	proto.MaxInFlightBatches = 16
	path, err := cluster.Generate(lc.dir, cluster.GenerateOptions{Name: "local", Replicas: o.Replicas, Clients: o.Clients,
		Scheme: o.Scheme, Addrs: addrs, Protocol: proto})
	if err != nil {
		return nil, err
	}
	if lc.cl, err = cluster.Load(path); err != nil {
		return nil, err
	}
	if lc.log, err = newLogger(o.LogLevel); err != nil {
		return nil, err
	}
	lc.reps = make([]*replica.Replica, o.Replicas)
	for i := range lc.reps {
		key, err := lc.cl.LoadKey(&lc.cl.Replicas[i])
		if err != nil {
			return nil, err
		}
		lc.reps[i], err = replica.Start(replica.Options{Cluster: lc.cl, ID: uint32(i), Key: key, App: kvstore.New(),
			DataDir: fmt.Sprintf("%s/replica-%d.data", lc.dir, i), NoSync: o.NoSync, Logger: lc.log})
		if err != nil {
			return nil, err
		}
	}
	for j := range lc.cl.Clients {
		m := &lc.cl.Clients[j]
		key, err := lc.cl.LoadKey(m)
		if err != nil {
			return nil, err
		}
		c, err := client.New(client.Config{Cluster: lc.cl, ID: m.ID, Key: key, Logger: lc.log})
		if err != nil {
			return nil, err
		}
		lc.clients = append(lc.clients, c)
	}
	return lc, nil
}

// crash stops replica i as a crash would (its records stay on disk).
func (lc *localCluster) crash(i int) {
	if lc.reps[i] != nil {
		lc.reps[i].Stop()
		lc.reps[i] = nil
	}
}

// view is the highest view a live replica is in.
func (lc *localCluster) view() uint64 {
	v := uint64(0)
	for _, r := range lc.reps {
		if r != nil {
			v = max(v, r.Status().View)
		}
	}
	return v
}

func (lc *localCluster) close() {
	for _, c := range lc.clients {
		c.Close()
	}
	for _, r := range lc.reps {
		if r != nil {
			r.Stop()
		}
	}
	if lc.log != nil {
		lc.log.Sync()
	}
	for _, f := range lc.cleanup {
		f()
	}
}

// workload is a load to run on a local cluster: closed loop (each worker waits for its
// result before the next request) unless Rate sets an open-loop request rate.
type workload struct {
	Concurrency int // workers per client
	Duration    time.Duration
	Rate        float64 // requests per second over all workers; 0 = closed loop
	ValueBytes  int     // size of each put's value
	Progress    io.Writer
	// At, when set, runs once half-way through.
	At func()
}

// workloadResult is what a workload measured.
type workloadResult struct {
	Committed  int64 // requests with a result voted by f+1 replicas
	Reads      int64 // reads checked against the worker's last write
	Failed     int64 // requests without such a result in 30 s
	Mismatches int64 // reads that did not return the worker's last write, or failed writes
	MinVoters  int   // fewest replicas that voted any accepted result
	Elapsed    time.Duration
	CPU        time.Duration // process CPU time used (replicas and clients)
	Latency    *hdrhistogram.Histogram
}

func (w *workloadResult) throughput() float64 { return float64(w.Committed) / w.Elapsed.Seconds() }

func (w *workloadResult) ms(q float64) float64 { return float64(w.Latency.ValueAtQuantile(q)) / 1000 }

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rssBytes is the process's resident set size (0 where /proc is missing).
func rssBytes() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// run drives the workload: each worker owns one key and alternates a put of a new value
// with a get that must return it.
func (lc *localCluster) run(ctx context.Context, w workload) *workloadResult {
	res := &workloadResult{MinVoters: len(lc.cl.Replicas), Latency: hdrhistogram.New(1, 60_000_000, 3)}
	var mu sync.Mutex // guards res.Latency and res.MinVoters
	runCtx, cancel := context.WithTimeout(ctx, w.Duration)
	defer cancel()
	var committed, reads, failed, mismatches atomic.Int64
	workers := len(lc.clients) * w.Concurrency
	var pace <-chan time.Time
	if w.Rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / w.Rate))
		defer t.Stop()
		pace = t.C
	}
	start, cpu0 := time.Now(), cpuTime()
	var wg sync.WaitGroup
	for id := 0; id < workers; id++ {
		wg.Add(1)
		go func(c *client.Client, worker int) {
			defer wg.Done()
			key := fmt.Sprintf("k%d", worker)
			val := make([]byte, w.ValueBytes)
			for i := 0; runCtx.Err() == nil; i++ {
				copy(val, fmt.Sprintf("%d-%d-", worker, i))
				for _, get := range []bool{false, true} {
					if pace != nil {
						select {
						case <-pace:
						case <-runCtx.Done():
							return
						}
					}
					op := kvstore.Put(key, val)
					if get {
						op = kvstore.Get(key)
					}
					t0 := time.Now()
					opCtx, opCancel := context.WithTimeout(ctx, 30*time.Second)
					r, err := c.Invoke(opCtx, op)
					opCancel()
					if err != nil {
						if runCtx.Err() == nil {
							failed.Add(1)
						}
						break // a read after a lost write proves nothing
					}
					committed.Add(1)
					mu.Lock()
					res.Latency.RecordValue(time.Since(t0).Microseconds())
					res.MinVoters = min(res.MinVoters, len(r.Voters))
					mu.Unlock()
					kv, err := kvstore.DecodeResult(r.Value)
					if get {
						reads.Add(1)
					}
					if err != nil || !kv.OK || (get && (!kv.Found || !bytes.Equal(kv.Value, val))) {
						mismatches.Add(1)
					}
				}
			}
		}(lc.clients[id%len(lc.clients)], id)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	half := time.After(w.Duration / 2)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	var last int64
	lastT := start
	var line *progressLine
	if w.Progress != nil {
		line = newProgressLine(w.Progress)
	}
	for {
		select {
		case <-done:
			res.Elapsed, res.CPU = time.Since(start), cpuTime()-cpu0
			res.Committed, res.Reads, res.Failed, res.Mismatches = committed.Load(), reads.Load(), failed.Load(), mismatches.Load()
			if line != nil {
				line.end()
			}
			return res
		case <-half:
			if w.At != nil {
				w.At()
			}
		case now := <-tick.C:
			if w.Progress == nil {
				continue
			}
			n := committed.Load()
			mu.Lock()
			p50, p99 := res.Latency.ValueAtQuantile(50), res.Latency.ValueAtQuantile(99)
			mu.Unlock()
			line.update(false, "  %4.1fs  committed %7d  %6.0f req/s  p50 %6.2f ms  p99 %7.2f ms  view %d",
				now.Sub(start).Seconds(), n, float64(n-last)/now.Sub(lastT).Seconds(), float64(p50)/1000, float64(p99)/1000, lc.view())
			last, lastT = n, now
		}
	}
}
