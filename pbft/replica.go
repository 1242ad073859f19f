package pbft

import (
	"fmt"

	"github.com/pbftkit/pbft/crypto"
)

// Replica is one PBFT replica's protocol state. It is not safe for concurrent use: one
// event loop owns it.
type Replica struct {
	cfg Config
	q   Quorum
	id  ReplicaID

	view  uint64
	ticks uint64
	// active is false while the replica changes to view: it accepts no normal-case
	// message until the NEW-VIEW arrives.
	active bool
	// newView is the NEW-VIEW that started the current view, forwarded to laggards;
	// viewMaxS is its max-s (0 in view 0): up to it, the view's only pre-prepares are
	// the ones the NEW-VIEW carries.
	newView  *Envelope
	viewMaxS uint64

	// The view-change timer: it fires at vcDeadline (0: stopped); vcTimeout doubles
	// while view changes make no progress.
	vcTimeout  uint64
	vcDeadline uint64
	// watchedDone is set when a watched request leaves waiting by executing (or being
	// decided): what progressed waits for.
	watchedDone bool
	// waiting are the valid requests a backup holds that have not executed: its timer
	// runs while there are any. waitingPer bounds them per client.
	waiting watchSet
	// prepared holds, per seq above the stable checkpoint, the certificate from the
	// highest view in which this replica prepared: P of its VIEW-CHANGE.
	prepared map[uint64]*preparedInfo
	// batches holds batch bodies by digest, above the stable checkpoint.
	batches map[crypto.Digest]*storedBatch
	// viewChanges is, per replica, its latest valid VIEW-CHANGE (for the f+1 rule);
	// vcFor keeps, for each of the next few views from ours, the VIEW-CHANGE each replica
	// sent for it: a replica that moved on to a later view still counts towards this one.
	viewChanges []*storedVC
	vcFor       map[uint64][]*storedVC
	// peerView is, per replica, the highest view seen in a valid message from it.
	peerView []uint64
	// deferred holds the NEW-VIEW's pre-prepares beyond this replica's window, until a
	// stable checkpoint brings them into it.
	deferred map[uint64]*PrePrepareMsg

	// h is the sequence number of the last stable checkpoint (the low watermark).
	h      uint64
	stable *StableCheckpoint
	// stableState is the checkpoint state at h, kept to serve state transfer.
	stableState []byte

	log     map[uint64]*entry
	nextSeq uint64 // primary: the last sequence number it assigned
	// decided is, per seq above the stable checkpoint, the digest this replica committed
	// or executed there, in whichever view: it never prepares another one at that seq.
	decided map[uint64]crypto.Digest

	// emitted is the last sequence number handed to the application; executed the last
	// one whose result came back. They differ only while the runtime is executing.
	emitted  uint64
	executed uint64
	// executing holds, per seq in (executed, emitted], the requests handed to the
	// application, until their results come back. It is apart from the log, which a
	// view change may rewrite while the application still runs a batch.
	executing map[uint64][]*RequestMsg

	clients clientTable

	// pending is the primary's queue of requests not yet assigned a sequence number.
	pending requestQueue
	// inflight are the requests in batches assigned but not yet executed.
	inflight map[crypto.Digest]bool

	ckpts    map[uint64]*checkpointVotes
	transfer *stateTransfer
	// pendingInstall is a fetched checkpoint waiting for executing batches to drain.
	pendingInstall *installWait
	// saved holds, by seq, the states of checkpoints above h this replica signed
	// before its last crash (RecordCheckpoint), until h passes them.
	saved map[uint64][]byte

	// seenAhead is, per replica, the highest sequence number seen in a valid message
	// from it: evidence of how far the cluster went.
	seenAhead []uint64
	// progressMark and progressTick record when emitted last advanced.
	progressMark uint64
	progressTick uint64
	nextAsk      int // the peer a stalled replica asks next for state

	// budgets rate-limit what this replica does for each peer (budget.go).
	budgets peerBudgets

	rd Ready
}

// NewReplica returns a replica at view 0 with an empty log.
func NewReplica(cfg Config) (*Replica, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("pbft config: %w", err)
	}
	q, _ := NewQuorum(cfg.N)
	return &Replica{
		cfg:         cfg,
		q:           q,
		id:          cfg.ID,
		log:         make(map[uint64]*entry),
		decided:     make(map[uint64]crypto.Digest),
		clients:     newClientTable(cfg.ReplyWindow),
		inflight:    make(map[crypto.Digest]bool),
		pending:     newRequestQueue(cfg.ReplyWindow),
		ckpts:       make(map[uint64]*checkpointVotes),
		saved:       make(map[uint64][]byte),
		budgets:     newPeerBudgets(cfg.N),
		active:      true,
		vcTimeout:   uint64(cfg.ViewChangeTicks),
		executing:   make(map[uint64][]*RequestMsg),
		waiting:     newWatchSet(cfg.ReplyWindow),
		prepared:    make(map[uint64]*preparedInfo),
		batches:     make(map[crypto.Digest]*storedBatch),
		viewChanges: make([]*storedVC, cfg.N),
		vcFor:       make(map[uint64][]*storedVC),
		peerView:    make([]uint64, cfg.N),
		deferred:    make(map[uint64]*PrePrepareMsg),
		seenAhead:   make([]uint64, cfg.N),
	}, nil
}

// Status is a read-only summary of a replica's position.
type Status struct {
	ID       ReplicaID
	View     uint64
	Active   bool // false while changing to View
	Primary  ReplicaID
	LowMark  uint64 // last stable checkpoint
	Executed uint64 // last sequence number executed
	LogSize  int    // entries held in the log
	Pending  int    // requests waiting for a sequence number (primary)
}

// Status returns the replica's current position.
func (r *Replica) Status() Status {
	return Status{
		ID: r.id, View: r.view, Active: r.active, Primary: r.q.Primary(r.view), LowMark: r.h,
		Executed: r.executed, LogSize: len(r.log), Pending: r.pending.len(),
	}
}

// Ready returns the output accumulated since the last call and clears it.
func (r *Replica) Ready() Ready {
	rd := r.rd
	r.rd = Ready{}
	return rd
}

func (r *Replica) isPrimary() bool { return r.q.Primary(r.view) == r.id }

func (r *Replica) drop(m Message, reason string) {
	s := m.Raw()
	r.rd.Drops = append(r.rd.Drops, Drop{From: s.From, Type: s.Type, Reason: reason})
}

func (r *Replica) send(to Destination, env *Envelope) {
	r.rd.Messages = append(r.rd.Messages, Outbound{To: to, Env: env})
}

func (r *Replica) broadcast(s Signed) {
	r.send(Destination{Kind: ToAllReplicas}, &Envelope{Msg: s})
}

func (r *Replica) sendTo(id ReplicaID, env *Envelope) {
	r.send(Destination{Kind: ToReplica, Replica: id}, env)
}

func (r *Replica) sign(t MsgType, body any) Signed {
	return Sign(r.cfg.Signer, t, uint32(r.id), body)
}

// inWindow is the watermark rule: h < n <= h+L.
func (r *Replica) inWindow(n uint64) bool {
	return n > r.h && n-r.h <= r.cfg.LogWindow
}

// Step processes one verified message: a client request (from a client or forwarded by
// a replica) or a replica's protocol message.
func (r *Replica) Step(m Message) {
	if m == nil || m.Raw() == nil {
		return
	}
	if s := m.Raw(); s.Type != MsgRequest && uint64(s.From) >= uint64(r.cfg.N) {
		// The Verifier checks this too; the core does not depend on it being
		// configured with the same n.
		r.drop(m, "message from a replica outside the cluster")
		return
	}
	if s := m.Raw(); s.Type != MsgRequest && ReplicaID(s.From) == r.id {
		// A replica knows what it signed: a copy that comes back (replayed, relayed,
		// part of a proof sent as single messages) adds nothing, and its vote slots
		// must hold only what it signed in this life.
		r.drop(m, "own message echoed back")
		return
	}
	switch m := m.(type) {
	case *RequestMsg:
		r.onRequest(m)
	case *PrePrepareMsg:
		r.onPrePrepare(m)
	case *PrepareMsg:
		r.onPrepare(m)
	case *CommitMsg:
		r.onCommit(m)
	case *CheckpointMsg:
		r.onCheckpoint(m)
	case *StateRequestMsg:
		r.onStateRequest(m)
	case *StateResponseMsg:
		r.onStateResponse(m)
	case *ViewChangeMsg:
		r.onViewChange(m)
	case *NewViewMsg:
		r.onNewView(m)
	case *FetchBatchMsg:
		r.onFetchBatch(m)
	case *BatchReplyMsg:
		r.onBatchReply(m)
	default:
		// A nil or foreign Message: nothing to count it against.
	}
}

// Tick advances the replica's logical clock by one tick.
func (r *Replica) Tick() {
	r.ticks++
	if r.ticks%uint64(r.cfg.RetransmitTicks) == 0 {
		r.retransmit()
	}
	r.tickStateTransfer()
	r.tickStalled()
	r.tickViewChange()
}

// Executed hands back the application's result for the oldest batch still executing.
func (r *Replica) Executed(ex Executed) error {
	if ex.Seq != r.executed+1 || ex.Seq > r.emitted {
		return fmt.Errorf("executed n=%d: expected n=%d (emitted up to %d)", ex.Seq, r.executed+1, r.emitted)
	}
	if err := r.onExecuted(ex); err != nil {
		return err
	}
	r.executed = ex.Seq
	if r.pendingInstall != nil && r.executed == r.emitted {
		r.finishInstall()
	}
	r.tryExecute()
	r.progressed()
	// An executed batch frees a slot of the in-flight bound.
	r.maybePropose()
	return nil
}
