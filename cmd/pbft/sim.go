package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/pbftkit/pbft/crypto"
	"github.com/pbftkit/pbft/test/sim"
	"github.com/spf13/cobra"
)

func newSimCmd() *cobra.Command {
	o := sim.DefaultOptions()
	var (
		seeds     int
		seedStart uint64
		workers   int
		asJSON    bool
		quiet     bool
		trace     bool
		clean     bool
	)
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Run seeded Byzantine simulations of a cluster and check its invariants",
		Long: `sim runs the real protocol core, n replicas in one process, over a seeded network
that delays, reorders, drops, duplicates and partitions messages until it heals, with
B Byzantine replicas following a named strategy and a workload of signing clients.

After every delivered message it checks agreement, validity, exactly-once execution,
equal checkpoint digests and f+1 voting; after the heal, every request must complete.
A failing seed is printed with the one command that replays it exactly.

Strategies: ` + strings.Join(sim.Strategies, ", ") + `, or all (one drawn per faulty replica and seed).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkSimFlags(&o, seeds); err != nil {
				return err
			}
			if clean {
				if o.Swarm {
					return fmt.Errorf("--clean-network: a swarm seed draws its own fault rates; drop --swarm or --clean-network")
				}
				o.DropRate, o.DupRate, o.Partitions, o.Crashes, o.HealTick = 0, 0, 0, 0, 0
			}
			if trace {
				if seeds != 1 {
					return fmt.Errorf("--trace: traces one seed at a time; add --seeds 1")
				}
				o.Trace = cmd.ErrOrStderr()
				quiet = true
			}
			stderr := cmd.ErrOrStderr()
			var progress func(int, *sim.Summary)
			if !quiet {
				progress = progressPrinter(stderr, seeds)
			}
			s := sim.RunSeeds(o, seedStart, seeds, workers, progress)
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(&s); err != nil {
					return err
				}
			} else {
				printSummary(cmd.OutOrStdout(), &s)
			}
			if s.FirstFailingSeed != nil {
				// Like a failing test: scripts and CI see it in the exit status.
				return fmt.Errorf("%d of %d seeds failed (first: seed %d)", s.Violations+s.LivenessFailures, s.Seeds, *s.FirstFailingSeed)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Replicas, "replicas", o.Replicas, "replicas n (n >= 3f+1)")
	f.IntVar(&o.Byzantine, "byzantine", o.Byzantine, "Byzantine replicas B")
	f.StringVar(&o.Strategy, "strategy", o.Strategy, "Byzantine strategy: "+strings.Join(sim.Strategies, ", ")+" or all")
	f.BoolVar(&o.FaultyPrimary, "faulty-primary", false, "make the primary of view 0 one of the Byzantine replicas")
	f.IntVar(&seeds, "seeds", 100, "seeds to run")
	f.Uint64Var(&seedStart, "seed-start", 1, "first seed")
	f.IntVar(&o.Requests, "requests", o.Requests, "requests per seed, from all clients together")
	f.IntVar(&o.Clients, "clients", o.Clients, "concurrent clients")
	f.StringVar(&o.Scheme, "scheme", o.Scheme, "signature scheme: "+strings.Join(crypto.Schemes(), ", "))
	f.BoolVar(&o.FastCrypto, "fast-crypto", false, "use the simulator's HMAC stand-in instead of real signatures (faster; simulator only)")
	f.IntVar(&workers, "workers", 0, "seeds run in parallel (0: one per CPU)")
	f.BoolVar(&asJSON, "json", false, "print the summary as one JSON object")
	f.BoolVar(&quiet, "quiet", false, "no progress line")
	f.IntVar(&o.Crashes, "crashes", o.Crashes, "crashes of correct replicas per seed before the heal; each restarts from its persisted records")
	f.BoolVar(&clean, "clean-network", false, "no loss, duplication or partition: only delays (to measure a strategy's cost alone)")
	f.BoolVar(&trace, "trace", false, "print every delivery, execution and drop of one seed to stderr")
	f.IntVar(&o.DiskDelay, "disk-delay", o.DiskDelay, "durable writes of correct replicas take 1 to N network time units (10 a tick) while they go on stepping; a crash loses what was not yet written (0: writes are instant)")
	f.BoolVar(&o.TornWrites, "torn-writes", o.TornWrites, "with --disk-delay: a crash leaves a prefix of the writes in progress on disk")
	f.BoolVar(&o.Swarm, "swarm", false, "swarm testing: each seed also draws n (4, 5, 7, with f Byzantine), checkpoint interval, window, batch, pipelining, loss, delay, partitions, crashes, disk delay, torn writes and timeouts")
	return cmd
}

func checkSimFlags(o *sim.Options, seeds int) error {
	f := (o.Replicas - 1) / 3
	switch {
	case o.Replicas < 4:
		return fmt.Errorf("--replicas: %d is too few; PBFT needs n >= 3f+1 with f >= 1, so at least 4", o.Replicas)
	case o.Byzantine < 0 || o.Byzantine > o.Replicas-1:
		return fmt.Errorf("--byzantine: %d is not between 0 and %d", o.Byzantine, o.Replicas-1)
	case seeds <= 0:
		return fmt.Errorf("--seeds: must be positive, got %d", seeds)
	case o.Requests < 0:
		return fmt.Errorf("--requests: must not be negative")
	case o.Clients <= 0:
		return fmt.Errorf("--clients: must be positive, got %d", o.Clients)
	case o.Crashes < 0:
		return fmt.Errorf("--crashes: must not be negative, got %d", o.Crashes)
	case o.DiskDelay < 0:
		return fmt.Errorf("--disk-delay: must not be negative, got %d", o.DiskDelay)
	case o.TornWrites && o.DiskDelay == 0:
		return fmt.Errorf("--torn-writes: needs --disk-delay above 0 (with instant writes nothing is in progress at a crash)")
	case o.FaultyPrimary && o.Byzantine == 0:
		return fmt.Errorf("--faulty-primary: needs --byzantine of at least 1")
	}
	if o.Strategy != "all" && !sim.KnownStrategy(o.Strategy) {
		return fmt.Errorf("--strategy: unknown %q; want all or one of %s", o.Strategy, strings.Join(sim.Strategies, ", "))
	}
	if _, err := crypto.SchemeByName(o.Scheme); err != nil {
		return fmt.Errorf("--scheme: %w", err)
	}
	_ = f
	return nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func progressPrinter(w io.Writer, total int) func(int, *sim.Summary) {
	start := time.Now()
	last := time.Time{}
	line := newProgressLine(w)
	return func(done int, s *sim.Summary) {
		if done != total && time.Since(last) < 500*time.Millisecond {
			return
		}
		last = time.Now()
		rate := float64(done) / time.Since(start).Seconds()
		line.update(done == total, "seeds %d/%d  violations %d  liveness failures %d  requests %d  %.1f seeds/s",
			done, total, s.Violations, s.LivenessFailures, s.CommittedRequests, rate)
		if done == total {
			line.end()
		}
	}
}

func printSummary(w io.Writer, s *sim.Summary) {
	cluster := fmt.Sprintf("n=%d, %d Byzantine", s.Replicas, s.Byzantine)
	if s.Swarm {
		cluster = "swarm (n and f Byzantine, intervals, batches, faults drawn per seed)"
	}
	fmt.Fprintf(w, "pbft sim: %s (%s%s), %d seeds from %d, %d requests each, crypto %s\n",
		cluster, s.Strategy, map[bool]string{true: ", primary faulty", false: ""}[s.FaultyPrimary],
		s.Seeds, s.SeedStart, s.Requests, s.Crypto)
	fmt.Fprintf(w, "  safety violations: %d seeds\n  liveness failures: %d seeds\n  requests completed: %d\n  state transfers: %d\n  %.1f s, %.1f seeds/s\n",
		s.Violations, s.LivenessFailures, s.CommittedRequests, s.StateTransfers, s.ElapsedSeconds, s.SeedsPerSecond)
	fmt.Fprintf(w, "  view changes: %d (recovery ticks p50 %d, p99 %d, max %d)\n  ticks to complete a seed's requests: p50 %d\n",
		s.ViewChanges, s.RecoveryTicks["p50"], s.RecoveryTicks["p99"], s.RecoveryTicks["max"], s.CompletionTicks)
	reasons := make([]string, 0, len(s.Drops))
	for k := range s.Drops {
		reasons = append(reasons, k)
	}
	sort.Strings(reasons)
	if len(reasons) > 0 {
		fmt.Fprintln(w, "  messages rejected or lost, by reason:")
		for _, k := range reasons {
			fmt.Fprintf(w, "    %8d  %s\n", s.Drops[k], k)
		}
	}
	for _, f := range s.Failures {
		fmt.Fprintf(w, "\nseed %d failed (strategies %v):\n  config: %s\n", f.Seed, f.Strategies, f.Config)
		for _, v := range f.Violations {
			fmt.Fprintf(w, "  violation: %s\n", v)
		}
		if f.Liveness != "" {
			fmt.Fprintf(w, "  liveness: %s\n", f.Liveness)
		}
		fmt.Fprintf(w, "  replay: %s\n", f.Replay)
	}
	if s.FirstFailingSeed == nil {
		fmt.Fprintln(w, "  all seeds passed")
	}
}
