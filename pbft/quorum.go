package pbft

import "fmt"

// ReplicaID names a replica: 0..n-1. The primary of view v is v mod n.
type ReplicaID uint32

// ClientID names a registered client. Client and replica ids are separate name spaces:
// only clients sign REQUESTs and only replicas sign everything else.
type ClientID uint32

// Quorum holds the arithmetic of a cluster of n replicas tolerating f = (n-1)/3 faults.
type Quorum struct {
	N int // replicas
	F int // Byzantine replicas tolerated
}

// NewQuorum returns the quorum sizes for n replicas; n must be at least 4 (3f+1 with f >= 1)
// or 1 (a single replica, f = 0, used in tests only).
func NewQuorum(n int) (Quorum, error) {
	if n < 1 {
		return Quorum{}, fmt.Errorf("replicas: need at least 1, got %d", n)
	}
	return Quorum{N: n, F: (n - 1) / 3}, nil
}

// Strong is the quorum: the smallest size of which any two sets share f+1 replicas, so
// at least one correct one, that is ⌈(n+f+1)/2⌉. It is 2f+1 when n = 3f+1, and more when
// n is larger than that: with n = 5 and f = 1, two sets of 2f+1 = 3 share one replica,
// which may be the faulty one (found by the simulator's swarm runs, which draw n = 5;
// an equivocating primary broke agreement there). It is at most n-f, so the correct
// replicas alone always make one.
func (q Quorum) Strong() int { return (q.N + q.F + 2) / 2 }

// Prepared is how many matching PREPAREs from distinct backups, with the pre-prepare,
// make a batch prepared (and a prepared certificate): Strong()-1, the pre-prepare
// standing for the primary's vote; 2f when n = 3f+1.
func (q Quorum) Prepared() int { return q.Strong() - 1 }

// Weak is f+1: a set this large holds at least one correct replica.
func (q Quorum) Weak() int { return q.F + 1 }

// Primary is the primary of view v.
func (q Quorum) Primary(v uint64) ReplicaID { return ReplicaID(v % uint64(q.N)) }
