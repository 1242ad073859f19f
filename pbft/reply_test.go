package pbft

import (
	"slices"
	"testing"
)

// PBFT §4.1: a client accepts a result once f+1 replicas sent the same one; a replica
// votes once (its first reply); the view it learns is the (f+1)-th highest among the
// voters, so f liars can neither hold it back nor push it ahead of every correct one.
func TestReplyVotesAcceptFPlusOneMatchingResultsAndTheFPlusOnethHighestView(t *testing.T) {
	q, _ := NewQuorum(7) // f = 2: three matching replies
	v := NewReplyVotes(q)
	if acc := v.Add(5, &Reply{View: 900, Result: []byte("lie")}); acc != nil {
		t.Fatalf("one reply accepted: %+v", acc)
	}
	if acc := v.Add(6, &Reply{View: 900, Result: []byte("ok")}); acc != nil {
		t.Fatalf("one matching reply accepted: %+v", acc)
	}
	// A second reply from replica 6 does not count twice.
	if acc := v.Add(6, &Reply{View: 900, Result: []byte("ok")}); acc != nil || !v.Voted(6) {
		t.Fatalf("a replica's second reply counted: %+v", acc)
	}
	if acc := v.Add(1, &Reply{View: 3, Result: []byte("ok")}); acc != nil {
		t.Fatalf("two matching replies accepted with f = 2: %+v", acc)
	}
	acc := v.Add(0, &Reply{View: 4, Result: []byte("ok")})
	if acc == nil || string(acc.Result) != "ok" {
		t.Fatalf("three matching replies not accepted: %+v", acc)
	}
	// Views of the voters 0, 1, 6: 4, 3, 900. The (f+1)-th highest is 3: a liar's 900
	// and even a second one would not move the client past every correct replica.
	if acc.View != 3 || !slices.Equal(acc.Voters, []ReplicaID{0, 1, 6}) {
		t.Fatalf("accepted view %d voters %v, want 3 and [0 1 6]", acc.View, acc.Voters)
	}
}
