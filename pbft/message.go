package pbft

import "github.com/pbftkit/pbft/crypto"

// MsgType tags a signed body. It is part of what is signed (crypto.Domain.Type), so a
// signature over one type never verifies as another.
type MsgType uint8

// Protocol message types; values are on the wire and in signatures: never renumber.
const (
	MsgRequest       MsgType = 1
	MsgPrePrepare    MsgType = 2
	MsgPrepare       MsgType = 3
	MsgCommit        MsgType = 4
	MsgReply         MsgType = 5
	MsgCheckpoint    MsgType = 6
	MsgViewChange    MsgType = 7
	MsgNewView       MsgType = 8
	MsgStateRequest  MsgType = 9
	MsgStateResponse MsgType = 10
	MsgFetchBatch    MsgType = 11
	MsgBatchReply    MsgType = 12
	MsgSuperseded    MsgType = 13
)

var msgTypeNames = [...]string{
	MsgRequest: "request", MsgPrePrepare: "pre-prepare", MsgPrepare: "prepare",
	MsgCommit: "commit", MsgReply: "reply", MsgCheckpoint: "checkpoint",
	MsgViewChange: "view-change", MsgNewView: "new-view",
	MsgStateRequest: "state-request", MsgStateResponse: "state-response",
	MsgFetchBatch: "fetch-batch", MsgBatchReply: "batch-reply",
	MsgSuperseded: "superseded",
}

func (t MsgType) String() string {
	if int(t) < len(msgTypeNames) && msgTypeNames[t] != "" {
		return msgTypeNames[t]
	}
	return "unknown"
}

func (t MsgType) valid() bool { return t >= MsgRequest && t <= MsgSuperseded }

// carriesBatch reports whether an envelope of type t may carry a batch: a pre-prepare
// (its proposal) and a batch reply (an answer to fetch-batch).
func (t MsgType) carriesBatch() bool { return t == MsgPrePrepare || t == MsgBatchReply }

// Signed is the unit of authentication and what certificates are made of: a message
// type, the id of its sender, the canonical CBOR of its body and the sender's signature
// over (cluster, type, sender, body). A REPLY and a SUPERSEDED notice travel with an
// empty Sig: the client's authenticated channel names their sender.
type Signed struct {
	_    struct{} `cbor:",toarray"`
	Type MsgType
	From uint32
	Body []byte
	Sig  []byte
}

// Envelope is one frame on the wire. Batch is set only on a PRE-PREPARE and a BATCH-REPLY:
// the signed requests whose batch digest the message names. It sits outside the signature
// because the digest already binds it, which keeps prepared certificates small.
type Envelope struct {
	_     struct{} `cbor:",toarray"`
	Msg   Signed
	Batch []Signed
}

// Request is a client's operation. Timestamps of one client increase; the replica
// executes each (client, timestamp) at most once.
type Request struct {
	_         struct{} `cbor:",toarray"`
	Client    ClientID
	Timestamp uint64
	Op        []byte
}

// PrePrepare assigns sequence number Seq in View to the batch with digest Digest.
type PrePrepare struct {
	_      struct{} `cbor:",toarray"`
	View   uint64
	Seq    uint64
	Digest crypto.Digest
}

// Prepare is a backup's agreement with a pre-prepare.
type Prepare struct {
	_      struct{} `cbor:",toarray"`
	View   uint64
	Seq    uint64
	Digest crypto.Digest
}

// Commit says its sender has prepared (View, Seq, Digest).
type Commit struct {
	_      struct{} `cbor:",toarray"`
	View   uint64
	Seq    uint64
	Digest crypto.Digest
}

// Reply carries the result of one request back to its client.
type Reply struct {
	_         struct{} `cbor:",toarray"`
	View      uint64
	Timestamp uint64
	Client    ClientID
	Result    []byte
}

// Superseded tells a client that a replica refused its request with Timestamp because
// the client table has moved past it: every timestamp <= Low is done or abandoned, and
// is never executed again (PBFT §4.1: a replica executes each (client, timestamp) at
// most once and refuses older ones). High is the highest timestamp the table has
// admitted for the client, so a timestamp above High meets no cached reply.
// Timestamp <= Low <= High. Like a REPLY it is unsigned and goes only to a client, which
// believes it only from f+1 distinct replicas.
type Superseded struct {
	_         struct{} `cbor:",toarray"`
	View      uint64
	Client    ClientID
	Timestamp uint64
	Low       uint64
	High      uint64
}

// Checkpoint says its sender's state after executing Seq has digest State.
type Checkpoint struct {
	_     struct{} `cbor:",toarray"`
	Seq   uint64
	State crypto.Digest
}

// PreparedCert proves a batch prepared: its pre-prepare and 2f matching prepares.
type PreparedCert struct {
	_          struct{} `cbor:",toarray"`
	PrePrepare Signed
	Prepares   []Signed
}

// ViewChange asks to move to NewView. It carries the sender's last stable checkpoint,
// the proof of it, and a certificate for every batch prepared above it.
type ViewChange struct {
	_               struct{} `cbor:",toarray"`
	NewView         uint64
	StableSeq       uint64
	CheckpointProof []Signed
	Prepared        []PreparedCert
}

// NewView starts View: the 2f+1 VIEW-CHANGEs it was built from and the pre-prepares
// that every backup recomputes from them.
type NewView struct {
	_           struct{} `cbor:",toarray"`
	View        uint64
	ViewChanges []Signed
	PrePrepares []Signed
}

// StateRequest asks a replica for chunk Chunk of its state at a stable checkpoint at
// or beyond Seq.
type StateRequest struct {
	_     struct{} `cbor:",toarray"`
	Seq   uint64
	Chunk uint32
}

// StateResponse carries chunk Chunk of Chunks of the state at stable checkpoint Seq,
// with the proof that Seq is stable (2f+1 matching CHECKPOINTs). The receiver installs
// the assembled state only if its digest is the certified one. Chunks of 0 or 1 means
// State is the whole state.
type StateResponse struct {
	_      struct{} `cbor:",toarray"`
	Seq    uint64
	Proof  []Signed
	State  []byte // a chunk of the CBOR of CheckpointState
	Chunk  uint32
	Chunks uint32
}

// CheckpointState is everything a checkpoint covers: the application's snapshot and the
// client table, so a replica that installs a checkpoint keeps exactly-once execution.
type CheckpointState struct {
	_       struct{} `cbor:",toarray"`
	App     []byte
	Clients []ClientRecord
}

// ClientRecord is one client's row of the client table.
type ClientRecord struct {
	_       struct{} `cbor:",toarray"`
	Client  ClientID
	Low     uint64 // every timestamp <= Low is done; its reply may be gone
	Replies []CachedReply
}

// CachedReply is the result of one executed request, kept to answer retransmissions.
type CachedReply struct {
	_         struct{} `cbor:",toarray"`
	Timestamp uint64
	Result    []byte
}

// FetchBatch asks a replica for the requests of the batch with digest Digest, proposed
// at Seq: a replica entering a new view may hold a pre-prepare without its batch.
type FetchBatch struct {
	_      struct{} `cbor:",toarray"`
	Seq    uint64
	Digest crypto.Digest
}

// BatchReply answers FetchBatch; the requests travel in the envelope and must match Digest.
type BatchReply struct {
	_      struct{} `cbor:",toarray"`
	Seq    uint64
	Digest crypto.Digest
}
