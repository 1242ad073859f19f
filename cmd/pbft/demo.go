package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
)

// demoOptions describe one demo run.
type demoOptions struct {
	clusterOptions
	Concurrency int // requests in flight per client
	Duration    time.Duration
	Crash       bool // stop one backup half-way
}

func newDemoCmd() *cobra.Command {
	o := demoOptions{clusterOptions: clusterOptions{Replicas: 4, Clients: 8, Scheme: "Ed25519", LogLevel: "error"},
		Concurrency: 8, Duration: 6 * time.Second, Crash: true}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a local cluster over real libp2p with a workload, crash a backup, and report",
		Long: `demo needs no set-up: it creates keys and a cluster.yaml in a temporary directory,
starts the replicas in this process over libp2p on loopback with the key-value
application (each with its own Pebble store), and runs concurrent signing clients
for a few seconds with a live progress line. Half-way it crashes one backup. At the
end it prints the requests committed, throughput, latency percentiles, and checks
that every result was voted by f+1 replicas and that every read saw the client's
last write. It exits 0 only if all of that holds.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDemo(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Replicas, "replicas", o.Replicas, "replicas n (n >= 3f+1)")
	f.IntVar(&o.Clients, "clients", o.Clients, "concurrent clients, each its own libp2p host and key")
	f.IntVar(&o.Concurrency, "concurrency", o.Concurrency, "requests in flight per client")
	f.DurationVar(&o.Duration, "duration", o.Duration, "how long the workload runs")
	f.BoolVar(&o.Crash, "crash", o.Crash, "crash one backup half-way through")
	f.StringVar(&o.Scheme, "scheme", o.Scheme, "signature scheme: "+joinSchemes())
	f.StringVar(&o.Dir, "dir", "", "keep keys, cluster.yaml and data here (default: a temporary directory, removed)")
	f.StringVar(&o.LogLevel, "log-level", o.LogLevel, "replica log level: debug, info, warn, error")
	return cmd
}

func runDemo(ctx context.Context, o demoOptions, out, progress io.Writer) error {
	if o.Concurrency < 1 || o.Duration <= 0 {
		return errors.New("--concurrency and --duration: must be positive")
	}
	o.ReplyWindow = o.Concurrency
	lc, err := startLocalCluster(o.clusterOptions)
	if err != nil {
		return err
	}
	defer lc.close()
	f := lc.cl.F
	fmt.Fprintf(out, "cluster: %d replicas (f=%d) in this process over libp2p on loopback, %s signatures, Pebble stores in %s\n",
		len(lc.reps), f, lc.cl.Scheme.Name(), lc.dir)
	fmt.Fprintf(out, "workload: %d clients x %d requests in flight, put then get of each worker's key, for %s\n", len(lc.clients), o.Concurrency, o.Duration)
	crashed := -1
	res := lc.run(ctx, workload{Concurrency: o.Concurrency, Duration: o.Duration, ValueBytes: 16, Progress: progress, At: func() {
		if !o.Crash {
			return
		}
		b := len(lc.reps) - 1 // a backup unless it became primary
		if st := lc.reps[b].Status(); st.Primary == st.ID {
			b--
		}
		lc.crash(b)
		crashed = b
		fmt.Fprintf(progress, "\n  crashed replica %d (a backup); the other %d carry on\n", b, len(lc.reps)-1)
	}})
	fmt.Fprintf(out, "committed %d requests in %.1fs: %.0f req/s; latency p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n",
		res.Committed, res.Elapsed.Seconds(), res.throughput(), res.ms(50), res.ms(90), res.ms(99), float64(res.Latency.Max())/1000)
	if crashed >= 0 {
		fmt.Fprintf(out, "replica %d crashed half-way; the others kept serving (view %d)\n", crashed, lc.view())
	}
	fmt.Fprintf(out, "every result was voted by at least %d replicas (f+1=%d); %d reads returned the worker's last write, %d did not; %d requests unanswered\n",
		res.MinVoters, f+1, res.Reads-res.Mismatches, res.Mismatches, res.Failed)
	switch {
	case res.Committed == 0:
		return errors.New("demo: no request committed")
	case res.Mismatches > 0:
		return fmt.Errorf("demo: %d results were not what a correct service returns", res.Mismatches)
	case res.MinVoters < f+1:
		return fmt.Errorf("demo: a result was accepted with %d votes, fewer than f+1=%d", res.MinVoters, f+1)
	}
	fmt.Fprintln(out, "demo passed")
	return nil
}
