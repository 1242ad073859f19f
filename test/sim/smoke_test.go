package sim

import "testing"

func TestSmoke(t *testing.T) {
	for _, s := range append([]string{"none"}, Strategies...) {
		for seed := uint64(1); seed <= 3; seed++ {
			o := DefaultOptions()
			o.Seed = seed
			o.Strategy = s
			if s == "none" {
				o.Strategy, o.Byzantine = "silent", 0
			}
			r := Run(o)
			t.Logf("%s seed %d: completed=%d ticks=%d delivered=%d viol=%v live=%q st=%d maxlog=%d drops=%v", s, seed, r.Completed, r.Ticks, r.Delivered, r.Violations, r.LivenessFailure, r.StateTransfers, r.MaxLogSize, r.Drops)
		}
	}
}
