package sim

import (
	"container/heap"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/pbftkit/pbft/app/kvstore"
	"github.com/pbftkit/pbft/crypto"
	"github.com/pbftkit/pbft/pbft"
	"github.com/pbftkit/pbft/pbft/driver"
)

// tickUnits is how many network time units make one replica tick.
const tickUnits = 10

// Options describe one simulated run. Equal Options give an identical run.
type Options struct {
	Replicas      int
	Byzantine     int
	Strategy      string // a name from Strategies, or "all" to draw one per faulty replica
	FaultyPrimary bool   // the primary of view 0 is one of the Byzantine replicas
	Seed          uint64
	Requests      int // total requests issued by all clients together
	Clients       int
	Scheme        string // signature scheme of replicas and clients
	FastCrypto    bool   // HMAC stand-in for signatures, inside the simulator only

	// The network misbehaves until HealTick, then delivers everything within 3 units.
	DropRate   float64
	DupRate    float64
	MaxDelay   int // network time units (10 per tick) before the heal
	Partitions int // partitions that come and go before the heal
	// Crashes is how many times, before the heal, a correct replica crashes (losing
	// everything but what its core asked to persist) and restarts 20 to 150 ticks later.
	Crashes int
	// DiskDelay, when above 0, makes a correct replica's durable writes take 1 to
	// DiskDelay network time units, while it goes on stepping; messages wait for their
	// records, replies do not. A crash loses what was not yet written, and with
	// TornWrites a prefix of it survives.
	DiskDelay  int
	TornWrites bool
	HealTick   int
	// LivenessTicks is the bound, counted from the heal, by which every request must
	// have completed.
	LivenessTicks int
	// DrainTicks is how long, once every request completed, the run goes on for the
	// correct replicas to converge on the same executed seq and state.
	DrainTicks int

	CheckpointInterval uint64
	LogWindow          uint64
	MaxBatch           int
	MaxInFlight        int // batches the primary keeps in flight (pipelining depth)
	ClientTimeout      int // ticks before a client retransmits to every replica
	ViewChangeTicks    int // a backup's initial view-change timeout

	// Swarm makes the seed draw the configuration (n, checkpoint interval, window, batch,
	// pipelining, fault rates, crashes, timeouts) in place of the values above; see
	// swarmOptions.
	Swarm bool

	// Trace, when set, receives one line per delivered frame, execution and drop.
	Trace io.Writer
}

// DefaultOptions is the scenario used by `pbft sim` and the tests: 4 replicas, one
// Byzantine backup, 200 requests from 12 clients over a lossy network that heals at
// tick 300; checkpoints every 8 seqs in a window of 16, two batches in flight.
func DefaultOptions() Options {
	return Options{
		Replicas: 4, Byzantine: 1, Strategy: "all", Requests: 200, Clients: 12,
		Scheme:   "Ed25519",
		DropRate: 0.05, DupRate: 0.02, MaxDelay: 30, Partitions: 2, Crashes: 1, HealTick: 300,
		LivenessTicks:      3000,
		DrainTicks:         500,
		CheckpointInterval: 8, LogWindow: 16, MaxBatch: 8, MaxInFlight: 2, ClientTimeout: 40,
		ViewChangeTicks: 80,
	}
}

// Result is the outcome of one run.
type Result struct {
	Seed            uint64
	Config          string   // the configuration run (what a swarm seed drew)
	Strategies      []string // per replica; "" for a correct one
	Violations      []string // safety violations, first ones only
	LivenessFailure string   // empty when every request completed in time
	Completed       int      // requests whose result a client accepted
	Ticks           int      // ticks simulated
	Delivered       int      // frames delivered
	Drops           map[string]int
	StateTransfers  int // checkpoint states installed by correct replicas
	Restarts        int // correct replicas restarted from their records
	MaxLogSize      int // largest log any correct replica held
	// ViewChanges counts the views correct replicas started (a NEW-VIEW accepted), and
	// RecoveryTicks, for each, the ticks from the first VIEW-CHANGE a correct replica
	// sent for it to the first correct replica active in it.
	ViewChanges   int
	RecoveryTicks []int
	// CompletionTick is the tick at which the last request completed (0: never).
	CompletionTick int
}

// Failed reports whether the run broke a safety or liveness property.
func (r *Result) Failed() bool { return len(r.Violations) > 0 || r.LivenessFailure != "" }

type event struct {
	at    int64
	seq   uint64
	tick  bool
	sync  bool   // the simulated disk of replica to finishes a write
	gen   uint64 // of that write
	fault fault  // a crash or restart of replica to
	to    int
	from  int
	frame []byte
}

type fault uint8

const (
	noFault fault = iota
	crash
	restart
)

type eventQueue []*event

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

// node is anything on the simulated network. Addresses: replica i is i, client j is n+j.
type node interface {
	receive(from int, frame []byte)
	tick()
}

type partition struct {
	start, end int64
	isolated   []bool // by address
}

type world struct {
	opts    Options
	rng     *rand.Rand
	now     int64
	seq     uint64
	queue   eventQueue
	n       int
	quorum  pbft.Quorum
	nodes   []node
	clients []*client
	keys    *keys
	limits  pbft.Limits
	check   *checker
	parts   []partition
	res     *Result
	// coalition is what the Byzantine replicas share: for each (view, seq) an
	// equivocating primary split, the digest each replica was shown.
	coalition map[slot]map[int]crypto.Digest
	// vcStart and vcDone record, per view, when the first correct replica asked for it
	// and when the first became active in it.
	vcStart map[uint64]int64
	vcDone  map[uint64]bool
	// rt3 is the red team's coalition state and its crash scenario (redteam3.go).
	rt3 *rt3Coalition
	// rt4 is the fourth red team's crash scenario (redteam4.go).
	rt4 *rt4Coalition
}

func (w *world) ticks() int64 { return w.now / tickUnits }

func (w *world) trace(format string, args ...any) {
	fmt.Fprintf(w.opts.Trace, "t=%d.%d %s\n", w.now/tickUnits, w.now%tickUnits, fmt.Sprintf(format, args...))
}

func (w *world) addrName(a int) string {
	switch {
	case a >= w.n:
		return fmt.Sprintf("client%d", a-w.n+1)
	case w.res.Strategies[a] != "":
		return fmt.Sprintf("r%d(%s)", a, w.res.Strategies[a])
	default:
		return fmt.Sprintf("r%d", a)
	}
}

// describeFrame summarises a frame for traces without verifying it.
func describeFrame(frame []byte) string {
	env, err := pbft.DecodeEnvelope(frame, pbft.DefaultLimits())
	if err != nil {
		return fmt.Sprintf("undecodable %d bytes", len(frame))
	}
	m := &env.Msg
	var body struct {
		_    struct{} `cbor:",toarray"`
		A, B uint64
		D    []byte
	}
	switch m.Type {
	case pbft.MsgPrePrepare, pbft.MsgPrepare, pbft.MsgCommit:
		if pbft.Unmarshal(m.Body, &body) == nil && len(body.D) >= 4 {
			return fmt.Sprintf("%s from %d v=%d n=%d d=%x batch=%d", m.Type, m.From, body.A, body.B, body.D[:4], len(env.Batch))
		}
	case pbft.MsgCheckpoint:
		var c pbft.Checkpoint
		if pbft.Unmarshal(m.Body, &c) == nil {
			return fmt.Sprintf("checkpoint from %d n=%d state=%s", m.From, c.Seq, c.State.Short())
		}
	case pbft.MsgStateRequest:
		var sr pbft.StateRequest
		if pbft.Unmarshal(m.Body, &sr) == nil {
			return fmt.Sprintf("state-request from %d n>=%d chunk=%d", m.From, sr.Seq, sr.Chunk)
		}
	case pbft.MsgStateResponse:
		var sr pbft.StateResponse
		if pbft.Unmarshal(m.Body, &sr) == nil {
			return fmt.Sprintf("state-response from %d n=%d chunk=%d/%d proof=%d", m.From, sr.Seq, sr.Chunk, sr.Chunks, len(sr.Proof))
		}
	case pbft.MsgViewChange:
		var vc pbft.ViewChange
		if pbft.Unmarshal(m.Body, &vc) == nil {
			return fmt.Sprintf("view-change from %d v=%d stable=%d certs=%d", m.From, vc.NewView, vc.StableSeq, len(vc.Prepared))
		}
	case pbft.MsgRequest:
		var r pbft.Request
		if pbft.Unmarshal(m.Body, &r) == nil {
			return fmt.Sprintf("request client=%d t=%d", r.Client, r.Timestamp)
		}
	case pbft.MsgReply:
		var r pbft.Reply
		if pbft.Unmarshal(m.Body, &r) == nil {
			return fmt.Sprintf("reply from %d client=%d t=%d result=%x", m.From, r.Client, r.Timestamp, crypto.Hash(r.Result).Short())
		}
	}
	return fmt.Sprintf("%s from %d (%d bytes)", m.Type, m.From, len(frame))
}

func (w *world) push(e *event) {
	w.seq++
	e.seq = w.seq
	heap.Push(&w.queue, e)
}

// send puts a frame on the network: before the heal it may be lost, duplicated, held by
// a partition or delayed (which reorders); after it, it arrives within 3 units.
func (w *world) send(from, to int, frame []byte) {
	healed := w.now >= int64(w.opts.HealTick)*tickUnits
	copies := 1
	if !healed {
		for _, p := range w.parts {
			if w.now >= p.start && w.now < p.end && p.isolated[from] != p.isolated[to] {
				w.res.Drops["network: partition"]++
				return
			}
		}
		if w.rng.Float64() < w.opts.DropRate {
			w.res.Drops["network: dropped"]++
			return
		}
		if w.rng.Float64() < w.opts.DupRate {
			copies = 2
		}
	}
	for i := 0; i < copies; i++ {
		delay := int64(1 + w.rng.IntN(3))
		if !healed {
			delay = int64(1 + w.rng.IntN(max(1, w.opts.MaxDelay)))
		}
		w.push(&event{at: w.now + delay, to: to, from: from, frame: frame})
	}
}

// sendOut routes a core's outbound message.
func (w *world) sendOut(from int, out pbft.Outbound) {
	frame := pbft.EncodeEnvelope(out.Env)
	switch out.To.Kind {
	case pbft.ToReplica:
		if int(out.To.Replica) < w.n {
			w.send(from, int(out.To.Replica), frame)
		}
	case pbft.ToAllReplicas:
		for i := 0; i < w.n; i++ {
			if i != from {
				w.send(from, i, frame)
			}
		}
	case pbft.ToClient:
		if c := int(out.To.Client) - 1; c >= 0 && c < len(w.clients) {
			w.send(from, w.n+c, frame)
		}
	}
}

// Strategies are the Byzantine replica behaviours the simulator knows. The backup
// strategies misbehave in any position; PrimaryStrategies misbehave only as primary and
// make the primary of view 0 one of the faulty replicas.
var (
	BackupStrategies = []string{"silent", "bad-signature", "garbage", "replay", "collude", "equivocate", "view-change-spam",
		"lying-checkpoint", "lying-checkpoint-half", "repropose", "watermark-edge", "mutate"}
	PrimaryStrategies = []string{"silent-primary", "slow-primary", "censor"}
	Strategies        = append(append([]string{}, BackupStrategies...), PrimaryStrategies...)
)

// Run simulates one seeded run and checks it.
func Run(opts Options) (res Result) {
	if opts.Swarm {
		opts = swarmOptions(opts)
	}
	res = Result{Seed: opts.Seed, Drops: make(map[string]int), Config: opts.Describe()}
	defer func() {
		// A broken invariant of a correct replica's core (pbft.InvariantViolation) is a
		// bug the seed found: a violation, with the seed's replay command, not a crash
		// of the sweep.
		if p := recover(); p != nil {
			res.Violations = append(res.Violations, fmt.Sprintf("panic: %v", p))
		}
	}()
	w, err := newWorld(opts, &res)
	if err != nil {
		res.Violations = append(res.Violations, "setup: "+err.Error())
		return res
	}
	w.run()
	return res
}

func newWorld(opts Options, res *Result) (*world, error) {
	q, err := pbft.NewQuorum(opts.Replicas)
	if err != nil {
		return nil, err
	}
	if opts.Byzantine < 0 || opts.Byzantine >= opts.Replicas {
		return nil, fmt.Errorf("byzantine: %d of %d replicas", opts.Byzantine, opts.Replicas)
	}
	if opts.Strategy != "all" && !KnownStrategy(opts.Strategy) {
		return nil, fmt.Errorf("strategy: unknown %q (want all or one of %s)", opts.Strategy, strings.Join(Strategies, ", "))
	}
	if opts.Clients <= 0 || opts.Requests < 0 {
		return nil, fmt.Errorf("clients: need at least one")
	}
	w := &world{
		opts: opts, n: opts.Replicas, quorum: q, res: res,
		rng:       rand.New(rand.NewPCG(opts.Seed, 0x9e3779b97f4a7c15)),
		limits:    pbft.DefaultLimits(),
		coalition: make(map[slot]map[int]crypto.Digest),
		vcStart:   make(map[uint64]int64),
		vcDone:    make(map[uint64]bool),
	}
	clientIDs := make([]pbft.ClientID, opts.Clients)
	for j := range clientIDs {
		clientIDs[j] = pbft.ClientID(j + 1)
	}
	if w.keys, err = newKeys(opts.Scheme, opts.FastCrypto, opts.Seed, w.n, clientIDs); err != nil {
		return nil, err
	}
	w.keys.ring = newMemoRing(w.keys.ring)

	// Choose the faulty replicas: backups unless the primary of view 0 must be one.
	faulty := make([]bool, w.n)
	cands := w.rng.Perm(w.n - 1)
	for i := range cands {
		cands[i]++
	}
	picked := 0
	if slices.Contains(PrimaryStrategies, opts.Strategy) {
		opts.FaultyPrimary = true
		w.opts.FaultyPrimary = true
	}
	if opts.FaultyPrimary && opts.Byzantine > 0 {
		faulty[0] = true
		picked++
	}
	for _, c := range cands {
		if picked == opts.Byzantine {
			break
		}
		faulty[c] = true
		picked++
	}
	res.Strategies = make([]string, w.n)
	correct := make([]bool, w.n)
	for i := 0; i < w.n; i++ {
		correct[i] = !faulty[i]
		if faulty[i] {
			s := opts.Strategy
			if s == "all" {
				s = Strategies[w.rng.IntN(len(Strategies))]
			}
			res.Strategies[i] = s
		}
	}
	w.check = newChecker(w.n, correct, res)

	for i := 0; i < w.n; i++ {
		cfg := w.replicaConfig(i)
		if faulty[i] {
			b, err := newByzantine(w, i, res.Strategies[i], cfg)
			if err != nil {
				return nil, err
			}
			w.nodes = append(w.nodes, b)
			continue
		}
		r, err := newReplicaNode(w, i, cfg)
		if err != nil {
			return nil, err
		}
		w.nodes = append(w.nodes, r)
	}
	per := opts.Requests / opts.Clients
	for j, id := range clientIDs {
		quota := per
		if j < opts.Requests%opts.Clients {
			quota++
		}
		c := newClient(w, id, w.n+j, quota)
		w.clients = append(w.clients, c)
		w.nodes = append(w.nodes, c)
	}
	for p := 0; p < opts.Partitions && opts.HealTick > 0; p++ {
		start := int64(w.rng.IntN(opts.HealTick)) * tickUnits
		dur := int64(20+w.rng.IntN(130)) * tickUnits
		iso := make([]bool, len(w.nodes))
		for a := range iso {
			iso[a] = w.rng.IntN(3) == 0
		}
		w.parts = append(w.parts, partition{start: start, end: start + dur, isolated: iso})
	}
	var correctIDs []int
	for i := 0; i < w.n; i++ {
		if correct[i] {
			correctIDs = append(correctIDs, i)
		}
	}
	for k := 0; k < opts.Crashes && opts.HealTick > 0 && len(correctIDs) > 0; k++ {
		id := correctIDs[w.rng.IntN(len(correctIDs))]
		start := int64(w.rng.IntN(opts.HealTick)) * tickUnits
		dur := int64(20+w.rng.IntN(130)) * tickUnits
		w.push(&event{at: start, fault: crash, to: id})
		w.push(&event{at: start + dur, fault: restart, to: id})
	}
	for a := range w.nodes {
		w.push(&event{at: int64(w.rng.IntN(tickUnits)), tick: true, to: a})
	}
	return w, nil
}

func (w *world) replicaConfig(i int) pbft.Config {
	cfg := pbft.DefaultConfig(pbft.ReplicaID(i), w.n, w.keys.signers[nodeKey{id: uint32(i)}])
	cfg.CheckpointInterval = w.opts.CheckpointInterval
	cfg.LogWindow = w.opts.LogWindow
	cfg.MaxBatchRequests = w.opts.MaxBatch
	cfg.MaxInFlightBatches = w.opts.MaxInFlight
	cfg.RetransmitTicks = 10
	cfg.ViewChangeTicks = w.opts.ViewChangeTicks
	// Small chunks, so a state transfer takes several (the app state is a few KiB).
	cfg.StateChunkBytes = 256
	return cfg
}

// verifier returns a node's verifier: the real Verifier, with a cache of its own, over
// the run's memoised key ring (see memoRing).
func (w *world) verifier() pbft.Verifier {
	return pbft.Verifier{Keys: w.keys.ring, N: w.n, Limits: w.limits, Cache: verifiedSet{}}
}

func (w *world) allDone() bool {
	for _, c := range w.clients {
		if !c.finished() {
			return false
		}
	}
	return true
}

func (w *world) run() {
	deadline := int64(w.opts.HealTick+w.opts.LivenessTicks) * tickUnits
	draining := false
	for len(w.queue) > 0 && len(w.res.Violations) == 0 {
		e := heap.Pop(&w.queue).(*event)
		if e.at > deadline {
			w.now = deadline
			break
		}
		w.now = e.at
		if e.fault != noFault {
			w.crashOrRestart(e)
		} else if e.sync {
			w.nodes[e.to].(*replicaNode).sync(e.gen)
		} else if e.tick {
			w.nodes[e.to].tick()
			w.push(&event{at: w.now + tickUnits, tick: true, to: e.to})
		} else {
			w.res.Delivered++
			if w.opts.Trace != nil {
				w.trace("deliver %s -> %s: %s", w.addrName(e.from), w.addrName(e.to), describeFrame(e.frame))
			}
			w.nodes[e.to].receive(e.from, e.frame)
		}
		if !draining && w.allDone() {
			w.res.CompletionTick = int(w.ticks())
			// Every request completed: go on until the correct replicas converge.
			draining = true
			deadline = w.now + int64(w.opts.DrainTicks)*tickUnits
		}
		if draining && w.converged() {
			break
		}
	}
	w.res.Ticks = int(w.ticks())
	for _, c := range w.clients {
		w.res.Completed += c.done
	}
	w.check.finish()
	if len(w.res.Violations) == 0 && draining && !w.converged() {
		w.res.LivenessFailure = fmt.Sprintf("correct replicas did not converge within %d ticks after the last request:%s",
			w.opts.DrainTicks, w.positions())
	}
	if len(w.res.Violations) == 0 && w.converged() {
		states := map[int][]byte{}
		for i, nd := range w.nodes[:w.n] {
			if r, ok := nd.(*replicaNode); ok && r.core.Status().Executed == w.maxExecuted() && len(r.later) == 0 {
				if st, err := r.app.Snapshot(); err == nil {
					states[i] = st
				}
			}
		}
		w.check.converged(states, w.maxExecuted())
	}
	if len(w.res.Violations) == 0 && !w.allDone() {
		total := 0
		for _, c := range w.clients {
			total += c.quota
		}
		w.res.LivenessFailure = fmt.Sprintf("%d of %d requests incomplete %d ticks after the heal (tick %d):%s",
			total-w.res.Completed, total, w.opts.LivenessTicks, w.res.Ticks, w.positions())
	}
}

// crashOrRestart applies a crash or restart event to a correct replica. A crash while
// down or a restart while up (two crashes drawn for one replica overlap) does nothing.
func (w *world) crashOrRestart(e *event) {
	r := w.nodes[e.to].(*replicaNode)
	switch {
	case e.fault == crash && !r.down:
		if w.opts.Trace != nil {
			w.trace("r%d crashes", r.id)
		}
		r.crash()
	case e.fault == restart && r.down:
		if err := r.restart(); err != nil {
			w.check.violate("replica %d: restart from its records: %v", r.id, err)
			return
		}
		w.res.Restarts++
		if w.opts.Trace != nil {
			st := r.core.Status()
			kept, _ := r.disk.MemStorage.Load()
			w.trace("r%d restarts from %d records at n=%d view %d (active %v)", r.id, len(kept), st.Executed, st.View, st.Active)
		}
	}
}

// noteView records view changes as correct replicas go through them.
func (w *world) noteView(st pbft.Status) {
	if st.View == 0 {
		return
	}
	if _, ok := w.vcStart[st.View]; !ok {
		w.vcStart[st.View] = w.now
	}
	if st.Active && !w.vcDone[st.View] {
		w.vcDone[st.View] = true
		w.res.ViewChanges++
		w.res.RecoveryTicks = append(w.res.RecoveryTicks, int((w.now-w.vcStart[st.View])/tickUnits))
	}
}

// maxExecuted is the highest seq any correct replica executed.
func (w *world) maxExecuted() uint64 {
	m := uint64(0)
	for _, nd := range w.nodes[:w.n] {
		if r, ok := nd.(*replicaNode); ok {
			m = max(m, r.core.Status().Executed)
		}
	}
	return m
}

// converged reports whether the correct replicas caught up: every one that is active
// in its view executed up to the same seq, the highest; one still changing view alone
// (its timer fired while it was cut off, and a working primary gives the others no
// reason to follow; it rejoins at the next view change) or split off by an
// equivocating primary reached at least the latest stable checkpoint.
func (w *world) converged() bool {
	m, stable, active := w.maxExecuted(), uint64(0), 0
	for _, nd := range w.nodes[:w.n] {
		if r, ok := nd.(*replicaNode); ok {
			stable = max(stable, r.core.Status().LowMark)
		}
	}
	for _, nd := range w.nodes[:w.n] {
		r, ok := nd.(*replicaNode)
		if !ok {
			continue
		}
		st := r.core.Status()
		switch {
		case len(r.later) > 0:
			// Its application is behind its core (work waits for the disk): not yet.
			return false
		case st.Active && st.Executed != m && !(st.Executed >= stable && w.splitOff(r.id, st.View, st.Executed+1)):
			return false
		case !st.Active && st.Executed < stable:
			return false
		case st.Active:
			active++
		}
	}
	return active > 0
}

// splitOff reports whether an equivocating primary showed replica id, at (view, n),
// another batch than the one correct replicas executed there: it prepared that batch,
// cannot commit the other, and (PBFT) catches up only at the next stable checkpoint.
func (w *world) splitOff(id int, view, n uint64) bool {
	plan, ok := w.coalition[slot{view, n}]
	if !ok {
		return false
	}
	exec, ok := w.check.batchAt[n]
	return ok && plan[id] != exec.digest
}

func (w *world) positions() string {
	var b strings.Builder
	for i, nd := range w.nodes[:w.n] {
		if r, ok := nd.(*replicaNode); ok {
			st := r.core.Status()
			fmt.Fprintf(&b, " r%d at n=%d (view %d, active %v, stable %d)", i, st.Executed, st.View, st.Active, st.LowMark)
		}
	}
	return b.String()
}

// replicaNode is a correct replica: the real core under the runtime's own driver
// (pbft/driver: the Ready contract, the batch executor), the key-value application and
// the real decode-and-verify path, over a simulated store and network.
type replicaNode struct {
	w        *world
	id       int
	cfg      pbft.Config
	core     *pbft.Replica
	drv      *driver.Driver
	app      *kvstore.Store
	verifier pbft.Verifier
	// disk is the replica's durable store: all that survives a crash.
	disk *simDisk
	// pending is what the driver handed to its Persist stage and the simulated disk has
	// not yet made durable (with Options.DiskDelay): lost, or torn, by a crash; its
	// messages wait for it.
	pending []driver.Durable
	// later is work that waits for pending to be durable (driver.Work.After).
	later   []driver.Work
	syncing bool   // a sync event is queued
	syncGen uint64 // which one: a crash forgets it
	// down is true between a crash and the restart: no ticks, frames to it are lost.
	down bool
	// breakDurability sends messages before their records are durable (tests only).
	breakDurability bool
}

func newReplicaNode(w *world, id int, cfg pbft.Config) (*replicaNode, error) {
	core, err := pbft.NewReplica(cfg)
	if err != nil {
		return nil, err
	}
	r := &replicaNode{w: w, id: id, cfg: cfg, app: kvstore.New(), verifier: w.verifier(), disk: &simDisk{},
		breakDurability: breakDurability}
	r.attach(core)
	return r, nil
}

// attach puts core under a new driver, with the simulator's store, network and checker.
func (r *replicaNode) attach(core *pbft.Replica) {
	r.core = core
	r.drv = driver.New(core, r.disk, simTransport{r}, driver.Observer{
		Drop: func(d pbft.Drop) {
			r.w.res.Drops["core: "+d.Reason]++
			if r.w.opts.Trace != nil {
				r.w.trace("r%d drops %s from %d: %s", r.id, d.Type, d.From, d.Reason)
			}
		},
		Install: func(in *pbft.Install, own bool) {
			if r.w.rt3 != nil {
				r.w.rt3.onInstall(r, in, own)
			}
			if own {
				if r.w.opts.Trace != nil {
					r.w.trace("r%d installs its own checkpoint n=%d", r.id, in.Seq)
				}
				return
			}
			r.w.res.StateTransfers++
			if r.w.opts.Trace != nil {
				r.w.trace("r%d installs checkpoint state n=%d", r.id, in.Seq)
			}
			r.w.check.onInstall(r.id, in.Seq)
		},
		Executed: func(b *pbft.Batch, results [][]byte) {
			r.w.check.onExecute(r.id, b, results)
			if r.w.rt3 != nil {
				r.w.rt3.onExecuted(r, b, results)
			}
			if r.w.opts.Trace != nil {
				r.w.trace("r%d executes n=%d v=%d d=%s (%d requests)", r.id, b.Seq, b.View, b.Digest.Short(), len(b.Requests))
			}
		},
	})
	if r.breakDurability {
		driver.UnsafeSendBeforeDurable(r.drv)
	}
}

// simTransport puts a correct replica's messages on the simulated network, after the
// checker has seen what the replica signed.
type simTransport struct{ r *replicaNode }

func (t simTransport) Send(out *pbft.Outbound) {
	r := t.r
	if out.Env.Msg.From == uint32(r.id) && out.To.Kind != pbft.ToClient {
		r.w.check.onSigned(r.id, &out.Env.Msg)
	}
	r.w.sendOut(r.id, *out)
}

// simDisk is a correct replica's durable records: the driver's in-memory store, whose
// Load hands them back through their storage encoding, as a real store does.
type simDisk struct{ driver.MemStorage }

func (d *simDisk) Load() ([]pbft.Record, error) {
	kept, _ := d.MemStorage.Load()
	recs := make([]pbft.Record, len(kept))
	for i := range kept {
		if err := pbft.Unmarshal(pbft.Marshal(kept[i]), &recs[i]); err != nil {
			return nil, fmt.Errorf("record %d: %w", i, err)
		}
	}
	return recs, nil
}

// crash stops the replica. What the disk had not synced is lost; with torn writes, a
// prefix of it reached the disk (a record torn in the middle is one the store's
// checksums drop, so a prefix is what a restart sees). None of its messages left.
func (r *replicaNode) crash() {
	r.down = true
	if r.w.opts.TornWrites && len(r.pending) > 0 {
		var recs []pbft.Record
		for _, it := range r.pending {
			recs = append(recs, it.Records...)
		}
		if k := r.w.rng.IntN(len(recs) + 1); k > 0 {
			r.disk.Append(recs[:k])
		}
	}
	r.pending, r.later, r.syncing = nil, nil, false
}

// restart rebuilds the replica from its records alone, as the runtime does after a
// crash: a new core restores from them through the driver, and the application starts
// empty until the driver installs the replica's own checkpoint state.
func (r *replicaNode) restart() error {
	core, err := pbft.NewReplica(r.cfg)
	if err != nil {
		return err
	}
	r.verifier = r.w.verifier()
	r.attach(core)
	if _, err := r.drv.Restore(&r.verifier); err != nil {
		return err
	}
	r.app, r.down = kvstore.New(), false
	r.w.check.onRestart(r.id, core.Status().Executed)
	r.flush()
	return nil
}

func (r *replicaNode) receive(from int, frame []byte) {
	if r.down {
		r.w.res.Drops["network: replica down"]++
		return
	}
	env, err := pbft.DecodeEnvelope(frame, r.w.limits)
	if err != nil {
		r.w.res.Drops["decode"]++
		return
	}
	m, err := r.verifier.Open(env)
	if err != nil {
		r.w.res.Drops["verify: "+reasonOf(err)]++
		return
	}
	r.core.Step(m)
	r.flush()
}

func reasonOf(err error) string {
	switch {
	case strings.Contains(err.Error(), pbft.ErrBadSignature.Error()):
		return "bad signature"
	default:
		return "malformed"
	}
}

// breakDurability, when set (by tests only), makes every correct replica's driver send
// messages before their records are durable (driver.UnsafeSendBeforeDurable).
var breakDurability bool

// tickHook, when set (by tests only), runs before each tick of a correct replica.
var tickHook func(*replicaNode)

func (r *replicaNode) tick() {
	if r.down {
		return
	}
	if tickHook != nil {
		tickHook(r)
	}
	r.core.Tick()
	r.flush()
}

// flush runs the driver's stages as the runtime's goroutines would: records to the
// simulated disk (at once, or after a disk delay that lets the replica go on stepping
// meanwhile, as the runtime's persister does), work to the application in order.
func (r *replicaNode) flush() {
	for {
		durable, work := r.drv.Advance()
		if len(durable) == 0 && len(work) == 0 {
			break
		}
		if len(durable) > 0 {
			if r.w.opts.DiskDelay == 0 {
				if err := r.drv.Persist(durable); err != nil {
					r.w.check.violate("replica %d: %v", r.id, err)
					return
				}
			} else {
				r.pending = append(r.pending, durable...)
				if !r.syncing {
					r.syncing = true
					r.syncGen++
					r.w.push(&event{at: r.w.now + 1 + int64(r.w.rng.IntN(r.w.opts.DiskDelay)), sync: true, to: r.id, gen: r.syncGen})
				}
			}
		}
		for _, w := range work {
			if w.Install != nil && !w.Own {
				r.w.check.onAdopt(r.id, w.Install.Seq)
			}
		}
		if len(r.pending) > 0 {
			r.later = append(r.later, work...)
			if r.w.rt4 != nil && r.w.rt4.onDefer(r, work) {
				r.crash()
				return
			}
			break
		}
		if err := r.drv.ApplyAll(r.app, work); err != nil {
			r.w.check.violate("replica %d: %v", r.id, err)
			return
		}
	}
	st := r.core.Status()
	if st.LogSize > r.w.res.MaxLogSize {
		r.w.res.MaxLogSize = st.LogSize
	}
	r.w.noteView(st)
}

// sync is the simulated disk finishing a write: everything pending becomes durable in
// one Append (group commit), and its messages leave.
func (r *replicaNode) sync(gen uint64) {
	if r.down || !r.syncing || gen != r.syncGen {
		return
	}
	items, work := r.pending, r.later
	r.pending, r.later, r.syncing = nil, nil, false
	if err := r.drv.Persist(items); err != nil {
		r.w.check.violate("replica %d: %v", r.id, err)
		return
	}
	if r.w.rt4 != nil && r.w.rt4.afterPersist(r, items, work) {
		r.crash()
		return
	}
	// The work that waited for these records runs now, and what it produces goes on.
	if err := r.drv.ApplyAll(r.app, work); err != nil {
		r.w.check.violate("replica %d: %v", r.id, err)
		return
	}
	r.flush()
}
