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

// Strong is 2f+1: any two strong quorums share a correct replica.
func (q Quorum) Strong() int { return 2*q.F + 1 }

// Weak is f+1: a set this large holds at least one correct replica.
func (q Quorum) Weak() int { return q.F + 1 }

// Primary is the primary of view v.
func (q Quorum) Primary(v uint64) ReplicaID { return ReplicaID(v % uint64(q.N)) }
