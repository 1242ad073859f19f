package sim

import "testing"

// BenchmarkSeed measures one seed of the default scenario (4 replicas, 1 Byzantine
// backup, 200 requests) per strategy, with real Ed25519 signatures and with the fast
// stand-in.
func BenchmarkSeed(b *testing.B) {
	for _, fast := range []bool{false, true} {
		for _, strategy := range append([]string{"all"}, Strategies...) {
			name := "Ed25519/" + strategy
			if fast {
				name = "fast/" + strategy
			}
			b.Run(name, func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					o := DefaultOptions()
					o.Seed = uint64(i + 1)
					o.Strategy = strategy
					o.FastCrypto = fast
					r := Run(o)
					if r.Failed() {
						b.Fatalf("seed %d failed: %v %s", o.Seed, r.Violations, r.LivenessFailure)
					}
				}
			})
		}
	}
}
