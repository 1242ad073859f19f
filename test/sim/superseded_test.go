package sim

import (
	"math"
	"testing"
)

// supersededRun runs one client of 80 requests on a clean network of correct replicas,
// its timestamps starting after first and, once 70 completed, restarting after then.
func supersededRun(t *testing.T, first, then uint64) Result {
	t.Helper()
	o := DefaultOptions()
	o.Byzantine, o.Clients, o.Requests = 0, 1, 80
	o.FastCrypto = true
	o.DropRate, o.DupRate, o.MaxDelay, o.Partitions, o.Crashes, o.HealTick = 0, 0, 3, 0, 0, 0
	o.Seed = 1
	res := Result{Seed: o.Seed, Drops: make(map[string]int)}
	w, err := newWorld(o, &res)
	if err != nil {
		t.Fatal(err)
	}
	c := w.clients[0]
	c.ts, c.restartAt, c.restartTS = first, 70, then
	w.run()
	if len(res.Violations) > 0 {
		t.Fatalf("violations: %v", res.Violations)
	}
	return res
}

// A client restarted with its timestamps behind the replicas' low mark (a clock set
// back by more than its last ReplyWindow requests took) is told so by f+1 replicas,
// moves past their marks and completes every request.
func TestRestartedClientBehindTheLowMarkMovesPastItAndCompletes(t *testing.T) {
	res := supersededRun(t, 1000, 900)
	if res.LivenessFailure != "" || res.Completed != 80 {
		t.Fatalf("%d of 80 completed: %s", res.Completed, res.LivenessFailure)
	}
	if res.Drops["client: request superseded, re-issued"] != 1 || res.Drops["client: request superseded for good"] != 0 {
		t.Fatalf("want exactly one re-issue: %v", res.Drops)
	}
}

// A client whose table entry was pushed to the top of the timestamp range abandons its
// requests as soon as f+1 replicas say so (the library fails Invoke), and the run
// reports them incomplete.
func TestClientLockedOutNearTheMaximumTimestampGivesUp(t *testing.T) {
	res := supersededRun(t, math.MaxUint64-100, 0)
	if res.Completed != 70 || res.LivenessFailure == "" {
		t.Fatalf("%d completed, liveness %q: want 70 and the rest reported incomplete", res.Completed, res.LivenessFailure)
	}
	if res.Drops["client: request superseded for good"] != 10 || res.Drops["client: request superseded, re-issued"] != 0 {
		t.Fatalf("want each of the last 10 requests abandoned at once: %v", res.Drops)
	}
}
