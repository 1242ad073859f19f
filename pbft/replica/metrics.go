package replica

import (
	"maps"
	"sync"
	"sync/atomic"
)

// Metrics are a replica's counters, safe to read while it runs.
type Metrics struct {
	FramesIn  atomic.Uint64 // frames accepted for verification
	StableSeq atomic.Uint64 // the last stable checkpoint
	Batches   atomic.Uint64 // batches executed
	Requests  atomic.Uint64 // requests executed (repeats answered from the cache excluded)
	// Persists and PersistNanos count the durable writes of records (one per group
	// commit) and the time they took: the disk's share of every protocol phase.
	Persists     atomic.Uint64
	PersistNanos atomic.Uint64

	mu    sync.Mutex
	drops map[string]uint64
}

func newMetrics() *Metrics { return &Metrics{drops: make(map[string]uint64)} }

func (m *Metrics) drop(reason string) {
	m.mu.Lock()
	m.drops[reason]++
	m.mu.Unlock()
}

// Drops returns the input dropped so far, by reason.
func (m *Metrics) Drops() map[string]uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.drops)
}

// Dropped is the total of Drops.
func (m *Metrics) Dropped() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n uint64
	for _, v := range m.drops {
		n += v
	}
	return n
}
