package sim

import (
	"strings"
	"testing"
)

// The simulator drives the runtime's own driver (pbft/driver), so it sees the runtime's
// rules, not a copy of them: with the durability rule broken on purpose (messages leave
// before their records are durable), a crash makes a correct replica forget what it
// signed, and the checker reports it signing a second, different message for the slot.
// With the rule intact, the same seeds pass.
func TestMessagesSentBeforeTheirRecordsAreDurableAreCaughtAfterACrash(t *testing.T) {
	o := DefaultOptions()
	o.FastCrypto = true
	o.Strategy = "silent"
	o.Crashes = 3
	o.DiskDelay = 40
	const first, count = 1, 40

	intact := RunSeeds(o, first, count, 0, nil)
	if intact.Violations != 0 || intact.LivenessFailures != 0 {
		t.Fatalf("with the durability rule intact: %d violations, %d liveness failures: %+v",
			intact.Violations, intact.LivenessFailures, intact.Failures)
	}

	breakDurability = true
	defer func() { breakDurability = false }()
	broken := RunSeeds(o, first, count, 0, nil)
	if broken.Violations == 0 {
		t.Fatalf("with messages sent before their records are durable, %d seeds ran without a violation", count)
	}
	equivocations := 0
	for _, f := range broken.Failures {
		for _, v := range f.Violations {
			if strings.Contains(v, "equivocation: correct replica") {
				equivocations++
			}
		}
	}
	if equivocations == 0 {
		t.Fatalf("violations found, but none a correct replica's equivocation: %+v", broken.Failures)
	}
	t.Logf("durability broken: %d of %d seeds violated (%d equivocations reported)", broken.Violations, count, equivocations)
}
