package sim

import (
	"fmt"
	"math/rand/v2"
)

// Swarm testing (Groce et al., ISSTA 2012; TigerBeetle's VOPR swarm options): with
// Options.Swarm the seed draws the configuration too, so one sweep covers many clusters
// and fault mixes instead of one. The draw comes from its own stream of the seed, so a
// replay with the same seed and --swarm reproduces it exactly.
//
// Drawn: n (4, 5 or 7) with f Byzantine replicas (Byzantine is set to f), the checkpoint
// interval and window, batch size and pipelining depth, loss, duplication and delay
// before the heal, partitions, crashes, the view-change and client timeouts, and the
// number of clients, and the disk: how long a durable write takes and whether a crash
// tears the writes in progress. The liveness bound grows with what slows a run down.
func swarmOptions(o Options) Options {
	rng := rand.New(rand.NewPCG(o.Seed, 0x5a5a5a5a5a5a5a5a))
	pick := func(xs ...int) int { return xs[rng.IntN(len(xs))] }
	o.Replicas = pick(4, 4, 5, 7)
	o.Byzantine = (o.Replicas - 1) / 3
	o.CheckpointInterval = uint64(pick(2, 4, 8, 16))
	o.LogWindow = o.CheckpointInterval * uint64(pick(1, 2, 3, 4))
	o.MaxBatch = pick(1, 2, 8, 16)
	o.MaxInFlight = pick(1, 2, 4, 8)
	o.DropRate = float64(rng.IntN(16)) / 100
	o.DupRate = float64(rng.IntN(6)) / 100
	o.MaxDelay = pick(3, 10, 30, 60)
	o.Partitions = rng.IntN(4)
	o.Crashes = rng.IntN(4)
	o.ViewChangeTicks = pick(40, 80, 160)
	o.ClientTimeout = pick(20, 40, 80)
	o.Clients = pick(4, 12, 24)
	// Drawn last, so that the draws above stay what they were for every seed.
	o.DiskDelay = pick(0, 0, 5, 20)
	o.TornWrites = o.DiskDelay > 0 && rng.IntN(2) == 0
	// A slow primary (drawn by all) holds every batch for a view-change timeout; small
	// batches make that many more timeouts.
	perBatch := max(1, min(o.MaxBatch, o.Clients))
	o.LivenessTicks = max(o.LivenessTicks, 3000+2*o.ViewChangeTicks*(o.Requests/perBatch+1))
	return o
}

// Describe is the configuration of a run in one line: what a swarm seed drew.
func (o Options) Describe() string {
	return fmt.Sprintf("n=%d byzantine=%d K=%d L=%d batch=%d in-flight=%d drop=%.2f dup=%.2f delay=%d partitions=%d crashes=%d disk-delay=%d torn=%v vc=%d client-timeout=%d clients=%d",
		o.Replicas, o.Byzantine, o.CheckpointInterval, o.LogWindow, o.MaxBatch, o.MaxInFlight,
		o.DropRate, o.DupRate, o.MaxDelay, o.Partitions, o.Crashes, o.DiskDelay, o.TornWrites, o.ViewChangeTicks, o.ClientTimeout, o.Clients)
}
