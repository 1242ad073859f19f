package pbft

// A deterministic in-package test harness for the protocol core: n replicas with
// Ed25519 keys, a manual message queue (deliver, drop, hold, reorder, inject), a trivial
// deterministic application and helpers to forge any replica's messages. Every frame
// goes through EncodeEnvelope, DecodeEnvelope and Verifier.Open as in a real runtime.
// No goroutines, no clocks, no sleeps: a scenario is a pure function of its inputs.

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/pbftkit/pbft/crypto"
)

const (
	testClusterName = "test"
	// clientNode is the sender of a frame a client sent.
	clientNode = -1
	// testClients is how many clients (ids 1..testClients) have registered keys.
	testClients = 16
	// maxDeliveries bounds one run of the queue: a scenario that does not quiesce is a bug.
	maxDeliveries = 1_000_000
)

// tMsg is one frame in flight.
type tMsg struct {
	from   int // sending replica, or clientNode
	to     int // receiving replica
	frame  []byte
	forged bool // injected by the test as a Byzantine node: ignores isolation
}

func (m tMsg) env() *Envelope {
	e, err := DecodeEnvelope(m.frame, DefaultLimits())
	if err != nil {
		panic(fmt.Sprintf("harness: undecodable frame in queue: %v", err))
	}
	return e
}

func (m tMsg) info() msgInfo { return infoOf(m.env()) }

// msgInfo is the decoded header of a protocol message, for filters and assertions.
type msgInfo struct {
	Type   MsgType
	From   uint32
	View   uint64
	Seq    uint64
	Digest crypto.Digest // batch digest, or state digest of a checkpoint
	Chunk  uint32        // state requests and responses
}

func infoOf(env *Envelope) msgInfo {
	i := msgInfo{Type: env.Msg.Type, From: env.Msg.From}
	switch env.Msg.Type {
	case MsgPrePrepare, MsgPrepare, MsgCommit:
		// The three bodies have the same shape.
		var b PrePrepare
		if Unmarshal(env.Msg.Body, &b) == nil {
			i.View, i.Seq, i.Digest = b.View, b.Seq, b.Digest
		}
	case MsgCheckpoint:
		var b Checkpoint
		if Unmarshal(env.Msg.Body, &b) == nil {
			i.Seq, i.Digest = b.Seq, b.State
		}
	case MsgStateRequest:
		var b StateRequest
		if Unmarshal(env.Msg.Body, &b) == nil {
			i.Seq, i.Chunk = b.Seq, b.Chunk
		}
	case MsgStateResponse:
		var b StateResponse
		if Unmarshal(env.Msg.Body, &b) == nil {
			i.Seq, i.Chunk = b.Seq, b.Chunk
		}
	}
	return i
}

// isType returns a message filter on the protocol message type.
func isType(ts ...MsgType) func(tMsg) bool {
	return func(m tMsg) bool { return slices.Contains(ts, m.env().Msg.Type) }
}

// reqKey names one client request.
type reqKey struct {
	c  ClientID
	ts uint64
}

// tApp is a trivial deterministic application: each operation replaces the state by
// SHA-256(state || op) and returns the new state as its result; the snapshot is the
// state itself.
type tApp struct {
	state    []byte
	batches  []uint64                 // sequence numbers of the batches run, in order
	digests  map[uint64]crypto.Digest // batch digest run at each sequence number
	runs     map[reqKey]int           // how many times each request ran
	ops      int                      // operations run in total
	installs []uint64                 // checkpoint states installed
}

func newTApp() *tApp {
	g := sha256.Sum256([]byte("genesis"))
	return &tApp{state: g[:], digests: make(map[uint64]crypto.Digest), runs: make(map[reqKey]int)}
}

func (a *tApp) apply(op []byte) []byte {
	h := sha256.New()
	h.Write(a.state)
	h.Write(op)
	a.state = h.Sum(nil)
	a.ops++
	return bytes.Clone(a.state)
}

func (a *tApp) run(b Batch) Executed {
	ex := Executed{Seq: b.Seq, Results: make([][]byte, len(b.Requests))}
	for i, m := range b.Requests {
		a.runs[reqKey{m.Request.Client, m.Request.Timestamp}]++
		ex.Results[i] = a.apply(m.Request.Op)
	}
	a.batches = append(a.batches, b.Seq)
	a.digests[b.Seq] = b.Digest
	if b.Checkpoint {
		ex.Snapshot = bytes.Clone(a.state)
	}
	return ex
}

func (a *tApp) restore(in Install) {
	a.state = bytes.Clone(in.App)
	a.installs = append(a.installs, in.Seq)
}

// tReply is a reply a replica sent to a client.
type tReply struct {
	from  ReplicaID
	reply Reply
}

// tCluster is n replicas, their applications and the network between them.
type tCluster struct {
	t   testing.TB
	n   int
	lim Limits

	cfgs       []Config
	signers    []*KeySigner
	clientKeys map[ClientID]*KeySigner
	ring       *PublicKeyRing
	reps       []*Replica
	vers       []*Verifier
	apps       []*tApp

	queue    []tMsg
	held     []tMsg
	isolated []bool
	// dropIf loses the frames it returns true for; holdIf parks them in held.
	dropIf func(tMsg) bool
	holdIf func(tMsg) bool

	nextTS map[ClientID]uint64

	// async replicas leave batches in pendingExec until the test calls execute: the
	// runtime's application may lag behind the core.
	async       []bool
	pendingExec [][]Batch

	// What the replicas did, for assertions.
	out         [][]Outbound // every Outbound each replica emitted, unexpanded
	replies     []tReply
	notices     []SupersededMsg
	drops       [][]Drop
	stables     [][]*StableCheckpoint
	persisted   []map[string]bool
	records     [][]Record // what each replica asked to persist: its disk, compacted at each stable checkpoint
	allRecords  [][]Record // the same, never compacted
	down        []bool     // crashed replicas: no ticks, no frames, records kept
	unpersisted []string   // own votes sent before they were persisted
	maxLog      []int
	maxCkpts    []int
	delivered   int
	// trace is every output of every replica, in order, encoded: the determinism witness.
	trace [][]byte
	// events, when set, gets one readable line per delivery, execution, reply, stable
	// checkpoint, install and drop (the data-driven interaction tests print them).
	events func(format string, args ...any)
}

// event reports a readable line to events, if set.
func (c *tCluster) event(format string, args ...any) {
	if c.events != nil {
		c.events(format, args...)
	}
}

// testConfig is the configuration tests use unless they change it: small intervals so
// that checkpoints, window limits and garbage collection happen within a few requests.
func testConfig(cfg *Config) {
	cfg.CheckpointInterval = 4
	cfg.LogWindow = 8
	cfg.MaxBatchRequests = 1
	cfg.MaxBatchBytes = 1 << 16
	cfg.MaxInFlightBatches = 8
	cfg.ReplyWindow = 4
	cfg.RetransmitTicks = 4
}

func newCluster(t testing.TB, n int, opts ...func(*Config)) *tCluster {
	t.Helper()
	sch, err := crypto.SchemeByName("Ed25519")
	if err != nil {
		t.Fatalf("scheme: %v", err)
	}
	c := &tCluster{
		t: t, n: n, lim: DefaultLimits(),
		clientKeys:  make(map[ClientID]*KeySigner),
		ring:        &PublicKeyRing{Cluster: testClusterName, Clients: make(map[ClientID]*crypto.PublicKey)},
		isolated:    make([]bool, n),
		async:       make([]bool, n),
		pendingExec: make([][]Batch, n),
		nextTS:      make(map[ClientID]uint64),
		out:         make([][]Outbound, n),
		drops:       make([][]Drop, n),
		stables:     make([][]*StableCheckpoint, n),
		persisted:   make([]map[string]bool, n),
		records:     make([][]Record, n),
		allRecords:  make([][]Record, n),
		down:        make([]bool, n),
		maxLog:      make([]int, n),
		maxCkpts:    make([]int, n),
	}
	for i := 0; i < n; i++ {
		k := sch.DeriveKey([]byte(fmt.Sprintf("replica-%d", i)))
		c.signers = append(c.signers, &KeySigner{Cluster: testClusterName, Key: k})
		c.ring.Replicas = append(c.ring.Replicas, k.Public())
		c.persisted[i] = make(map[string]bool)
	}
	for id := ClientID(1); id <= testClients; id++ {
		k := sch.DeriveKey([]byte(fmt.Sprintf("client-%d", id)))
		c.clientKeys[id] = &KeySigner{Cluster: testClusterName, Key: k}
		c.ring.Clients[id] = k.Public()
	}
	for i := 0; i < n; i++ {
		cfg := DefaultConfig(ReplicaID(i), n, c.signers[i])
		testConfig(&cfg)
		for _, o := range opts {
			o(&cfg)
		}
		r, err := NewReplica(cfg)
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		c.cfgs = append(c.cfgs, cfg)
		c.reps = append(c.reps, r)
		c.vers = append(c.vers, &Verifier{Keys: c.ring, N: n, Limits: c.lim})
		c.apps = append(c.apps, newTApp())
	}
	return c
}

// ---- network ----

func (c *tCluster) isolate(i int)   { c.isolated[i] = true }
func (c *tCluster) reconnect(i int) { c.isolated[i] = false }

func (c *tCluster) enqueue(m tMsg) {
	if m.to < 0 || m.to >= c.n {
		c.t.Fatalf("harness: frame from %d to unknown replica %d", m.from, m.to)
	}
	if !m.forged && ((m.from >= 0 && c.isolated[m.from]) || c.isolated[m.to]) {
		return
	}
	if c.dropIf != nil && c.dropIf(m) {
		return
	}
	if c.holdIf != nil && c.holdIf(m) {
		c.held = append(c.held, m)
		return
	}
	c.queue = append(c.queue, m)
}

// release moves the held frames that pred accepts (all when nil) back to the queue.
func (c *tCluster) release(pred func(tMsg) bool) {
	var keep []tMsg
	for _, m := range c.held {
		if pred == nil || pred(m) {
			c.queue = append(c.queue, m)
		} else {
			keep = append(keep, m)
		}
	}
	c.held = keep
}

// deliver hands one frame to its receiver exactly as a runtime would.
func (c *tCluster) deliver(m tMsg) {
	c.t.Helper()
	env, err := DecodeEnvelope(m.frame, c.lim)
	if err != nil {
		c.t.Fatalf("replica %d: decode frame from %d: %v", m.to, m.from, err)
	}
	msg, err := c.vers[m.to].Open(env)
	if err != nil {
		c.t.Fatalf("replica %d: open %s from %d: %v", m.to, env.Msg.Type, env.Msg.From, err)
	}
	c.delivered++
	if c.events != nil {
		c.event("%s -> r%d %s", nodeName(m.from), m.to, describe(env))
	}
	c.reps[m.to].Step(msg)
	c.process(m.to)
}

// run delivers queued frames in FIFO order until the network is quiescent.
func (c *tCluster) run() {
	c.t.Helper()
	for steps := 0; len(c.queue) > 0; steps++ {
		if steps > maxDeliveries {
			c.t.Fatalf("harness: no quiescence after %d deliveries", steps)
		}
		m := c.queue[0]
		c.queue = c.queue[1:]
		c.deliver(m)
	}
	c.queue = nil
}

// runWhere delivers, in FIFO order, only the frames pred accepts (including ones that
// deliveries produce) until none is left; the others stay queued in their order.
func (c *tCluster) runWhere(pred func(tMsg) bool) {
	c.t.Helper()
	for steps := 0; ; steps++ {
		if steps > maxDeliveries {
			c.t.Fatalf("harness: no quiescence after %d deliveries", steps)
		}
		i := slices.IndexFunc(c.queue, pred)
		if i < 0 {
			return
		}
		m := c.queue[i]
		c.queue = slices.Delete(c.queue, i, i+1)
		c.deliver(m)
	}
}

// tick advances the logical clock of the given replicas by one tick.
func (c *tCluster) tick(ids ...int) {
	for _, i := range ids {
		if c.down[i] {
			continue
		}
		c.reps[i].Tick()
		c.process(i)
	}
}

// tickAll ticks every replica (isolated ones too: their clock runs, their frames are
// lost) and delivers until quiescent, rounds times.
func (c *tCluster) tickAll(rounds int) {
	c.t.Helper()
	for k := 0; k < rounds; k++ {
		for i := 0; i < c.n; i++ {
			c.tick(i)
		}
		c.run()
	}
}

// runUntil delivers until quiescent, then ticks every replica, until cond holds; it
// reports whether cond held within maxRounds rounds of ticks.
func (c *tCluster) runUntil(maxRounds int, cond func() bool) bool {
	c.t.Helper()
	c.run()
	for k := 0; k < maxRounds; k++ {
		if cond() {
			return true
		}
		c.tickAll(1)
	}
	return cond()
}

// crash stops replica i: its volatile state is gone and frames to it are lost; what
// it persisted stays.
func (c *tCluster) crash(i int) {
	c.down[i], c.isolated[i] = true, true
	c.pendingExec[i] = nil
}

// restart brings crashed replica i back from its records, as a runtime does: a new
// replica and application, Restore, then the usual Ready loop.
func (c *tCluster) restart(i int) {
	c.t.Helper()
	r, err := NewReplica(c.cfgs[i])
	if err != nil {
		c.t.Fatalf("replica %d: %v", i, err)
	}
	if err := r.Restore(c.records[i], c.vers[i]); err != nil {
		c.t.Fatalf("replica %d: restore: %v", i, err)
	}
	c.reps[i], c.apps[i] = r, newTApp()
	c.down[i], c.isolated[i] = false, false
	c.process(i)
}

// ---- the runtime side of Ready ----

func signedKey(s Signed) string { return string(Marshal(s)) }

func (c *tCluster) record(i int, kind string, body []byte) {
	c.trace = append(c.trace, append([]byte(fmt.Sprintf("%d %s:", i, kind)), body...))
}

// process drains replica i's Ready: persist, send, report, install, execute.
func (c *tCluster) process(i int) {
	c.t.Helper()
	r := c.reps[i]
	for {
		rd := r.Ready()
		if rd.Empty() {
			break
		}
		for _, rec := range rd.Persist {
			if rec.Kind == RecordMessage {
				c.persisted[i][signedKey(rec.Env.Msg)] = true
			}
			c.records[i] = append(c.records[i], rec)
			c.allRecords[i] = append(c.allRecords[i], rec)
			c.record(i, "persist", Marshal(rec))
		}
		for _, ob := range rd.Messages {
			c.route(i, ob)
		}
		for _, d := range rd.Drops {
			c.record(i, "drop", []byte(fmt.Sprintf("%d %s %s", d.From, d.Type, d.Reason)))
		}
		c.drops[i] = append(c.drops[i], rd.Drops...)
		for _, d := range rd.Drops {
			c.event("r%d drops %s from %d: %s", i, d.Type, d.From, d.Reason)
		}
		if rd.Stable != nil {
			// As a runtime does: what restore no longer needs goes.
			c.records[i] = CompactRecords(c.records[i])
			c.stables[i] = append(c.stables[i], rd.Stable)
			c.event("r%d stable n=%d state=%s", i, rd.Stable.Seq, rd.Stable.State.Short())
			c.record(i, "stable", Marshal(*rd.Stable))
		}
		if rd.Install != nil {
			if len(c.pendingExec[i]) > 0 {
				c.t.Fatalf("replica %d: Install at %d while batches up to %d still execute", i, rd.Install.Seq, c.pendingExec[i][len(c.pendingExec[i])-1].Seq)
			}
			c.apps[i].restore(*rd.Install)
			c.event("r%d installs n=%d", i, rd.Install.Seq)
			c.record(i, "install", Marshal(*rd.Install))
		}
		for _, b := range rd.Execute {
			c.record(i, "execute", []byte(fmt.Sprintf("%d %x %d", b.Seq, b.Digest, len(b.Requests))))
			c.event("r%d executes n=%d v=%d d=%s (%d requests)", i, b.Seq, b.View, b.Digest.Short(), len(b.Requests))
			if c.async[i] {
				c.pendingExec[i] = append(c.pendingExec[i], b)
				continue
			}
			c.runBatch(i, b)
		}
	}
	c.maxLog[i] = max(c.maxLog[i], len(r.log))
	c.maxCkpts[i] = max(c.maxCkpts[i], len(r.ckpts))
}

func (c *tCluster) runBatch(i int, b Batch) {
	c.t.Helper()
	ex := c.apps[i].run(b)
	if err := c.reps[i].Executed(ex); err != nil {
		c.t.Fatalf("replica %d: Executed(%d): %v", i, b.Seq, err)
	}
}

// execute runs up to k of async replica i's waiting batches (all when k < 0).
func (c *tCluster) execute(i, k int) {
	c.t.Helper()
	for ; k != 0 && len(c.pendingExec[i]) > 0; k-- {
		b := c.pendingExec[i][0]
		c.pendingExec[i] = c.pendingExec[i][1:]
		c.runBatch(i, b)
		c.process(i)
	}
}

func (c *tCluster) route(from int, ob Outbound) {
	c.t.Helper()
	frame := EncodeEnvelope(ob.Env)
	c.out[from] = append(c.out[from], ob)
	c.record(from, fmt.Sprintf("send %d/%d/%d", ob.To.Kind, ob.To.Replica, ob.To.Client), frame)
	s := ob.Env.Msg
	switch s.Type {
	case MsgPrePrepare, MsgPrepare, MsgCommit, MsgCheckpoint:
		if s.From == uint32(from) && !c.persisted[from][signedKey(s)] {
			c.unpersisted = append(c.unpersisted, fmt.Sprintf("replica %d sent %s %+v before persisting it", from, s.Type, infoOf(ob.Env)))
		}
	}
	switch ob.To.Kind {
	case ToReplica:
		c.enqueue(tMsg{from: from, to: int(ob.To.Replica), frame: frame})
	case ToAllReplicas:
		for j := 0; j < c.n; j++ {
			if j != from {
				c.enqueue(tMsg{from: from, to: j, frame: frame})
			}
		}
	case ToClient:
		if ob.Env.Msg.Type == MsgSuperseded {
			sm, err := OpenSuperseded(&ob.Env.Msg, ReplicaID(from), c.lim)
			if err != nil {
				c.t.Fatalf("replica %d: unreadable superseded notice: %v", from, err)
			}
			if sm.Superseded.Client != ob.To.Client {
				c.t.Fatalf("replica %d: superseded notice for client %d sent to client %d", from, sm.Superseded.Client, ob.To.Client)
			}
			c.notices = append(c.notices, *sm)
			break
		}
		rm, err := OpenReply(&ob.Env.Msg, ReplicaID(from), c.lim)
		if err != nil {
			c.t.Fatalf("replica %d: unreadable reply: %v", from, err)
		}
		if rm.Reply.Client != ob.To.Client {
			c.t.Fatalf("replica %d: reply for client %d sent to client %d", from, rm.Reply.Client, ob.To.Client)
		}
		c.replies = append(c.replies, tReply{from: ReplicaID(from), reply: rm.Reply})
		c.event("r%d replies to client %d t=%d v=%d", from, rm.Reply.Client, rm.Reply.Timestamp, rm.Reply.View)
	default:
		c.t.Fatalf("replica %d: unknown destination kind %d", from, ob.To.Kind)
	}
}

// ---- clients ----

// request signs the next request of client cl (timestamps 1, 2, ... per client).
func (c *tCluster) request(cl ClientID, op string) *Envelope {
	c.nextTS[cl]++
	return c.requestAt(cl, c.nextTS[cl], op)
}

// requestAt signs a request of client cl with an explicit timestamp.
func (c *tCluster) requestAt(cl ClientID, ts uint64, op string) *Envelope {
	k := c.clientKeys[cl]
	if k == nil {
		c.t.Fatalf("harness: no key for client %d", cl)
	}
	return &Envelope{Msg: Sign(k, MsgRequest, uint32(cl), Request{Client: cl, Timestamp: ts, Op: []byte(op)})}
}

// submit sends a client's request to replica to.
func (c *tCluster) submit(to int, req *Envelope) {
	c.enqueue(tMsg{from: clientNode, to: to, frame: EncodeEnvelope(req)})
}

func reqDigest(req *Envelope) crypto.Digest { return RequestDigest(req.Msg.Body) }

func batchDigestOf(reqs ...*Envelope) crypto.Digest {
	ds := make([]crypto.Digest, len(reqs))
	for i, r := range reqs {
		ds[i] = reqDigest(r)
	}
	return BatchDigest(ds)
}

// repliesTo returns the replies sent for (cl, ts), by replica.
func (c *tCluster) repliesTo(cl ClientID, ts uint64) []tReply {
	var out []tReply
	for _, r := range c.replies {
		if r.reply.Client == cl && r.reply.Timestamp == ts {
			out = append(out, r)
		}
	}
	return out
}

// ---- Byzantine injection: any replica's key can sign anything ----

func (c *tCluster) signAs(from int, t MsgType, body any) Signed {
	return Sign(c.signers[from], t, uint32(from), body)
}

func (c *tCluster) prePrepareAs(from int, view, seq uint64, reqs ...*Envelope) *Envelope {
	env := &Envelope{Msg: c.signAs(from, MsgPrePrepare, PrePrepare{View: view, Seq: seq, Digest: batchDigestOf(reqs...)})}
	for _, r := range reqs {
		env.Batch = append(env.Batch, r.Msg)
	}
	return env
}

func (c *tCluster) prepareAs(from int, view, seq uint64, d crypto.Digest) *Envelope {
	return &Envelope{Msg: c.signAs(from, MsgPrepare, Prepare{View: view, Seq: seq, Digest: d})}
}

func (c *tCluster) commitAs(from int, view, seq uint64, d crypto.Digest) *Envelope {
	return &Envelope{Msg: c.signAs(from, MsgCommit, Commit{View: view, Seq: seq, Digest: d})}
}

func (c *tCluster) checkpointAs(from int, seq uint64, state crypto.Digest) *Envelope {
	return &Envelope{Msg: c.signAs(from, MsgCheckpoint, Checkpoint{Seq: seq, State: state})}
}

// inject queues a frame forged by replica from's key for replica to.
func (c *tCluster) inject(from, to int, env *Envelope) {
	c.enqueue(tMsg{from: from, to: to, frame: EncodeEnvelope(env), forged: true})
}

// injectNow delivers a forged frame to replica to at once, bypassing the queue.
func (c *tCluster) injectNow(from, to int, env *Envelope) {
	c.t.Helper()
	c.deliver(tMsg{from: from, to: to, frame: EncodeEnvelope(env), forged: true})
}

// ---- inspection ----

// sent returns what replica i emitted of the given type (one entry per Outbound, a
// broadcast counting once).
func (c *tCluster) sent(i int, t MsgType) []msgInfo {
	var out []msgInfo
	for _, ob := range c.out[i] {
		if ob.Env.Msg.Type == t && ob.Env.Msg.From == uint32(i) {
			out = append(out, infoOf(ob.Env))
		}
	}
	return out
}

// sentFor is sent restricted to one sequence number.
func (c *tCluster) sentFor(i int, t MsgType, seq uint64) []msgInfo {
	var out []msgInfo
	for _, m := range c.sent(i, t) {
		if m.Seq == seq {
			out = append(out, m)
		}
	}
	return out
}

// dropped returns replica i's drops whose reason contains substr.
func (c *tCluster) dropped(i int, substr string) []Drop {
	var out []Drop
	for _, d := range c.drops[i] {
		if strings.Contains(d.Reason, substr) {
			out = append(out, d)
		}
	}
	return out
}

// stateDigest is the checkpoint digest of replica i's current state: application and
// client table.
func (c *tCluster) stateDigest(i int) crypto.Digest {
	return StateDigest(c.apps[i].state, c.reps[i].clients.records())
}

func (c *tCluster) executed(i int) uint64 { return c.reps[i].Status().Executed }

// allExecuted reports whether every listed replica executed up to seq.
func (c *tCluster) allExecuted(seq uint64, ids ...int) bool {
	for _, i := range ids {
		if c.executed(i) < seq {
			return false
		}
	}
	return true
}

func (c *tCluster) all() []int {
	ids := make([]int, c.n)
	for i := range ids {
		ids[i] = i
	}
	return ids
}

// requireAgreement fails unless the listed replicas executed the same batch at every
// sequence number they both executed, and those that executed equally far hold equal
// state.
func (c *tCluster) requireAgreement(ids ...int) {
	c.t.Helper()
	for _, i := range ids {
		for _, j := range ids {
			if j <= i {
				continue
			}
			for seq, d := range c.apps[i].digests {
				if dj, ok := c.apps[j].digests[seq]; ok && dj != d {
					c.t.Fatalf("replicas %d and %d executed different batches at n=%d: %x vs %x", i, j, seq, d[:4], dj[:4])
				}
			}
			if c.executed(i) == c.executed(j) && c.stateDigest(i) != c.stateDigest(j) {
				c.t.Fatalf("replicas %d and %d both executed up to %d but hold different states", i, j, c.executed(i))
			}
		}
	}
}

// requireExactlyOnce fails if any replica ran a request more than once.
func (c *tCluster) requireExactlyOnce() {
	c.t.Helper()
	for i, a := range c.apps {
		for k, n := range a.runs {
			if n > 1 {
				c.t.Fatalf("replica %d ran request (client %d, t=%d) %d times", i, k.c, k.ts, n)
			}
		}
	}
}

func (c *tCluster) debug() string {
	var b strings.Builder
	for i, r := range c.reps {
		fmt.Fprintf(&b, "\nreplica %d: %+v %s", i, r.Status(), r.debugString())
	}
	return b.String()
}

// deliverNext delivers the frame at the head of the queue.
func (c *tCluster) deliverNext() {
	c.t.Helper()
	if len(c.queue) == 0 {
		c.t.Fatalf("harness: nothing queued")
	}
	m := c.queue[0]
	c.queue = c.queue[1:]
	c.deliver(m)
}

// queued returns the queued frames pred accepts.
func (c *tCluster) queued(pred func(tMsg) bool) []tMsg {
	var out []tMsg
	for _, m := range c.queue {
		if pred(m) {
			out = append(out, m)
		}
	}
	return out
}

// submitAndRun sends each request to the primary of view 0 and runs to quiescence.
func (c *tCluster) submitAndRun(reqs ...*Envelope) {
	c.t.Helper()
	for _, r := range reqs {
		c.submit(0, r)
	}
	c.run()
}

// requests signs count requests spread over clients 1..clients.
func (c *tCluster) requests(count, clients int, prefix string) []*Envelope {
	out := make([]*Envelope, count)
	for i := range out {
		out[i] = c.request(ClientID(1+i%clients), fmt.Sprintf("%s-%d", prefix, i))
	}
	return out
}

// completed reports whether the client of req holds f+1 matching replies for it from
// distinct replicas: the client's acceptance rule.
func (c *tCluster) completed(req *Envelope) bool {
	var r Request
	if err := Unmarshal(req.Msg.Body, &r); err != nil {
		c.t.Fatalf("harness: %v", err)
	}
	votes := map[string]map[ReplicaID]bool{}
	for _, rep := range c.repliesTo(r.Client, r.Timestamp) {
		k := string(rep.reply.Result)
		if votes[k] == nil {
			votes[k] = map[ReplicaID]bool{}
		}
		votes[k][rep.from] = true
		if len(votes[k]) >= c.reps[0].q.Weak() {
			return true
		}
	}
	return false
}

// debugString describes a replica's log for test failure messages.
func (r *Replica) debugString() string {
	s := fmt.Sprintf("h=%d next=%d emitted=%d executed=%d pending=%d inflight=%d transfer=%v install=%v;", r.h, r.nextSeq, r.emitted, r.executed, r.pending.len(), len(r.inflight), r.transfer != nil, r.pendingInstall != nil)
	for n := r.h + 1; n <= r.h+r.cfg.LogWindow; n++ {
		if e := r.log[n]; e != nil {
			s += fmt.Sprintf(" [n=%d v=%d pp=%v p=%d c=%d prep=%v com=%v]", n, e.view, e.pp != nil, e.prepares.count(e.digest), e.commits.count(e.digest), e.prepared, e.committed)
		}
	}
	return s
}
