package replica

import (
	"sync"

	"github.com/pbftkit/pbft/crypto"
)

// verifiedCache remembers the last size signed messages whose signature verified, so a
// request seen alone and again inside a pre-prepare, or a retransmitted vote, costs one
// verification. Eviction is first in, first out: a ring of keys over a set.
type verifiedCache struct {
	mu   sync.Mutex
	set  map[crypto.Digest]struct{}
	ring []crypto.Digest
	next int
}

func newVerifiedCache(size int) *verifiedCache {
	return &verifiedCache{set: make(map[crypto.Digest]struct{}, size), ring: make([]crypto.Digest, size)}
}

func (c *verifiedCache) Verified(k crypto.Digest) bool {
	c.mu.Lock()
	_, ok := c.set[k]
	c.mu.Unlock()
	return ok
}

func (c *verifiedCache) Add(k crypto.Digest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.set[k]; ok {
		return
	}
	if old := c.ring[c.next]; !old.IsZero() {
		delete(c.set, old)
	}
	c.ring[c.next] = k
	c.next = (c.next + 1) % len(c.ring)
	c.set[k] = struct{}{}
}
