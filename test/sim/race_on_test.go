//go:build race

package sim

// The race detector slows the simulator about tenfold; under it the sweeps run a few
// seeds (to check the parallel runner), and `make test` runs the full sweeps without it.
const raceEnabled = true
