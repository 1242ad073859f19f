package pbft

import (
	"errors"
	"fmt"

	"github.com/pbftkit/pbft/crypto"
)

// RecordKind says what a Record holds.
type RecordKind uint8

const (
	// RecordMessage is a message this replica signed (pre-prepare, prepare, commit,
	// checkpoint, view change, new view) or accepted (a pre-prepare with its batch, a
	// new view).
	RecordMessage RecordKind = iota + 1
	// RecordPrepared is a prepared certificate this replica formed: what its view
	// changes must carry.
	RecordPrepared
	// RecordStable is a stable checkpoint: its 2f+1 proof and the checkpoint state.
	RecordStable
	// RecordCheckpoint is a checkpoint this replica signed, not yet stable: the signed
	// CHECKPOINT and the state it digests. A replica keeps the state of every
	// checkpoint it signs until that is garbage-collected (PBFT TOCS §4.3): the others
	// may take its CHECKPOINT into a proof, and if every correct signer forgot the state
	// in a crash, nobody correct could serve the certified state again.
	RecordCheckpoint
)

func (k RecordKind) String() string {
	switch k {
	case RecordMessage:
		return "message"
	case RecordPrepared:
		return "prepared"
	case RecordStable:
		return "stable"
	case RecordCheckpoint:
		return "checkpoint"
	}
	return fmt.Sprintf("record(%d)", uint8(k))
}

// Record is one thing a replica must find again after a crash. The runtime writes
// every Record of Ready.Persist durably before it sends any of Ready.Messages, and
// hands them all back (CompactRecords may shorten the list) to Replica.Restore on
// restart. Records are canonical CBOR (Marshal), like everything else.
//
// What they buy is the guarantee every correct replica owes the others, crash or not:
// it never signs two different things for one slot (a pre-prepare or prepare for one
// view and seq, a view change for one view), never moves back in views, and never
// forgets a batch it prepared, which its next VIEW-CHANGE must carry.
type Record struct {
	_    struct{} `cbor:",toarray"`
	Kind RecordKind
	// View and Seq locate the record: for a message, its view and seq (0 when it has
	// none: a view change or a new view has only a view); for a certificate its view and
	// seq; for a stable checkpoint its seq.
	View uint64
	Seq  uint64
	Env  Envelope     // RecordMessage; RecordCheckpoint: the signed CHECKPOINT
	Cert PreparedCert // RecordPrepared
	// RecordStable: the 2f+1 CHECKPOINTs proving Seq, and the CBOR of CheckpointState.
	// RecordCheckpoint: the CBOR of the CheckpointState its CHECKPOINT digests.
	Proof []Signed
	State []byte
}

func (r *Replica) persistMsg(env *Envelope, view, seq uint64) {
	r.rd.Persist = append(r.rd.Persist, Record{Kind: RecordMessage, View: view, Seq: seq, Env: *env})
}

// CompactRecords returns what of recs Restore still needs: the latest stable checkpoint,
// the certificates above it (the highest view's per seq), and the messages above it of
// the highest view they reach (older views are over: a replica never goes back). A
// runtime calls it after a stable checkpoint, so its records stay bounded by the log
// window. The result keeps the order of recs.
func CompactRecords(recs []Record) []Record {
	var h uint64
	stable, view := -1, uint64(0)
	best := map[uint64]int{} // seq -> index of the highest-view certificate
	for i := range recs {
		rec := &recs[i]
		switch rec.Kind {
		case RecordStable:
			if stable < 0 || rec.Seq >= h {
				stable, h = i, rec.Seq
			}
		case RecordMessage:
			view = max(view, rec.View)
		}
	}
	for i := range recs {
		rec := &recs[i]
		if rec.Kind == RecordPrepared && rec.Seq > h {
			if j, ok := best[rec.Seq]; !ok || recs[j].View <= rec.View {
				best[rec.Seq] = i
			}
		}
	}
	out := make([]Record, 0, len(recs))
	for i := range recs {
		rec := &recs[i]
		keep := false
		switch rec.Kind {
		case RecordStable:
			keep = i == stable
		case RecordPrepared:
			keep = rec.Seq > h && best[rec.Seq] == i
		case RecordCheckpoint:
			keep = rec.Seq > h
		case RecordMessage:
			keep = rec.View == view && (rec.Seq > h || rec.Seq == 0)
		}
		if keep {
			out = append(out, *rec)
		}
	}
	return out
}

// ErrRestored is returned by Restore on a replica that already ran.
var ErrRestored = errors.New("restore: only a new replica can be restored")

// Restore brings a new replica back to where its records say it was before a crash:
// the stable checkpoint (whose state the runtime receives in Ready().Install, to load
// into the application), the certificates it prepared, the view it was in or changing
// to, and, in that view, the pre-prepares it accepted and the votes it sent. Every
// record is verified with v as if it came from the network: storage that lies is
// refused, not trusted. What it executed after the stable checkpoint runs again as the
// log commits once more; peers resend what it lacks.
//
// Call it once, before the replica takes any message or tick, then drain Ready as usual.
func (r *Replica) Restore(recs []Record, v *Verifier) error {
	if r.ticks != 0 || r.h != 0 || r.emitted != 0 || r.view != 0 || len(r.log) != 0 {
		return ErrRestored
	}
	if err := r.restoreStable(recs, v); err != nil {
		return err
	}
	// Open every message record; fail on the first that does not verify.
	type opened struct {
		rec *Record
		msg Message
	}
	var msgs []opened
	var nv *NewViewMsg
	var ownVC *ViewChangeMsg
	view := uint64(0)
	for i := range recs {
		rec := &recs[i]
		switch rec.Kind {
		case RecordStable:
			continue
		case RecordPrepared:
			if err := r.restoreCert(rec, v); err != nil {
				return fmt.Errorf("restore: record %d: %w", i, err)
			}
			continue
		case RecordCheckpoint:
			if err := r.restoreSigned(rec, v); err != nil {
				return fmt.Errorf("restore: record %d: %w", i, err)
			}
			continue
		case RecordMessage:
		default:
			return fmt.Errorf("restore: record %d: unknown kind %d", i, rec.Kind)
		}
		m, err := v.Open(&rec.Env)
		if err != nil {
			return fmt.Errorf("restore: record %d (%s): %w", i, rec.Env.Msg.Type, err)
		}
		msgs = append(msgs, opened{rec, m})
		switch m := m.(type) {
		case *NewViewMsg:
			if nv == nil || m.NewView.View > nv.NewView.View {
				nv = m
			}
			view = max(view, m.NewView.View)
		case *ViewChangeMsg:
			if ReplicaID(m.Signed.From) != r.id {
				return fmt.Errorf("restore: record %d: a view change of replica %d", i, m.Signed.From)
			}
			if ownVC == nil || m.ViewChange.NewView > ownVC.ViewChange.NewView {
				ownVC = m
			}
			view = max(view, m.ViewChange.NewView)
		case *PrePrepareMsg:
			view = max(view, m.PrePrepare.View)
			if m.HasBatch && m.PrePrepare.Seq > r.h {
				r.rememberBatch(m.PrePrepare.Seq, m.PrePrepare.Digest, m.Batch)
			}
		case *PrepareMsg:
			view = max(view, m.Prepare.View)
		case *CommitMsg:
			view = max(view, m.Commit.View)
		}
	}

	// The view: active in it if it is view 0 or its NEW-VIEW is recorded, else still
	// changing to it with the VIEW-CHANGE already sent (resent as it is, never re-made).
	r.view = view
	switch {
	case nv != nil && nv.NewView.View == view:
		r.active = false
		r.onNewView(nv)
		if !r.active || r.view != view {
			return fmt.Errorf("restore: the recorded new-view for view %d does not start it", view)
		}
	case view == 0:
		r.active = true
	case ownVC != nil && ownVC.ViewChange.NewView == view:
		sum, bad := r.checkViewChange(ownVC)
		if sum == nil {
			return fmt.Errorf("restore: own view change for view %d: %s", view, bad)
		}
		r.active = false
		r.storeViewChange(&storedVC{signed: ownVC.Signed, sum: sum})
		r.persistMsg(&Envelope{Msg: ownVC.Signed}, view, 0)
		r.broadcast(ownVC.Signed)
		// Whether its NEW-VIEW timer ran is lost with the crash; the others may have
		// moved on since, and stopped sending the VIEW-CHANGEs that would start it
		// again. Assume it ran: the replica then gives up on this view in time (at most
		// once: the next view's timer waits for 2f+1 again) instead of waiting forever.
		r.startTimer()
	default:
		return fmt.Errorf("restore: messages of view %d but neither its new-view nor a view change to it", view)
	}

	// The log of that view: accepted pre-prepares first, then our own votes on them.
	if r.active {
		// A backup split off by an equivocating primary may have switched to the
		// primary's other pre-prepare (switchToAlt): the one its own COMMIT names wins.
		committed := make(map[uint64]crypto.Digest)
		for _, o := range msgs {
			if c, ok := o.msg.(*CommitMsg); ok && c.Commit.View == r.view && ReplicaID(c.Signed.From) == r.id {
				committed[c.Commit.Seq] = c.Commit.Digest
			}
		}
		for _, o := range msgs {
			if pp, ok := o.msg.(*PrePrepareMsg); ok && pp.PrePrepare.View == r.view {
				r.restorePrePrepare(pp, committed)
			}
		}
		for _, o := range msgs {
			switch m := o.msg.(type) {
			case *PrepareMsg:
				r.restoreVote(m.Signed, m.Prepare.View, m.Prepare.Seq, m.Prepare.Digest, false)
			case *CommitMsg:
				r.restoreVote(m.Signed, m.Commit.View, m.Commit.Seq, m.Commit.Digest, true)
			}
		}
	}
	// Its own pending proposals (none after a crash) and its peers' positions are
	// relearnt from the network; clients retransmit what did not complete.
	r.tryExecute()
	return nil
}

// restoreStable installs the latest recorded stable checkpoint.
func (r *Replica) restoreStable(recs []Record, v *Verifier) error {
	var rec *Record
	for i := range recs {
		if recs[i].Kind == RecordStable && (rec == nil || recs[i].Seq > rec.Seq) {
			rec = &recs[i]
		}
	}
	if rec == nil {
		return nil
	}
	if rec.Seq == 0 || rec.Seq%r.cfg.CheckpointInterval != 0 {
		return fmt.Errorf("restore: stable checkpoint at n=%d, not a checkpoint", rec.Seq)
	}
	typed, err := v.openCheckpointProof(rec.Seq, rec.Proof)
	if err != nil {
		return fmt.Errorf("restore: stable checkpoint n=%d: %w", rec.Seq, err)
	}
	sc := r.certifiedBy(rec.Seq, typed)
	if sc == nil {
		return fmt.Errorf("restore: stable checkpoint n=%d without a 2f+1 proof", rec.Seq)
	}
	d, proof := sc.State, sc.Proof
	var cs CheckpointState
	if err := unmarshalCanonical(rec.State, &cs); err != nil {
		return fmt.Errorf("restore: stable checkpoint n=%d: state: %w", rec.Seq, err)
	}
	if StateDigest(cs.App, cs.Clients) != d {
		return fmt.Errorf("restore: stable checkpoint n=%d: state does not match its proof", rec.Seq)
	}
	table, err := restoreClientTable(r.cfg.ReplyWindow, cs.Clients)
	if err != nil {
		return fmt.Errorf("restore: stable checkpoint n=%d: %w", rec.Seq, err)
	}
	r.clients = table
	r.emitted, r.executed = rec.Seq, rec.Seq
	r.rd.Install = &Install{Seq: rec.Seq, App: cs.App}
	r.makeStable(&StableCheckpoint{Seq: rec.Seq, State: d, Proof: proof}, rec.State)
	return nil
}

// restoreSigned brings back a checkpoint this replica signed above its stable one: its
// own vote, and the state, which it installs itself if the checkpoint becomes certified
// before it executed that far again (startStateTransfer).
func (r *Replica) restoreSigned(rec *Record, v *Verifier) error {
	if rec.Seq <= r.h {
		return nil
	}
	m, err := v.Open(&rec.Env)
	if err != nil {
		return fmt.Errorf("signed checkpoint n=%d: %w", rec.Seq, err)
	}
	cp, ok := m.(*CheckpointMsg)
	if !ok || ReplicaID(cp.Signed.From) != r.id || cp.Checkpoint.Seq != rec.Seq {
		return fmt.Errorf("signed checkpoint n=%d: not this replica's CHECKPOINT for it", rec.Seq)
	}
	var cs CheckpointState
	if err := unmarshalCanonical(rec.State, &cs); err != nil {
		return fmt.Errorf("signed checkpoint n=%d: state: %w", rec.Seq, err)
	}
	if StateDigest(cs.App, cs.Clients) != cp.Checkpoint.State {
		return fmt.Errorf("signed checkpoint n=%d: state does not match the digest signed", rec.Seq)
	}
	r.checkpointVotesFor(rec.Seq).add(cp, r.cfg.N)
	r.saved[rec.Seq] = rec.State
	return nil
}

// restoreCert keeps a recorded prepared certificate for the next VIEW-CHANGE.
func (r *Replica) restoreCert(rec *Record, v *Verifier) error {
	c, err := v.openPreparedCert(&rec.Cert)
	if err != nil {
		return err
	}
	if bad := r.checkCert(c); bad != "" {
		return errors.New("prepared certificate with " + bad)
	}
	pp := &c.PrePrepare.PrePrepare
	if !r.inWindow(pp.Seq) {
		return nil // below the stable checkpoint: done with
	}
	if pi := r.prepared[pp.Seq]; pi == nil || pi.view < pp.View {
		r.prepared[pp.Seq] = &preparedInfo{view: pp.View, digest: pp.Digest, cert: rec.Cert}
	}
	return nil
}

// restorePrePrepare enters a recorded pre-prepare of the current view into the log:
// the first recorded for its seq, unless this replica's own COMMIT there names another
// one's digest (it switched to it, see switchToAlt).
func (r *Replica) restorePrePrepare(pp *PrePrepareMsg, committed map[uint64]crypto.Digest) {
	n := pp.PrePrepare.Seq
	if !r.inWindow(n) {
		return
	}
	e := r.getEntry(n)
	if e.pp != nil {
		d, ok := committed[n]
		if !ok || e.digest == d || pp.PrePrepare.Digest != d || !pp.HasBatch {
			return // one pre-prepare per (view, seq)
		}
		e.batch, e.hasBatch = nil, false
	}
	e.pp, e.digest = pp, pp.PrePrepare.Digest
	r.attachBatch(e)
	for _, m := range e.batch {
		r.inflight[m.Digest] = true
	}
	if ReplicaID(pp.Signed.From) == r.id {
		r.nextSeq = max(r.nextSeq, n)
	}
}

// restoreVote puts back a vote this replica sent, so it never sends another for the slot;
// an own commit also says the entry prepared.
func (r *Replica) restoreVote(s Signed, view, n uint64, d crypto.Digest, commit bool) {
	e := r.log[n]
	if view != r.view || e == nil || e.view != view || e.pp == nil || e.digest != d || ReplicaID(s.From) != r.id {
		return
	}
	if commit {
		e.commits.by[r.id] = vote{has: true, digest: d, msg: s}
		e.prepared = true
		return
	}
	e.prepares.by[r.id] = vote{has: true, digest: d, msg: s}
}
