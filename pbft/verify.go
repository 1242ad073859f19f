package pbft

import (
	"encoding/binary"
	"fmt"

	"github.com/pbftkit/pbft/crypto"
)

// VerifiedCache remembers signed messages whose signature already verified, keyed by
// the digest of their body and signature, so a request seen alone and again inside a
// pre-prepare (or a retransmitted vote) is verified once. Implementations used by
// concurrent verifiers must be safe for concurrent use.
type VerifiedCache interface {
	Verified(key crypto.Digest) bool
	Add(key crypto.Digest)
}

// Verifier turns a decoded Envelope into a verified Message: it decodes every body with
// the limits, checks structure, and checks every signature, nested ones included. It is
// stateless apart from its optional cache, so many goroutines may share one.
type Verifier struct {
	Keys   KeyRing
	N      int
	Limits Limits
	Cache  VerifiedCache // optional
}

// cacheKey names exactly one signed message: type, sender, and length-prefixed body
// and signature, so no two messages share a key however their bytes are split.
func cacheKey(s *Signed) crypto.Digest {
	var hdr [13]byte
	hdr[0] = byte(s.Type)
	binary.BigEndian.PutUint32(hdr[1:], s.From)
	binary.BigEndian.PutUint32(hdr[5:], uint32(len(s.Body)))
	binary.BigEndian.PutUint32(hdr[9:], uint32(len(s.Sig)))
	return crypto.Hash(hdr[:], s.Body, s.Sig)
}

// decodeBody decodes s.Body into body, runs the cheap structural check (if any), and only
// then checks s's signature. A signed message whose
// exact bytes already verified (the cache) was also found canonical then, so it is only
// decoded: the common case of a request seen alone and again in a pre-prepare, or of a
// retransmitted vote.
func (v *Verifier) decodeBody(s *Signed, body any, check func() error) error {
	var key crypto.Digest
	if v.Cache != nil {
		key = cacheKey(s)
		if v.Cache.Verified(key) {
			if err := decMode.Unmarshal(s.Body, body); err != nil {
				return malformed("%T: %v", body, err)
			}
			if check != nil {
				return check()
			}
			return nil
		}
	}
	if err := unmarshalCanonical(s.Body, body); err != nil {
		return err
	}
	if check != nil {
		if err := check(); err != nil {
			return err
		}
	}
	var ok bool
	if s.Type == MsgRequest {
		ok = v.Keys.VerifyClient(ClientID(s.From), s.Type, s.Body, s.Sig)
	} else {
		ok = v.Keys.VerifyReplica(ReplicaID(s.From), s.Type, s.Body, s.Sig)
	}
	if !ok {
		return fmt.Errorf("%w: %s from %d", ErrBadSignature, s.Type, s.From)
	}
	if v.Cache != nil {
		v.Cache.Add(key)
	}
	return nil
}

// ErrBadSignature is returned for a signature that does not verify under the sender's key.
var ErrBadSignature = fmt.Errorf("bad signature")

// Open verifies e and returns its typed message. Any error means the message must be
// dropped (and counted); it never panics on any input.
func (v *Verifier) Open(e *Envelope) (Message, error) {
	if len(e.Batch) > 0 && !e.Msg.Type.carriesBatch() {
		return nil, malformed("%s carries a batch", e.Msg.Type)
	}
	if e.Msg.Type == MsgReply || e.Msg.Type == MsgSuperseded {
		// Unsigned answers to clients: a replica has nothing to learn from them, and
		// they carry no signature to check.
		return nil, malformed("%s sent to a replica", e.Msg.Type)
	}
	m, err := v.open(&e.Msg)
	if err != nil {
		return nil, err
	}
	switch m := m.(type) {
	case *PrePrepareMsg:
		batch, err := v.openBatch(e.Batch, m.PrePrepare.Digest)
		if err != nil {
			return nil, fmt.Errorf("pre-prepare v=%d n=%d: %w", m.PrePrepare.View, m.PrePrepare.Seq, err)
		}
		m.Batch, m.HasBatch = batch, true
	case *BatchReplyMsg:
		batch, err := v.openBatch(e.Batch, m.BatchReply.Digest)
		if err != nil {
			return nil, fmt.Errorf("batch reply n=%d: %w", m.BatchReply.Seq, err)
		}
		m.Batch = batch
	}
	return m, nil
}

// openBatch verifies every request of a batch and that together they have digest want.
func (v *Verifier) openBatch(batch []Signed, want crypto.Digest) ([]*RequestMsg, error) {
	if len(batch) > v.Limits.MaxBatchRequests {
		return nil, malformed("batch of %d requests exceeds limit %d", len(batch), v.Limits.MaxBatchRequests)
	}
	out := make([]*RequestMsg, len(batch))
	digests := make([]crypto.Digest, len(batch))
	for i := range batch {
		if batch[i].Type != MsgRequest {
			return nil, malformed("batch entry %d is a %s", i, batch[i].Type)
		}
		rm, err := v.open(&batch[i])
		if err != nil {
			return nil, fmt.Errorf("request %d: %w", i, err)
		}
		out[i] = rm.(*RequestMsg)
		digests[i] = out[i].Digest
	}
	if BatchDigest(digests) != want {
		return nil, malformed("batch does not match digest")
	}
	return out, nil
}

// open verifies one signed message (and the signed messages nested in it): every type
// takes the one path of its opener.
func (v *Verifier) open(s *Signed) (Message, error) {
	if len(s.Body) > v.Limits.MaxMessageBytes {
		return nil, malformed("%s body too large", s.Type)
	}
	if int(s.Type) >= len(openers) || openers[s.Type] == nil {
		return nil, malformed("unexpected message type %s", s.Type)
	}
	return openers[s.Type](v, s)
}

// opener opens one message type.
type opener func(v *Verifier, s *Signed) (Message, error)

// openers, by type; set in init, since the NEW-VIEW's opener opens nested messages.
var openers []opener

// openAs is the one path of every replica-signed type: decode its body B (canonical,
// within the limits), check the signature, then let build make the typed message and
// check what is nested in it.
func openAs[B any](build func(v *Verifier, s *Signed, b *B) (Message, error)) opener {
	return func(v *Verifier, s *Signed) (Message, error) {
		var b B
		if err := v.decodeSigned(s, &b); err != nil {
			return nil, err
		}
		return build(v, s, &b)
	}
}

// plain is openAs for a type with nothing nested.
func plain[B any](wrap func(s Signed, b B) Message) opener {
	return openAs(func(_ *Verifier, s *Signed, b *B) (Message, error) { return wrap(*s, *b), nil })
}

func init() {
	openers = make([]opener, MsgSuperseded+1)
	openers[MsgRequest] = openRequest
	openers[MsgPrePrepare] = plain(func(s Signed, b PrePrepare) Message { return &PrePrepareMsg{Signed: s, PrePrepare: b} })
	openers[MsgPrepare] = plain(func(s Signed, b Prepare) Message { return &PrepareMsg{Signed: s, Prepare: b} })
	openers[MsgCommit] = plain(func(s Signed, b Commit) Message { return &CommitMsg{Signed: s, Commit: b} })
	openers[MsgCheckpoint] = plain(func(s Signed, b Checkpoint) Message { return &CheckpointMsg{Signed: s, Checkpoint: b} })
	openers[MsgStateRequest] = plain(func(s Signed, b StateRequest) Message { return &StateRequestMsg{Signed: s, StateRequest: b} })
	openers[MsgFetchBatch] = plain(func(s Signed, b FetchBatch) Message { return &FetchBatchMsg{Signed: s, FetchBatch: b} })
	openers[MsgBatchReply] = plain(func(s Signed, b BatchReply) Message { return &BatchReplyMsg{Signed: s, BatchReply: b} })
	openers[MsgViewChange] = openAs(func(v *Verifier, s *Signed, b *ViewChange) (Message, error) {
		vc := &ViewChangeMsg{Signed: *s, ViewChange: *b}
		if err := v.openViewChange(vc); err != nil {
			return nil, fmt.Errorf("view-change from %d for v=%d: %w", s.From, b.NewView, err)
		}
		return vc, nil
	})
	openers[MsgNewView] = openAs(openNewView)
	openers[MsgStateResponse] = openAs(func(v *Verifier, s *Signed, b *StateResponse) (Message, error) {
		if len(b.State) > v.Limits.MaxStateBytes {
			return nil, malformed("state response of %d bytes exceeds limit %d", len(b.State), v.Limits.MaxStateBytes)
		}
		proof, err := v.openCheckpointProof(b.Seq, b.Proof)
		if err != nil {
			return nil, fmt.Errorf("state response n=%d: %w", b.Seq, err)
		}
		return &StateResponseMsg{Signed: *s, StateResponse: *b, Proof: proof}, nil
	})
}

// openNested opens the signed messages of one type t that a NEW-VIEW for view carries.
func openNested[M Message](v *Verifier, view uint64, what string, t MsgType, list []Signed) ([]M, error) {
	out := make([]M, len(list))
	for i := range list {
		if list[i].Type != t {
			return nil, malformed("new-view v=%d %s %d is a %s", view, what, i, list[i].Type)
		}
		m, err := v.open(&list[i])
		if err != nil {
			return nil, fmt.Errorf("new-view v=%d: %w", view, err)
		}
		out[i] = m.(M)
	}
	return out, nil
}

// openRequest opens a client's request: the cheap checks (the client signs as itself, the
// op within its limit) come before the client's signature.
func openRequest(v *Verifier, s *Signed) (Message, error) {
	var r Request
	err := v.decodeBody(s, &r, func() error {
		if uint32(r.Client) != s.From {
			return malformed("request of client %d signed as %d", r.Client, s.From)
		}
		if len(r.Op) > v.Limits.MaxOpBytes {
			return malformed("request op of %d bytes exceeds limit %d", len(r.Op), v.Limits.MaxOpBytes)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &RequestMsg{Signed: *s, Request: r, Digest: RequestDigest(s.Body)}, nil
}

// openNewView opens a NEW-VIEW and every VIEW-CHANGE and PRE-PREPARE it carries.
func openNewView(v *Verifier, s *Signed, b *NewView) (Message, error) {
	if len(b.ViewChanges) > v.Limits.MaxReplicas || len(b.PrePrepares) > v.Limits.MaxPrepared {
		return nil, malformed("new-view v=%d too large", b.View)
	}
	vcs, err := openNested[*ViewChangeMsg](v, b.View, "entry", MsgViewChange, b.ViewChanges)
	if err != nil {
		return nil, err
	}
	pps, err := openNested[*PrePrepareMsg](v, b.View, "pre-prepare", MsgPrePrepare, b.PrePrepares)
	if err != nil {
		return nil, err
	}
	return &NewViewMsg{Signed: *s, NewView: *b, ViewChanges: vcs, PrePrepares: pps}, nil
}

// decodeSigned decodes a replica-signed body and checks its signature.
func (v *Verifier) decodeSigned(s *Signed, body any) error {
	if uint64(s.From) >= uint64(v.N) {
		return malformed("%s from unknown replica %d", s.Type, s.From)
	}
	return v.decodeBody(s, body, nil)
}

// openCheckpointProof verifies a checkpoint proof's signatures and that its entries all
// name checkpoint seq, from distinct replicas. Whether it holds 2f+1 matching digests is
// the core's rule to check (it knows f).
func (v *Verifier) openCheckpointProof(seq uint64, proof []Signed) ([]*CheckpointMsg, error) {
	if len(proof) > v.Limits.MaxReplicas {
		return nil, malformed("checkpoint proof of %d entries", len(proof))
	}
	out := make([]*CheckpointMsg, len(proof))
	seen := make(map[uint32]bool, len(proof))
	for i := range proof {
		if proof[i].Type != MsgCheckpoint {
			return nil, malformed("checkpoint proof entry %d is a %s", i, proof[i].Type)
		}
		if seen[proof[i].From] {
			return nil, malformed("checkpoint proof counts replica %d twice", proof[i].From)
		}
		seen[proof[i].From] = true
		m, err := v.open(&proof[i])
		if err != nil {
			return nil, err
		}
		out[i] = m.(*CheckpointMsg)
		if out[i].Checkpoint.Seq != seq {
			return nil, malformed("checkpoint proof entry %d is for n=%d, not %d", i, out[i].Checkpoint.Seq, seq)
		}
	}
	return out, nil
}

// openViewChange verifies the signatures of a view change's checkpoint proof and
// prepared certificates and keeps their typed forms; the core checks their meaning.
func (v *Verifier) openViewChange(vc *ViewChangeMsg) error {
	b := &vc.ViewChange
	proof, err := v.openCheckpointProof(b.StableSeq, b.CheckpointProof)
	if err != nil {
		return err
	}
	vc.Proof = proof
	if len(b.Prepared) > v.Limits.MaxPrepared {
		return malformed("%d prepared certificates", len(b.Prepared))
	}
	vc.Certs = make([]*PreparedCertMsg, len(b.Prepared))
	for i := range b.Prepared {
		cert, err := v.openPreparedCert(&b.Prepared[i])
		if err != nil {
			return fmt.Errorf("prepared certificate %d: %w", i, err)
		}
		vc.Certs[i] = cert
	}
	return nil
}

// openPreparedCert verifies the signatures of a prepared certificate and keeps its typed
// form; whether it proves anything (2f matching prepares) is the core's rule to check.
func (v *Verifier) openPreparedCert(c *PreparedCert) (*PreparedCertMsg, error) {
	if c.PrePrepare.Type != MsgPrePrepare {
		return nil, malformed("prepared certificate has a %s", c.PrePrepare.Type)
	}
	pp, err := v.open(&c.PrePrepare)
	if err != nil {
		return nil, err
	}
	if len(c.Prepares) > v.Limits.MaxReplicas {
		return nil, malformed("prepared certificate has %d prepares", len(c.Prepares))
	}
	cert := &PreparedCertMsg{PrePrepare: pp.(*PrePrepareMsg), Prepares: make([]*PrepareMsg, len(c.Prepares))}
	for j := range c.Prepares {
		if c.Prepares[j].Type != MsgPrepare {
			return nil, malformed("prepared certificate entry %d is a %s", j, c.Prepares[j].Type)
		}
		p, err := v.open(&c.Prepares[j])
		if err != nil {
			return nil, err
		}
		cert.Prepares[j] = p.(*PrepareMsg)
	}
	return cert, nil
}
