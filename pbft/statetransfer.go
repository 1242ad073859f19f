package pbft

import (
	"slices"

	"github.com/pbftkit/pbft/crypto"
)

// stateTransfer is an ongoing fetch of the state at a stable checkpoint this replica
// cannot reach by executing its log. The state comes in chunks from one peer at a time;
// a peer that is slow or serves state not matching the certified digest is replaced by
// the next peer, and the assembly starts over.
//
// It asks for any certified state above its low watermark, not only the target's: a
// faulty replica can make its own checkpoint stable (its true vote and 2f correct ones)
// while its lies keep the correct replicas from doing so, and then it alone holds the
// target's state. A lower certified checkpoint that correct peers hold is progress;
// the transfer goes on towards the target from there.
type stateTransfer struct {
	target *StableCheckpoint
	// peers are the replicas asked in turn: first the signers of the certified
	// checkpoints this transfer learnt of (known to have held a state above ours), then
	// every other replica, since each answer carries its own proof and is checked
	// against it: a replica that stopped signing checkpoints with us may be ahead.
	peers []ReplicaID
	next  int    // index into peers of the one to ask next
	asked uint64 // tick of the last request or chunk received
	// started is the tick the current peer was first asked, and budget the ticks it
	// gets to deliver the whole state, progress or not: chunks cannot be checked before
	// the last one is in, so a faulty peer that claims many chunks and drips them would
	// otherwise hold the transfer forever. The budget doubles after each round over the
	// peers, so a correct peer's true state, however large, fits in one eventually, and
	// f faulty peers cost at most a constant factor of the time it needs.
	started, budget uint64
	asks            int // peers asked so far in this transfer

	peer      ReplicaID // the peer chunks are assembled from
	seq       uint64    // the checkpoint being assembled (0: none yet)
	chunks    [][]byte
	got       int
	requested int // chunks asked for so far, in order
}

// stateWindow is how many chunks a replica fetches at once; maxStateChunks bounds how
// many chunks a state may claim to have.
//
// stateBudgetPeriods is the first budget a peer gets for a whole state, in retransmit
// periods (a peer serves 2*stateWindow chunks a period to each replica); the budget
// doubles each round over the peers up to maxStateBudget ticks.
const (
	stateWindow        = 4
	maxStateChunks     = 1 << 16
	stateBudgetPeriods = 8
	maxStateBudget     = 1 << 24
)

// installWait is a verified checkpoint state waiting for batches still executing.
type installWait struct {
	sc    *StableCheckpoint
	state []byte // the encoded CheckpointState, kept to serve other replicas
	app   []byte
	table clientTable
}

func (r *Replica) startStateTransfer(sc *StableCheckpoint) {
	if r.installSaved(sc) {
		return
	}
	if r.newStateTransfer(sc) {
		r.askState()
	}
}

// installSaved installs the certified checkpoint sc from this replica's own records, if
// it signed sc before a crash and kept the state (RecordCheckpoint): no peer is needed,
// which matters when every other correct signer lost the state too.
func (r *Replica) installSaved(sc *StableCheckpoint) bool {
	state, ok := r.saved[sc.Seq]
	if !ok || sc.Seq <= r.emitted || (r.pendingInstall != nil && r.pendingInstall.sc.Seq >= sc.Seq) {
		return false
	}
	w, reason := r.checkedState(sc, state)
	if reason != "" {
		return false // what it signed is not what was certified: fetch the certified state
	}
	r.awaitInstall(w)
	return true
}

// checkedState decodes an encoded CheckpointState for certified checkpoint sc, fetched
// or from this replica's own records: it must digest to sc.State and hold a valid client
// table. reason, the drop reason of a state response, says why not.
func (r *Replica) checkedState(sc *StableCheckpoint, state []byte) (*installWait, string) {
	var cs CheckpointState
	if err := unmarshalCanonical(state, &cs); err != nil {
		return nil, "state response with malformed state"
	}
	if StateDigest(cs.App, cs.Clients) != sc.State {
		return nil, "state response does not match the certified digest"
	}
	table, err := restoreClientTable(r.cfg.ReplyWindow, cs.Clients)
	if err != nil {
		return nil, "state response with an invalid client table"
	}
	return &installWait{sc: sc, state: state, app: cs.App, table: table}, ""
}

// awaitInstall holds a checked state until the batches still executing are done, then
// installs it; a transfer towards it (or below) is over.
func (r *Replica) awaitInstall(w *installWait) {
	if r.transfer != nil && r.transfer.target.Seq <= w.sc.Seq {
		r.transfer = nil
	}
	r.pendingInstall = w
	if r.executed == r.emitted {
		r.finishInstall()
	}
}

// newStateTransfer sets up a transfer towards sc unless one is under way; it reports
// whether it did. A transfer under way takes a higher target in its stride: the same
// peer is asked for the newer state, in the same turn and on the same budget clock, and
// the order of peers never changes, only grows. A faulty replica that shows newer
// proofs therefore buys itself no fresh turn and no fresh budget, and cannot move
// itself up the order.
func (r *Replica) newStateTransfer(sc *StableCheckpoint) bool {
	if t := r.transfer; t != nil {
		t.addPeers(sc, r.id)
		if t.target.Seq >= sc.Seq {
			return false
		}
		t.target = sc
		t.seq, t.chunks, t.got, t.requested = 0, nil, 0, 0
		t.asked = r.ticks
		r.sendTo(t.peer, &Envelope{Msg: r.sign(MsgStateRequest, StateRequest{Seq: r.stateWanted()})})
		return false
	}
	if r.pendingInstall != nil && r.pendingInstall.sc.Seq >= sc.Seq {
		return false
	}
	t := &stateTransfer{target: sc}
	t.addPeers(sc, r.id)
	for j := 0; j < r.cfg.N; j++ {
		if id := ReplicaID(j); id != r.id && !slices.Contains(t.peers, id) {
			t.peers = append(t.peers, id)
		}
	}
	if len(t.peers) == 0 {
		return false
	}
	// Start with a different peer on each replica so that one faulty signer is not
	// asked by everybody first.
	t.next = int(r.id) % len(t.peers)
	r.transfer = t
	return true
}

// addPeers appends the signers of sc's proof (but self) that are not yet among the
// peers asked, in id order: the proof's own order is the sender's choice.
func (t *stateTransfer) addPeers(sc *StableCheckpoint, self ReplicaID) {
	var signers []ReplicaID
	for _, s := range sc.Proof {
		if id := ReplicaID(s.From); id != self && !slices.Contains(t.peers, id) && !slices.Contains(signers, id) {
			signers = append(signers, id)
		}
	}
	slices.Sort(signers)
	t.peers = append(t.peers, signers...)
}

// askState starts the assembly over with the next peer, on a budget that doubles after
// each round over the peers.
func (r *Replica) askState() {
	t := r.transfer
	if t.budget == 0 {
		t.budget = stateBudgetPeriods * uint64(r.cfg.RetransmitTicks)
	} else if t.asks > 0 && t.asks%len(t.peers) == 0 {
		t.budget = min(2*t.budget, maxStateBudget)
	}
	t.asks++
	t.peer = t.peers[t.next%len(t.peers)]
	t.next++
	t.asked, t.started = r.ticks, r.ticks
	t.seq, t.chunks, t.got, t.requested = 0, nil, 0, 0
	r.sendTo(t.peer, &Envelope{Msg: r.sign(MsgStateRequest, StateRequest{Seq: r.stateWanted()})})
}

// stateWanted is the seq a transfer asks state from: any certified state beyond what
// this replica executed (a peer with none answers with its commit certificates from
// there on: sendCommitCerts), or the target's own, when this replica executed past it
// but its state there disagrees with the certified one.
func (r *Replica) stateWanted() uint64 {
	return min(r.emitted+1, r.transfer.target.Seq)
}

// askChunks keeps up to stateWindow chunks in flight from the current peer.
func (r *Replica) askChunks() {
	t := r.transfer
	for t.requested < len(t.chunks) && t.requested-t.got < stateWindow {
		if t.chunks[t.requested] == nil {
			r.sendTo(t.peer, &Envelope{Msg: r.sign(MsgStateRequest, StateRequest{Seq: t.seq, Chunk: uint32(t.requested)})})
		}
		t.requested++
	}
}

// tickStateTransfer re-asks a quiet peer for the chunks still missing (requests and
// answers get lost; a peer serves a budget of chunks per period), and gives up on it for
// the next peer after three quiet periods, or once its budget for the whole state is
// spent, however steadily chunks came.
func (r *Replica) tickStateTransfer() {
	t := r.transfer
	if t == nil {
		return
	}
	idle, period := r.ticks-t.asked, uint64(r.cfg.RetransmitTicks)
	switch {
	case idle >= 3*period || r.ticks-t.started >= t.budget:
		r.askState()
	case idle > 0 && idle%period == 0:
		if t.seq == 0 {
			r.sendTo(t.peer, &Envelope{Msg: r.sign(MsgStateRequest, StateRequest{Seq: r.stateWanted()})})
			return
		}
		sent := 0
		for i := 0; i < t.requested && sent < stateWindow; i++ {
			if t.chunks[i] == nil {
				r.sendTo(t.peer, &Envelope{Msg: r.sign(MsgStateRequest, StateRequest{Seq: t.seq, Chunk: uint32(i)})})
				sent++
			}
		}
	}
}

// tickStalled notices a replica whose execution has not moved for two retransmit
// periods although it knows the cluster went further (a gap in its log, or messages
// above its window). Its peers may have discarded what it misses at a stable
// checkpoint, so it asks one peer at a time for state at or beyond its next seq.
func (r *Replica) tickStalled() {
	if r.emitted != r.progressMark {
		r.progressMark, r.progressTick = r.emitted, r.ticks
		return
	}
	if r.ticks-r.progressTick < 2*uint64(r.cfg.RetransmitTicks) || r.transfer != nil || r.pendingInstall != nil || !r.knowsMore() {
		return
	}
	r.progressTick = r.ticks
	peer := ReplicaID(r.nextAsk % r.cfg.N)
	if peer == r.id {
		r.nextAsk++
		peer = ReplicaID(r.nextAsk % r.cfg.N)
	}
	r.nextAsk++
	r.sendTo(peer, &Envelope{Msg: r.sign(MsgStateRequest, StateRequest{Seq: r.emitted + 1})})
}

// knowsMore reports evidence that the cluster went beyond what this replica executed:
// f+1 replicas (so at least one correct one) sent messages for later seqs, or its log
// holds a pre-prepare it has not executed. A lone Byzantine replica cannot fake either.
func (r *Replica) knowsMore() bool {
	ahead := 0
	for _, n := range r.seenAhead {
		if n > r.emitted {
			ahead++
		}
	}
	if ahead >= r.q.Weak() {
		return true
	}
	for n := r.emitted + 1; n <= r.h+r.cfg.LogWindow; n++ {
		if e := r.log[n]; e != nil && e.pp != nil {
			return true
		}
	}
	return false
}

// noteSeq records that replica from sent a valid message for seq n.
func (r *Replica) noteSeq(from ReplicaID, n uint64) {
	if int(from) < len(r.seenAhead) && n > r.seenAhead[from] {
		r.seenAhead[from] = n
	}
}

// onStateRequest serves this replica's stable checkpoint (with its proof) to a replica
// that asks for state at or beyond some seq; at most once per retransmit period per peer.
// A replica that does not hold such a checkpoint stays silent: that is not a fault.
func (r *Replica) onStateRequest(m *StateRequestMsg) {
	from := ReplicaID(m.Signed.From)
	if from == r.id {
		return
	}
	if m.StateRequest.Seq > r.h {
		r.sendCommitCerts(from, m.StateRequest.Seq)
		return
	}
	if r.stable == nil || r.stableState == nil {
		return
	}
	size := r.cfg.StateChunkBytes
	chunks := max(1, (len(r.stableState)+size-1)/size)
	c := int(m.StateRequest.Chunk)
	if c >= chunks {
		return
	}
	// A budget of chunks per peer per retransmit period: serving state is the most
	// expensive thing a replica does for others.
	if !r.budgets.chunks.take(from, r.ticks, uint64(r.cfg.RetransmitTicks), 2*stateWindow) {
		return
	}
	resp := StateResponse{Seq: r.h, Proof: r.stable.Proof, Chunk: uint32(c), Chunks: uint32(chunks),
		State: r.stableState[c*size : min(len(r.stableState), (c+1)*size)]}
	r.sendTo(from, &Envelope{Msg: r.sign(MsgStateResponse, resp)})
}

// sendCommitCerts answers a probe for seq n above this replica's stable checkpoint (the
// prober stalled below it, see tickStalled) with the commit certificates it holds from
// n on: each the primary's signed PRE-PREPARE with its batch and 2f+1 matching signed
// COMMITs. With them the prober executes by the commit certificate rule (check), however
// its own votes were crowded out; at most stateWindow of them, once per retransmit
// period per peer.
func (r *Replica) sendCommitCerts(to ReplicaID, n uint64) {
	if !r.budgets.certs.due(to, r.ticks, uint64(r.cfg.RetransmitTicks)) {
		return
	}
	for k := uint64(0); k < stateWindow && r.inWindow(n+k); k++ {
		e := r.log[n+k]
		if e == nil || !e.committed || !e.hasBatch || e.view != r.view {
			return
		}
		r.sendTo(to, e.envelope())
		for _, s := range e.commits.signed(e.digest, r.q.Strong()) {
			r.sendTo(to, &Envelope{Msg: s})
		}
	}
}

// onStateResponse installs fetched state if (and only if) a valid 2f+1 proof certifies
// its digest; a peer that serves anything else is skipped.
func (r *Replica) onStateResponse(m *StateResponseMsg) {
	resp := &m.StateResponse
	if resp.Seq <= r.h || (r.pendingInstall != nil && resp.Seq <= r.pendingInstall.sc.Seq) {
		// Never trade a certified state for an older one: a replayed, valid but stale
		// response would otherwise undo a newer install and force a second transfer.
		return
	}
	sc := r.certifiedBy(resp.Seq, m.Proof)
	if sc == nil {
		r.drop(m, "state response without a 2f+1 checkpoint proof")
		return
	}
	d := sc.State
	if resp.Seq <= r.emitted && !r.ownCheckpointDiffers(resp.Seq, d) {
		// We executed that far ourselves: the proof, taken as a whole, makes our
		// checkpoint stable.
		r.adoptCertified(sc)
		return
	}
	state, done := r.assemble(m, sc)
	if !done {
		return
	}
	w, reason := r.checkedState(sc, state)
	if reason != "" {
		r.drop(m, reason)
		r.retryTransfer(sc)
		return
	}
	r.awaitInstall(w)
}

// assemble adds one chunk of certified checkpoint sc to the transfer and returns the
// whole state once every chunk is in. A single-chunk response is the whole state.
func (r *Replica) assemble(m *StateResponseMsg, sc *StableCheckpoint) ([]byte, bool) {
	resp := &m.StateResponse
	if resp.Chunks <= 1 {
		return resp.State, resp.Chunk == 0
	}
	from := ReplicaID(m.Signed.From)
	maxChunks := min(maxStateChunks, (r.cfg.MaxStateBytes+r.cfg.StateChunkBytes-1)/r.cfg.StateChunkBytes)
	if resp.Chunk >= resp.Chunks || int(resp.Chunks) > maxChunks || len(resp.State) > r.cfg.StateChunkBytes {
		r.drop(m, "state response with an impossible chunk")
		return nil, false
	}
	if r.transfer == nil {
		// An answer to a stalled replica's probe: assemble from the peer that answered.
		if !r.newStateTransfer(sc) {
			return nil, false
		}
		r.transfer.peer, r.transfer.asked, r.transfer.started = from, r.ticks, r.ticks
		r.transfer.budget, r.transfer.asks = stateBudgetPeriods*uint64(r.cfg.RetransmitTicks), 1
	}
	t := r.transfer
	switch {
	case from != t.peer:
		return nil, false // only the peer being asked; others are late answers
	case t.seq == 0 || resp.Seq > t.seq:
		// The first chunk, or the peer moved to a later checkpoint: assemble that one.
		t.seq, t.chunks, t.got, t.requested = resp.Seq, make([][]byte, resp.Chunks), 0, 0
		if resp.Seq > t.target.Seq {
			t.target = sc
		}
	case resp.Seq < t.seq || int(resp.Chunks) != len(t.chunks):
		return nil, false
	}
	if t.chunks[resp.Chunk] == nil {
		t.chunks[resp.Chunk] = resp.State
		if t.chunks[resp.Chunk] == nil {
			t.chunks[resp.Chunk] = []byte{}
		}
		t.got++
		t.asked = r.ticks
	}
	if t.got < len(t.chunks) {
		r.askChunks()
		return nil, false
	}
	size := 0
	for _, c := range t.chunks {
		size += len(c)
	}
	state := make([]byte, 0, size)
	for _, c := range t.chunks {
		state = append(state, c...)
	}
	return state, true
}

// retryTransfer asks the next peer at once after a bad answer.
func (r *Replica) retryTransfer(sc *StableCheckpoint) {
	if r.transfer == nil {
		r.startStateTransfer(sc)
		return
	}
	r.askState()
}

// ownCheckpointDiffers reports whether this replica's own checkpoint at n disagrees
// with the certified digest d: its state is wrong, and only the certified state repairs it.
func (r *Replica) ownCheckpointDiffers(n uint64, d crypto.Digest) bool {
	cv := r.ckpts[n]
	return cv != nil && cv.own != nil && cv.ownDigest != d
}

func (r *Replica) finishInstall() {
	w := r.pendingInstall
	r.pendingInstall = nil
	if w.sc.Seq <= r.h || (w.sc.Seq <= r.emitted && !r.ownCheckpointDiffers(w.sc.Seq, w.sc.State)) {
		return
	}
	r.clients = w.table
	r.emitted, r.executed = w.sc.Seq, w.sc.Seq
	for d := range r.inflight {
		delete(r.inflight, d)
	}
	r.rd.Install = &Install{Seq: w.sc.Seq, App: w.app}
	for _, m := range r.waitingInOrder() {
		if st, _ := r.clients.lookup(m.Request.Client, m.Request.Timestamp); st != reqNew {
			r.unwatch(m)
		}
	}
	r.makeStable(w.sc, w.state)
	r.progressed()
	r.tryExecute()
}
