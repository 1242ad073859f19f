// Package sim is a deterministic, seeded simulator of a PBFT cluster (in the spirit of
// TigerBeetle's VOPR): n replicas of the real pbft core, signing clients and Byzantine
// replicas with named strategies run in one goroutine over a simulated network that
// delays, reorders, drops, duplicates and partitions messages until a heal time (GST).
//
// Every frame goes through the real codec and the real Verifier, so what the core sees
// is what a runtime would hand it. After every delivered message the checker verifies
// agreement, validity, exactly-once execution, equal checkpoint digests and that every
// result a client accepted is the one correct replicas computed. After the heal, every
// submitted request must complete within a bounded number of ticks.
//
// The same seed always produces the same run: Run(opts) with equal Options is
// reproducible bit for bit, which is what makes a failing seed replayable.
package sim
