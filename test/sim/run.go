package sim

import (
	"fmt"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Failure is one failing seed, with the command that replays it exactly.
type Failure struct {
	Seed       uint64   `json:"seed"`
	Config     string   `json:"config"`
	Strategies []string `json:"strategies"`
	Violations []string `json:"violations,omitempty"`
	Liveness   string   `json:"liveness,omitempty"`
	Replay     string   `json:"replay"`
}

// Summary aggregates a sweep of seeds.
type Summary struct {
	Replicas          int     `json:"replicas"`
	Byzantine         int     `json:"byzantine"`
	Strategy          string  `json:"strategy"`
	FaultyPrimary     bool    `json:"faulty_primary"`
	Swarm             bool    `json:"swarm"`
	Requests          int     `json:"requests"`
	SeedStart         uint64  `json:"seed_start"`
	Seeds             int     `json:"seeds"`
	Violations        int     `json:"violations"`        // seeds with a safety violation
	LivenessFailures  int     `json:"liveness_failures"` // seeds whose requests did not all complete
	CommittedRequests int     `json:"committed_requests"`
	FirstFailingSeed  *uint64 `json:"first_failing_seed"`
	StateTransfers    int     `json:"state_transfers"`
	Restarts          int     `json:"restarts"` // correct replicas that crashed and came back
	Delivered         int     `json:"messages_delivered"`
	// Drops counts rejected or lost messages by reason, over all seeds.
	Drops map[string]int `json:"drops"`
	// ViewChanges counts the views started over all seeds; RecoveryTicks summarises,
	// per view change, the ticks from the first VIEW-CHANGE to the new view running.
	ViewChanges   int            `json:"view_changes"`
	RecoveryTicks map[string]int `json:"recovery_ticks"`
	// CompletionTicks is the median number of ticks a seed took to complete all its
	// requests: the simulated cost of a strategy (a slow primary shows here).
	CompletionTicks int `json:"completion_ticks_p50"`

	recovery, completion []int
	Crypto               string    `json:"crypto"`
	ElapsedSeconds       float64   `json:"elapsed_seconds"`
	SeedsPerSecond       float64   `json:"seeds_per_second"`
	Failures             []Failure `json:"failures"` // the first ones, by seed
}

const maxReportedFailures = 10

// ReplayCommand is the one command that reruns seed exactly.
func ReplayCommand(o Options, seed uint64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "go run ./cmd/pbft sim --replicas %d --byzantine %d --strategy %s", o.Replicas, o.Byzantine, o.Strategy)
	if o.FaultyPrimary {
		b.WriteString(" --faulty-primary")
	}
	fmt.Fprintf(&b, " --requests %d", o.Requests)
	if o.Clients != DefaultOptions().Clients {
		fmt.Fprintf(&b, " --clients %d", o.Clients)
	}
	if o.Crashes != DefaultOptions().Crashes && o.HealTick != 0 {
		fmt.Fprintf(&b, " --crashes %d", o.Crashes)
	}
	if o.DiskDelay != 0 && !o.Swarm {
		fmt.Fprintf(&b, " --disk-delay %d", o.DiskDelay)
	}
	if o.TornWrites && !o.Swarm {
		b.WriteString(" --torn-writes")
	}
	if o.Swarm {
		b.WriteString(" --swarm")
	}
	fmt.Fprintf(&b, " --seeds 1 --seed-start %d", seed)
	if o.FastCrypto {
		b.WriteString(" --fast-crypto")
	} else if o.Scheme != DefaultOptions().Scheme {
		fmt.Fprintf(&b, " --scheme %s", o.Scheme)
	}
	return b.String()
}

// RunSeeds runs seeds start..start+count-1 on workers goroutines (0: one per CPU) and
// calls progress (from one goroutine at a time) after each finished seed.
func RunSeeds(o Options, start uint64, count, workers int, progress func(done int, s *Summary)) Summary {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	s := Summary{
		Replicas: o.Replicas, Byzantine: o.Byzantine, Strategy: o.Strategy,
		FaultyPrimary: o.FaultyPrimary, Swarm: o.Swarm, Requests: o.Requests, SeedStart: start, Seeds: count,
		Crypto: o.Scheme, Failures: []Failure{}, Drops: map[string]int{},
	}
	if o.FastCrypto {
		s.Crypto = "fast (simulator stand-in)"
	}
	begin := time.Now()
	seeds := make(chan uint64)
	var mu sync.Mutex
	var wg sync.WaitGroup
	done := 0
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seed := range seeds {
				opts := o
				opts.Seed = seed
				r := Run(opts)
				mu.Lock()
				s.add(&r, o)
				done++
				if progress != nil {
					progress(done, &s)
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < count; i++ {
		seeds <- start + uint64(i)
	}
	close(seeds)
	wg.Wait()
	sort.Slice(s.Failures, func(i, j int) bool { return s.Failures[i].Seed < s.Failures[j].Seed })
	if len(s.Failures) > maxReportedFailures {
		s.Failures = s.Failures[:maxReportedFailures]
	}
	s.RecoveryTicks = map[string]int{"p50": percentile(s.recovery, 50), "p99": percentile(s.recovery, 99), "max": percentile(s.recovery, 100)}
	s.CompletionTicks = percentile(s.completion, 50)
	s.ElapsedSeconds = time.Since(begin).Seconds()
	if s.ElapsedSeconds > 0 {
		s.SeedsPerSecond = float64(count) / s.ElapsedSeconds
	}
	return s
}

func (s *Summary) add(r *Result, o Options) {
	s.CommittedRequests += r.Completed
	s.StateTransfers += r.StateTransfers
	s.Restarts += r.Restarts
	s.Delivered += r.Delivered
	s.ViewChanges += r.ViewChanges
	s.recovery = append(s.recovery, r.RecoveryTicks...)
	if r.CompletionTick > 0 {
		s.completion = append(s.completion, r.CompletionTick)
	}
	for k, v := range r.Drops {
		s.Drops[k] += v
	}
	if len(r.Violations) > 0 {
		s.Violations++
	} else if r.LivenessFailure != "" {
		s.LivenessFailures++
	}
	if !r.Failed() {
		return
	}
	if s.FirstFailingSeed == nil || r.Seed < *s.FirstFailingSeed {
		seed := r.Seed
		s.FirstFailingSeed = &seed
	}
	// Keep the lowest seeds; the list is trimmed after sorting.
	s.Failures = append(s.Failures, Failure{
		Seed: r.Seed, Config: r.Config, Strategies: r.Strategies, Violations: r.Violations,
		Liveness: r.LivenessFailure, Replay: ReplayCommand(o, r.Seed),
	})
	if len(s.Failures) > 4*maxReportedFailures {
		sort.Slice(s.Failures, func(i, j int) bool { return s.Failures[i].Seed < s.Failures[j].Seed })
		s.Failures = s.Failures[:maxReportedFailures]
	}
}

// percentile is the p-th percentile (nearest rank) of xs; 0 for none.
func percentile(xs []int, p int) int {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := (p*len(s) + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}
