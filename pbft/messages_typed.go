package pbft

import "github.com/pbftkit/pbft/crypto"

// Message is a verified protocol message, as returned by Verifier.Open. The core's Step
// accepts nothing else.
type Message interface {
	// Raw is the signed form, kept to forward it and to build certificates.
	Raw() *Signed
}

// RequestMsg is a verified client request.
type RequestMsg struct {
	Signed  Signed
	Request Request
	Digest  crypto.Digest // of the signed body: the request's identity
}

// PrePrepareMsg is a verified pre-prepare; Batch is set (and matches the digest) when the
// envelope carried it.
type PrePrepareMsg struct {
	Signed     Signed
	PrePrepare PrePrepare
	Batch      []*RequestMsg
	HasBatch   bool
}

// PrepareMsg is a verified prepare.
type PrepareMsg struct {
	Signed  Signed
	Prepare Prepare
}

// CommitMsg is a verified commit.
type CommitMsg struct {
	Signed Signed
	Commit Commit
}

// CheckpointMsg is a verified checkpoint.
type CheckpointMsg struct {
	Signed     Signed
	Checkpoint Checkpoint
}

// ViewChangeMsg is a view change whose nested signatures verified; Proof and Certs are
// the typed forms of its checkpoint proof and prepared certificates.
type ViewChangeMsg struct {
	Signed     Signed
	ViewChange ViewChange
	Proof      []*CheckpointMsg
	Certs      []*PreparedCertMsg
}

// PreparedCertMsg is a prepared certificate whose signatures verified.
type PreparedCertMsg struct {
	PrePrepare *PrePrepareMsg
	Prepares   []*PrepareMsg
}

// FetchBatchMsg is a verified request for a batch.
type FetchBatchMsg struct {
	Signed     Signed
	FetchBatch FetchBatch
}

// BatchReplyMsg is a verified batch reply whose requests match its digest.
type BatchReplyMsg struct {
	Signed     Signed
	BatchReply BatchReply
	Batch      []*RequestMsg
}

// NewViewMsg is a new view whose nested signatures verified.
type NewViewMsg struct {
	Signed      Signed
	NewView     NewView
	ViewChanges []*ViewChangeMsg
	PrePrepares []*PrePrepareMsg
}

// StateRequestMsg is a verified state request.
type StateRequestMsg struct {
	Signed       Signed
	StateRequest StateRequest
}

// StateResponseMsg is a state response whose proof signatures verified.
type StateResponseMsg struct {
	Signed        Signed
	StateResponse StateResponse
	Proof         []*CheckpointMsg
}

// ReplyMsg is a reply as a client sees it, with the replica its channel authenticated.
type ReplyMsg struct {
	From  ReplicaID
	Reply Reply
}

// SupersededMsg is a superseded notice as a client sees it, with the replica its
// channel authenticated.
type SupersededMsg struct {
	From       ReplicaID
	Superseded Superseded
}

func (m *RequestMsg) Raw() *Signed       { return &m.Signed }
func (m *PrePrepareMsg) Raw() *Signed    { return &m.Signed }
func (m *PrepareMsg) Raw() *Signed       { return &m.Signed }
func (m *CommitMsg) Raw() *Signed        { return &m.Signed }
func (m *CheckpointMsg) Raw() *Signed    { return &m.Signed }
func (m *ViewChangeMsg) Raw() *Signed    { return &m.Signed }
func (m *NewViewMsg) Raw() *Signed       { return &m.Signed }
func (m *StateRequestMsg) Raw() *Signed  { return &m.Signed }
func (m *StateResponseMsg) Raw() *Signed { return &m.Signed }
func (m *FetchBatchMsg) Raw() *Signed    { return &m.Signed }
func (m *BatchReplyMsg) Raw() *Signed    { return &m.Signed }

// From is the replica that signed m (for a request, the client).
func From(m Message) uint32 { return m.Raw().From }

// Envelope returns the wire envelope of a verified pre-prepare, its batch attached.
func (m *PrePrepareMsg) Envelope() *Envelope {
	e := &Envelope{Msg: m.Signed}
	if len(m.Batch) > 0 {
		e.Batch = make([]Signed, len(m.Batch))
		for i, r := range m.Batch {
			e.Batch[i] = r.Signed
		}
	}
	return e
}
