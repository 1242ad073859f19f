package pbft

import "github.com/pbftkit/pbft/crypto"

// DestKind says where an outbound message goes.
type DestKind uint8

const (
	ToReplica     DestKind = iota // one replica
	ToAllReplicas                 // every replica but the sender
	ToClient                      // one client
)

// Destination of an outbound message.
type Destination struct {
	Kind    DestKind
	Replica ReplicaID
	Client  ClientID
}

// Outbound is a message to send.
type Outbound struct {
	To  Destination
	Env *Envelope
}

// Batch is a committed batch to execute. Batches come in sequence order, each once.
// Requests holds only the requests to run: repeats of requests already executed were
// filtered out (their cached replies were resent instead).
type Batch struct {
	Seq      uint64
	View     uint64
	Digest   crypto.Digest
	Requests []*RequestMsg
	// Checkpoint asks the runtime to return a snapshot of the application state after
	// this batch in Executed.Snapshot.
	Checkpoint bool
}

// Executed is the application's result for one Batch.
type Executed struct {
	Seq      uint64
	Results  [][]byte // one per Batch.Requests, in order
	Snapshot []byte   // when Batch.Checkpoint
}

// Install asks the runtime to replace the application state with App, the state at
// stable checkpoint Seq fetched from peers and checked against its certified digest.
// It must be applied before any Batch that follows it.
type Install struct {
	Seq uint64
	App []byte
}

// StableCheckpoint is a checkpoint proven by 2f+1 matching CHECKPOINTs.
type StableCheckpoint struct {
	Seq   uint64
	State crypto.Digest
	Proof []Signed
}

// Drop reports a message the core rejected, for the runtime to count and log.
type Drop struct {
	From   uint32
	Type   MsgType
	Reason string
}

// Ready is the output accumulated since the last call to Replica.Ready. Persist must be
// durable before Messages are sent (see Record); Install, then Execute, are applied in
// order.
type Ready struct {
	Persist  []Record
	Messages []Outbound
	Install  *Install
	Execute  []Batch
	Stable   *StableCheckpoint // set when the stable checkpoint advanced
	Drops    []Drop
}

// Empty reports whether there is nothing to do.
func (rd *Ready) Empty() bool {
	return len(rd.Persist) == 0 && len(rd.Messages) == 0 && rd.Install == nil &&
		len(rd.Execute) == 0 && rd.Stable == nil && len(rd.Drops) == 0
}
