package driver

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/pbftkit/pbft/app/kvstore"
	"github.com/pbftkit/pbft/crypto"
	"github.com/pbftkit/pbft/pbft"
)

// cluster is n drivers over an in-memory network that the test delivers by hand, each
// with a store that can hold its writes back (as a disk in the middle of a sync).
type cluster struct {
	t       *testing.T
	n       int
	drvs    []*Driver
	cfgs    []pbft.Config
	apps    []*kvstore.Store
	stores  []*heldStore
	vers    []*pbft.Verifier
	net     []frame // in flight
	client  *pbft.KeySigner
	pending [][]Durable // per replica: handed to Persist, not yet run (held)
	later   [][]Work    // per replica: work waiting for pending (Work.After)
	hold    []bool      // per replica: keep Persist waiting
	sent    [][]sent    // per replica: what left, and how many records were durable then
}

type frame struct {
	from, to int // to < 0: the client
	env      *pbft.Envelope
}

type sent struct {
	typ     pbft.MsgType
	toCli   bool
	durable int // records durable in the store when it left
	emitted int // records the core had asked for when it left
}

// heldStore is an in-memory store that counts what it holds.
type heldStore struct {
	MemStorage
	appended int
	compacts int
	fail     error
}

func (s *heldStore) Append(recs []pbft.Record) error {
	if s.fail != nil {
		return s.fail
	}
	s.appended += len(recs)
	return s.MemStorage.Append(recs)
}

func (s *heldStore) Compact(keep []pbft.Record) error {
	s.compacts++
	return s.MemStorage.Compact(keep)
}

type tr struct {
	c  *cluster
	id int
}

func (t tr) Send(out *pbft.Outbound) {
	c := t.c
	c.sent[t.id] = append(c.sent[t.id], sent{typ: out.Env.Msg.Type, toCli: out.To.Kind == pbft.ToClient,
		durable: c.stores[t.id].appended})
	switch out.To.Kind {
	case pbft.ToReplica:
		c.net = append(c.net, frame{t.id, int(out.To.Replica), out.Env})
	case pbft.ToAllReplicas:
		for j := 0; j < c.n; j++ {
			if j != t.id {
				c.net = append(c.net, frame{t.id, j, out.Env})
			}
		}
	case pbft.ToClient:
		c.net = append(c.net, frame{t.id, -1, out.Env})
	}
}

func newTestCluster(t *testing.T, n int) *cluster {
	t.Helper()
	sch, err := crypto.SchemeByName("Ed25519")
	if err != nil {
		t.Fatal(err)
	}
	ring := &pbft.PublicKeyRing{Cluster: "driver-test", Clients: map[pbft.ClientID]*crypto.PublicKey{}}
	var signers []*pbft.KeySigner
	for i := 0; i < n; i++ {
		k := sch.DeriveKey([]byte(fmt.Sprintf("replica-%d", i)))
		signers = append(signers, &pbft.KeySigner{Cluster: "driver-test", Key: k})
		ring.Replicas = append(ring.Replicas, k.Public())
	}
	ck := sch.DeriveKey([]byte("client-1"))
	ring.Clients[1] = ck.Public()
	c := &cluster{t: t, n: n, client: &pbft.KeySigner{Cluster: "driver-test", Key: ck},
		pending: make([][]Durable, n), later: make([][]Work, n), hold: make([]bool, n), sent: make([][]sent, n)}
	for i := 0; i < n; i++ {
		cfg := pbft.DefaultConfig(pbft.ReplicaID(i), n, signers[i])
		cfg.CheckpointInterval, cfg.LogWindow, cfg.MaxBatchRequests = 2, 4, 1
		core, err := pbft.NewReplica(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.cfgs = append(c.cfgs, cfg)
		st := &heldStore{}
		c.stores = append(c.stores, st)
		c.apps = append(c.apps, kvstore.New())
		c.vers = append(c.vers, &pbft.Verifier{Keys: ring, N: n, Limits: pbft.DefaultLimits()})
		c.drvs = append(c.drvs, New(core, st, tr{c, i}, Observer{}))
	}
	return c
}

// flush runs replica i's stages; Persist waits while i is held.
func (c *cluster) flush(i int) {
	for {
		durable, work := c.drvs[i].Advance()
		if len(durable) == 0 && len(work) == 0 {
			break
		}
		c.pending[i] = append(c.pending[i], durable...)
		if !c.hold[i] {
			c.release(i)
		}
		if len(c.pending[i]) > 0 {
			// As the runtime's executor does: work waits for the records before it.
			c.later[i] = append(c.later[i], work...)
			return
		}
		if err := c.drvs[i].ApplyAll(c.apps[i], work); err != nil {
			c.t.Fatalf("replica %d: %v", i, err)
		}
	}
}

// release lets replica i's held writes finish, and their messages leave.
func (c *cluster) release(i int) {
	items, work := c.pending[i], c.later[i]
	c.pending[i], c.later[i] = nil, nil
	if len(items) > 0 {
		if err := c.drvs[i].Persist(items); err != nil {
			c.t.Fatalf("replica %d: %v", i, err)
		}
	}
	if len(work) > 0 {
		if err := c.drvs[i].ApplyAll(c.apps[i], work); err != nil {
			c.t.Fatalf("replica %d: %v", i, err)
		}
		c.flush(i)
	}
}

// deliver delivers everything in flight (and what that sends) until nothing is left;
// it returns the replies the client got.
func (c *cluster) deliver() []*pbft.Envelope {
	var replies []*pbft.Envelope
	for len(c.net) > 0 {
		f := c.net[0]
		c.net = c.net[1:]
		if f.to < 0 {
			replies = append(replies, f.env)
			continue
		}
		m, err := c.vers[f.to].Open(f.env)
		if err != nil {
			c.t.Fatalf("replica %d cannot open a %s from %d: %v", f.to, f.env.Msg.Type, f.from, err)
		}
		c.drvs[f.to].Core().Step(m)
		c.flush(f.to)
	}
	return replies
}

func (c *cluster) request(ts uint64, op []byte) {
	s := pbft.Sign(c.client, pbft.MsgRequest, 1, pbft.Request{Client: 1, Timestamp: ts, Op: op})
	env := &pbft.Envelope{Msg: s}
	for i := 0; i < c.n; i++ {
		m, err := c.vers[i].Open(env)
		if err != nil {
			c.t.Fatal(err)
		}
		c.drvs[i].Core().Step(m)
		c.flush(i)
	}
}

// Persist, then send (PBFT's stable-storage rule, TOCS §4.5): no protocol message a
// replica signs leaves before the records the core emitted with it are durable.
func TestMessagesLeaveOnlyAfterTheirRecordsAreDurable(t *testing.T) {
	c := newTestCluster(t, 4)
	for ts := uint64(1); ts <= 6; ts++ {
		c.request(ts, kvstore.Put(fmt.Sprintf("k%d", ts), []byte("v")))
		if replies := c.deliver(); len(replies) < 3 {
			t.Fatalf("request %d: %d replies, want at least 3", ts, len(replies))
		}
	}
	for i := range c.sent {
		last := 0
		for _, s := range c.sent[i] {
			if s.toCli {
				continue
			}
			if s.durable < last {
				t.Fatalf("replica %d: durable count went back", i)
			}
			last = s.durable
		}
	}
	// A replica whose disk is held signs votes that wait: none of its PREPAREs or
	// COMMITs leaves until the write finishes, and then all of them do.
	c.hold[1] = true
	before := len(c.sent[1])
	c.request(7, kvstore.Put("k7", []byte("v")))
	c.deliver()
	for _, s := range c.sent[1][before:] {
		if !s.toCli {
			t.Fatalf("replica 1 sent a %s while its records were held", s.typ)
		}
	}
	before = len(c.sent[1])
	if len(c.pending[1]) == 0 {
		t.Fatal("replica 1 emitted nothing to persist for request 7")
	}
	c.hold[1] = false
	c.release(1)
	var votes int
	for _, s := range c.sent[1][before:] {
		if s.typ == pbft.MsgPrepare || s.typ == pbft.MsgCommit {
			votes++
		}
	}
	if votes == 0 {
		t.Fatal("replica 1's votes did not leave once its records were durable")
	}
}

// A batch runs only once every record emitted before it is durable: the core counts
// its own COMMIT towards committed-local as soon as it signs it, and a batch run (and
// answered) before that COMMIT and its prepared certificate are on disk could be
// forgotten by a crash while the client holds the answer. The red team's rt3-earlyexec
// broke agreement that way. Replies still leave without waiting for a disk: by then the
// batch they answer was run on durable votes.
func TestABatchRunsOnlyOnceTheRecordsBeforeItAreDurable(t *testing.T) {
	c := newTestCluster(t, 4)
	c.request(1, kvstore.Put("a", []byte("1")))
	c.deliver()
	c.hold[2] = true
	c.request(2, kvstore.Put("b", []byte("2")))
	replies := c.deliver()
	for _, r := range replies {
		if r.Msg.From == 2 {
			t.Fatal("replica 2 answered a batch while its own votes for it were not durable")
		}
	}
	if len(c.later[2]) == 0 || c.drvs[2].Core().Status().Executed != 1 {
		t.Fatalf("replica 2 ran the batch before its records were durable (executed %d)", c.drvs[2].Core().Status().Executed)
	}
	// The driver refuses to run it early, whoever calls.
	if _, err := c.drvs[2].Apply(c.apps[2], c.later[2][0]); err == nil || !strings.Contains(err.Error(), "before its records are durable") {
		t.Fatalf("Apply before the records are durable: %v", err)
	}
	c.hold[2] = false
	c.release(2)
	replies = c.deliver()
	from2 := false
	for _, r := range replies {
		if r.Msg.From == 2 {
			from2 = true
		}
	}
	if st := c.drvs[2].Core().Status(); st.Executed != 2 || !from2 {
		t.Fatalf("once durable, replica 2 executed %d and replied %v", st.Executed, from2)
	}
}

// The records stay bounded: at each stable checkpoint the store is compacted to what
// Restore needs (pbft.CompactRecords), and a restart from the store comes back at the
// stable checkpoint with its state installed before any batch.
func TestRecordsAreCompactedAtAStableCheckpointAndRestoreInstallsItFirst(t *testing.T) {
	c := newTestCluster(t, 4)
	for ts := uint64(1); ts <= 9; ts++ {
		c.request(ts, kvstore.Put(fmt.Sprintf("k%d", ts), []byte("v")))
		c.deliver()
	}
	st := c.stores[3]
	if st.compacts == 0 {
		t.Fatal("no compaction after 9 batches with checkpoints every 2")
	}
	if kept := len(st.recs); kept >= st.appended {
		t.Fatalf("compaction kept %d of %d records", kept, st.appended)
	}
	stable := c.drvs[3].Core().Status().LowMark
	if stable == 0 {
		t.Fatal("no stable checkpoint")
	}

	core, err := pbft.NewReplica(c.cfgs[3])
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	d := New(core, st, tr{c, 3}, Observer{
		Install:  func(in *pbft.Install, own bool) { order = append(order, fmt.Sprintf("install %d own=%v", in.Seq, own)) },
		Executed: func(b *pbft.Batch, _ [][]byte) { order = append(order, fmt.Sprintf("execute %d", b.Seq)) },
	})
	if _, err := d.Restore(c.vers[3]); err != nil {
		t.Fatal(err)
	}
	app := kvstore.New()
	if err := d.Run(app); err != nil {
		t.Fatal(err)
	}
	if len(order) == 0 || order[0] != fmt.Sprintf("install %d own=true", stable) {
		t.Fatalf("after a restart at stable n=%d the driver did %v; want its own checkpoint installed first", stable, order)
	}
	if got, _ := app.Snapshot(); len(got) == 0 {
		t.Fatal("the restored application is empty")
	}
}

// A store that cannot make records durable stops the replica: Persist says why and
// sends nothing, since a message without its record could be contradicted after a crash.
func TestAFailedDurableWriteSendsNothing(t *testing.T) {
	c := newTestCluster(t, 4)
	c.stores[0].fail = errors.New("disk full")
	c.hold[0] = true
	c.request(1, kvstore.Put("a", []byte("1")))
	before := len(c.sent[0])
	err := c.drvs[0].Persist(c.pending[0])
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Persist on a failing store: %v", err)
	}
	if len(c.sent[0]) != before {
		t.Fatalf("replica 0 sent %d messages whose records were not durable", len(c.sent[0])-before)
	}
}

// An application that panics does not take the process down: Apply returns the reason.
func TestAnApplicationPanicIsReturnedAsAnError(t *testing.T) {
	c := newTestCluster(t, 4)
	_, err := c.drvs[0].Apply(panicApp{kvstore.New()}, Work{Batch: &pbft.Batch{Seq: 1, Requests: []*pbft.RequestMsg{{}}}})
	if err == nil || !strings.Contains(err.Error(), "application panicked: boom") {
		t.Fatalf("Apply on a panicking application: %v", err)
	}
}

type panicApp struct{ *kvstore.Store }

func (panicApp) Execute([]byte) []byte { panic("boom") }
