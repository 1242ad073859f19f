package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/spf13/cobra"

	"github.com/pbftkit/pbft/crypto"
)

type benchOptions struct {
	clusterOptions
	Concurrency int
	Duration    time.Duration
	ValueBytes  int
	JSON        bool
	CPUProfile  string
}

// benchReport is the outcome of `pbft bench`, printed as text or JSON.
type benchReport struct {
	Replicas    int     `json:"replicas"`
	Fsync       bool    `json:"fsync"`
	Scheme      string  `json:"scheme"`
	Cores       int     `json:"cores"`
	InFlight    int     `json:"requests_in_flight"`
	ValueBytes  int     `json:"value_bytes"`
	SignMicros  float64 `json:"sign_us"`
	VerifyMicro float64 `json:"verify_us"`
	MeanBatch   float64 `json:"mean_batch_requests"`
	// CeilingRPS is the crypto ceiling: cores / (client sign + n verifies per request
	// + the per-batch protocol signatures and verifications divided by the batch size).
	CeilingRPS   float64 `json:"crypto_ceiling_rps"`
	PeakRPS      float64 `json:"peak_rps"`
	OfCeiling    float64 `json:"peak_of_ceiling"`
	PeakP50Ms    float64 `json:"peak_p50_ms"`
	PeakP99Ms    float64 `json:"peak_p99_ms"`
	CPUPercent   float64 `json:"cpu_percent"`         // of one core, whole process (replicas and clients)
	PersistMs    float64 `json:"persist_ms"`          // mean durable write of a group of records during the peak
	PersistsPerS float64 `json:"persists_per_second"` // durable writes per second, all replicas
	HalfRPS      float64 `json:"half_load_rps"`
	HalfP50Ms    float64 `json:"half_load_p50_ms"`
	HalfP99Ms    float64 `json:"half_load_p99_ms"`
	RSSStartMiB  float64 `json:"rss_start_mib"`
	RSSEndMiB    float64 `json:"rss_end_mib"`
	// RSSSamplesMiB and HeapSamplesMiB are taken every tenth of the peak run: flat
	// once warm means memory is bounded (checkpoints garbage-collect the logs).
	RSSSamplesMiB  []float64 `json:"rss_samples_mib"`
	HeapSamplesMiB []float64 `json:"go_heap_samples_mib"`
	Failed         int64     `json:"requests_failed"`
	Mismatches     int64     `json:"mismatches"`
	StableSeqEnd   uint64    `json:"stable_checkpoint_end"`
	PeakDurationS  float64   `json:"peak_seconds"`
}

func newBenchCmd() *cobra.Command {
	o := benchOptions{clusterOptions: clusterOptions{Replicas: 4, Clients: 8, Scheme: "Ed25519", LogLevel: "error"},
		Concurrency: 32, Duration: 10 * time.Second, ValueBytes: 64}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure throughput, latency, CPU and memory of a local cluster against its crypto ceiling",
		Long: `bench starts a local cluster like demo (replicas in this process, real libp2p on
loopback, Pebble stores) and measures, in one run:
  - this machine's signature sign and verify cost for the scheme;
  - peak throughput with closed-loop clients (64-byte values by default), p50/p99
    latency, CPU use and resident memory at start and end;
  - the crypto ceiling: cores / (client sign + n verifies per request + the per-batch
    protocol signatures and verifications divided by the mean batch size), and the
    peak as a share of it;
  - latency at half the peak load (open loop).
Clients run in the same process and share the cores.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.CPUProfile != "" {
				f, err := os.Create(o.CPUProfile)
				if err != nil {
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				defer pprof.StopCPUProfile()
			}
			rep, err := runBench(cmd.Context(), o, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if o.JSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			printBench(cmd.OutOrStdout(), rep)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Replicas, "replicas", o.Replicas, "replicas n (n >= 3f+1)")
	f.IntVar(&o.Clients, "clients", o.Clients, "clients, each its own libp2p host and key")
	f.IntVar(&o.Concurrency, "concurrency", o.Concurrency, "requests in flight per client at peak")
	f.DurationVar(&o.Duration, "duration", o.Duration, "length of the peak run (the half-load run lasts half as long)")
	f.IntVar(&o.ValueBytes, "value-bytes", o.ValueBytes, "bytes per put value")
	f.StringVar(&o.Scheme, "scheme", o.Scheme, "signature scheme: "+joinSchemes())
	f.BoolVar(&o.JSON, "json", false, "print the report as JSON")
	f.BoolVar(&o.NoSync, "no-fsync", false, "replicas write records to the OS without fsync (safe against process crashes, not machine crashes)")
	f.StringVar(&o.CPUProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	f.StringVar(&o.LogLevel, "log-level", o.LogLevel, "replica log level")
	return cmd
}

// cryptoCost measures one sign and one verify of a request-sized message, in µs.
func cryptoCost(scheme string) (sign, verify float64, err error) {
	s, err := crypto.SchemeByName(scheme)
	if err != nil {
		return 0, 0, fmt.Errorf("--scheme: %w", err)
	}
	k, err := s.GenerateKey(rand.Reader)
	if err != nil {
		return 0, 0, err
	}
	msg := make([]byte, 120)
	d := crypto.Domain{Cluster: "bench", Type: 1, Signer: 1}
	// The fastest of several trials: on a shared machine the others include
	// someone else's work.
	var sig []byte
	const trials, rounds = 7, 400
	pub := k.Public()
	sign, verify = math.Inf(1), math.Inf(1)
	for trial := 0; trial < trials; trial++ {
		t0 := time.Now()
		for i := 0; i < rounds; i++ {
			msg[0] = byte(i)
			sig = k.Sign(d, msg)
		}
		sign = min(sign, float64(time.Since(t0).Nanoseconds())/1e3/rounds)
		t0 = time.Now()
		for i := 0; i < rounds; i++ {
			if !pub.Verify(d, msg, sig) {
				return 0, 0, errors.New("bench: a fresh signature does not verify")
			}
		}
		verify = min(verify, float64(time.Since(t0).Nanoseconds())/1e3/rounds)
	}
	return sign, verify, nil
}

func runBench(ctx context.Context, o benchOptions, progress io.Writer) (*benchReport, error) {
	if o.Concurrency < 1 || o.Duration <= 0 || o.ValueBytes < 0 {
		return nil, errors.New("--concurrency, --duration, --value-bytes: out of range")
	}
	rep := &benchReport{Replicas: o.Replicas, Fsync: !o.NoSync, Scheme: o.Scheme, Cores: runtime.NumCPU(), ValueBytes: o.ValueBytes,
		InFlight: o.Clients * o.Concurrency}
	var err error
	fmt.Fprintln(progress, "measuring signature costs...")
	if rep.SignMicros, rep.VerifyMicro, err = cryptoCost(o.Scheme); err != nil {
		return nil, err
	}
	o.ReplyWindow = o.Concurrency
	lc, err := startLocalCluster(o.clusterOptions)
	if err != nil {
		return nil, err
	}
	defer lc.close()
	fmt.Fprintln(progress, "warming up...")
	lc.run(ctx, workload{Concurrency: o.Concurrency, Duration: time.Second, ValueBytes: o.ValueBytes})
	b0, q0 := lc.executed()
	p0, pn0 := lc.persists()
	rep.RSSStartMiB = float64(rssBytes()) / (1 << 20)
	fmt.Fprintf(progress, "peak: %d clients x %d in flight for %s\n", o.Clients, o.Concurrency, o.Duration)
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(o.Duration / 10)
		defer t.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-t.C:
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				rep.RSSSamplesMiB = append(rep.RSSSamplesMiB, float64(rssBytes()>>20))
				rep.HeapSamplesMiB = append(rep.HeapSamplesMiB, float64(ms.HeapInuse>>20))
			}
		}
	}()
	peak := lc.run(ctx, workload{Concurrency: o.Concurrency, Duration: o.Duration, ValueBytes: o.ValueBytes, Progress: progress})
	close(stopSampling)
	<-sampled
	rep.RSSEndMiB = float64(rssBytes()) / (1 << 20)
	b1, q1 := lc.executed()
	if p1, pn1 := lc.persists(); p1 > p0 {
		rep.PersistMs = float64(pn1-pn0) / float64(p1-p0) / 1e6
		rep.PersistsPerS = float64(p1-p0) / peak.Elapsed.Seconds()
	}
	rep.PeakRPS, rep.PeakP50Ms, rep.PeakP99Ms = peak.throughput(), peak.ms(50), peak.ms(99)
	rep.PeakDurationS = peak.Elapsed.Seconds()
	rep.CPUPercent = 100 * peak.CPU.Seconds() / peak.Elapsed.Seconds()
	rep.Failed, rep.Mismatches = peak.Failed, peak.Mismatches
	if b1 > b0 {
		rep.MeanBatch = float64(q1-q0) / float64(b1-b0)
	}
	n := float64(o.Replicas)
	perRequest := rep.SignMicros + n*rep.VerifyMicro
	if rep.MeanBatch > 0 {
		// Per batch: the pre-prepare, n-1 prepares and n commits signed; verified:
		// the pre-prepare by n-1 backups, (n-1)² prepares, n(n-1) commits.
		perRequest += ((2*n-1)*rep.SignMicros + 2*n*(n-1)*rep.VerifyMicro) / rep.MeanBatch
	}
	rep.CeilingRPS = float64(rep.Cores) * 1e6 / perRequest
	rep.OfCeiling = rep.PeakRPS / rep.CeilingRPS
	half := rep.PeakRPS / 2
	fmt.Fprintf(progress, "half load: %.0f req/s open loop for %s\n", half, o.Duration/2)
	h := lc.run(ctx, workload{Concurrency: o.Concurrency, Duration: o.Duration / 2, Rate: half, ValueBytes: o.ValueBytes, Progress: progress})
	rep.HalfRPS, rep.HalfP50Ms, rep.HalfP99Ms = h.throughput(), h.ms(50), h.ms(99)
	rep.Failed += h.Failed
	rep.Mismatches += h.Mismatches
	for _, r := range lc.reps {
		rep.StableSeqEnd = max(rep.StableSeqEnd, r.Metrics().StableSeq.Load())
	}
	if rep.Mismatches > 0 {
		return rep, fmt.Errorf("bench: %d results were not what a correct service returns", rep.Mismatches)
	}
	return rep, nil
}

// persists sums the durable writes of live replicas and the nanoseconds they took.
func (lc *localCluster) persists() (count, nanos uint64) {
	for _, r := range lc.reps {
		if r != nil {
			count += r.Metrics().Persists.Load()
			nanos += r.Metrics().PersistNanos.Load()
		}
	}
	return count, nanos
}

// executed sums, over live replicas, the batches and requests executed, divided by n.
func (lc *localCluster) executed() (batches, requests uint64) {
	live := uint64(0)
	for _, r := range lc.reps {
		if r != nil {
			batches += r.Metrics().Batches.Load()
			requests += r.Metrics().Requests.Load()
			live++
		}
	}
	if live == 0 {
		return 0, 0
	}
	return batches / live, requests / live
}

func printBench(w io.Writer, r *benchReport) {
	sync := "records fsynced before sending"
	if !r.Fsync {
		sync = "records written without fsync"
	}
	fmt.Fprintf(w, "%d replicas, %s, %d cores, %d requests in flight, %d-byte values, %s\n", r.Replicas, r.Scheme, r.Cores, r.InFlight, r.ValueBytes, sync)
	fmt.Fprintf(w, "  signature cost        sign %.1f µs, verify %.1f µs\n", r.SignMicros, r.VerifyMicro)
	fmt.Fprintf(w, "  mean batch            %.1f requests; a durable write of records takes %.2f ms on average\n", r.MeanBatch, r.PersistMs)
	fmt.Fprintf(w, "  crypto ceiling        %.0f req/s\n", r.CeilingRPS)
	fmt.Fprintf(w, "  peak throughput       %.0f req/s (%.0f%% of the ceiling), p50 %.2f ms, p99 %.2f ms, CPU %.0f%%\n",
		r.PeakRPS, 100*r.OfCeiling, r.PeakP50Ms, r.PeakP99Ms, r.CPUPercent)
	fmt.Fprintf(w, "  at half load          %.0f req/s, p50 %.2f ms, p99 %.2f ms\n", r.HalfRPS, r.HalfP50Ms, r.HalfP99Ms)
	fmt.Fprintf(w, "  resident memory       %.0f MiB at start of peak, %.0f MiB at end (all replicas and clients); stable checkpoint %d\n",
		r.RSSStartMiB, r.RSSEndMiB, r.StableSeqEnd)
	fmt.Fprintf(w, "  memory during peak    RSS %v MiB, Go heap in use %v MiB\n", r.RSSSamplesMiB, r.HeapSamplesMiB)
	fmt.Fprintf(w, "  failed requests       %d\n", r.Failed)
}
