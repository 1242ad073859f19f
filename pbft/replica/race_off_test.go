//go:build !race

package replica

// raceEnabled scales heavy tests down under the race detector, which slows signature
// verification several times over.
const raceEnabled = false
