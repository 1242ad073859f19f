package pbft

import (
	"slices"
)

// What a client reads: replies and superseded notices (unsigned: the client's
// authenticated channel names the replica), and the one vote counter the client library
// and the simulator's clients share.

// OpenReply decodes a REPLY for a client. Replies carry no signature: the client's
// authenticated channel names the sender, which the caller passes as from.
func OpenReply(s *Signed, from ReplicaID, lim Limits) (*ReplyMsg, error) {
	if s.Type != MsgReply {
		return nil, malformed("expected reply, got %s", s.Type)
	}
	if s.From != uint32(from) {
		return nil, malformed("reply names replica %d but came from %d", s.From, from)
	}
	var r Reply
	if err := unmarshalCanonical(s.Body, &r); err != nil {
		return nil, err
	}
	if len(r.Result) > lim.MaxResultBytes {
		return nil, malformed("reply result of %d bytes exceeds limit %d", len(r.Result), lim.MaxResultBytes)
	}
	return &ReplyMsg{From: from, Reply: r}, nil
}

// OpenSuperseded decodes a SUPERSEDED notice for a client, by the rules of OpenReply:
// canonical CBOR within the limits, the sender named by the client's authenticated
// channel (from), and a notice that could be true (Timestamp <= Low <= High). Whether
// to believe it is the client's call: f+1 distinct replicas must send one.
func OpenSuperseded(s *Signed, from ReplicaID, lim Limits) (*SupersededMsg, error) {
	if s.Type != MsgSuperseded {
		return nil, malformed("expected superseded, got %s", s.Type)
	}
	if s.From != uint32(from) {
		return nil, malformed("superseded notice names replica %d but came from %d", s.From, from)
	}
	if len(s.Body) > lim.MaxMessageBytes {
		return nil, malformed("superseded body of %d bytes exceeds limit %d", len(s.Body), lim.MaxMessageBytes)
	}
	var n Superseded
	if err := unmarshalCanonical(s.Body, &n); err != nil {
		return nil, err
	}
	if n.Timestamp > n.Low || n.Low > n.High {
		return nil, malformed("superseded notice with timestamp %d, low %d, high %d: want timestamp <= low <= high", n.Timestamp, n.Low, n.High)
	}
	return &SupersededMsg{From: from, Superseded: n}, nil
}

// ReplyVotes counts the replies to one request: one vote per replica (its first reply),
// and a result once Quorum.Weak (f+1) replicas sent the same one, so at least one correct
// replica vouches for it (PBFT §4.1). It is pure: the client library and the simulator's
// clients use the same counter.
type ReplyVotes struct {
	weak  int
	votes map[ReplicaID]*Reply
}

// Accepted is a result f+1 replicas agree on.
type Accepted struct {
	Result []byte
	// View is the (f+1)-th highest view among the voters: at least one correct replica
	// is in it or a later one, so a client that sends its next request to that view's
	// primary is never led back by f liars, nor far ahead.
	View   uint64
	Voters []ReplicaID // in id order
}

// NewReplyVotes returns an empty counter for a cluster with quorums q.
func NewReplyVotes(q Quorum) *ReplyVotes {
	return &ReplyVotes{weak: q.Weak(), votes: make(map[ReplicaID]*Reply)}
}

// Add counts rep from replica from and returns the accepted result once f+1 replicas
// sent the same one (nil before). A second reply from one replica is not counted.
func (v *ReplyVotes) Add(from ReplicaID, rep *Reply) *Accepted {
	if _, dup := v.votes[from]; dup {
		return nil
	}
	v.votes[from] = rep
	var voters []ReplicaID
	var views []uint64
	for id, o := range v.votes {
		if string(o.Result) == string(rep.Result) {
			voters = append(voters, id)
			views = append(views, o.View)
		}
	}
	if len(voters) < v.weak {
		return nil
	}
	slices.Sort(views)
	slices.Sort(voters)
	return &Accepted{Result: rep.Result, View: views[len(views)-v.weak], Voters: voters}
}

// Voted reports whether replica id's reply was counted.
func (v *ReplyVotes) Voted(id ReplicaID) bool {
	_, ok := v.votes[id]
	return ok
}
