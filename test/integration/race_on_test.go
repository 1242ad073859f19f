//go:build race

package integration

// The race detector slows the replicas and libp2p about fivefold: under it the
// workloads are scaled down so the package stays within about a minute.
const raceEnabled = true
