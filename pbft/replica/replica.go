// Package replica is the runtime around the pure protocol core: it runs one pbft.Replica
// on the network. One event loop owns the core and feeds it verified messages, ticks
// from a ticker and the application's results; frames are decoded as they arrive and
// their signatures verified off the loop by a pool of workers, one per core; an
// executor runs committed batches on the application in order; a persister makes every
// record the core asks to persist durable (Pebble) before any message that goes with
// it leaves (replies, unsigned reports of committed batches, need not wait).
//
// Byzantine input is normal input here: a frame that does not decode, a message whose
// signature fails, a message claiming another sender, or more than the queues hold, is
// dropped, counted by reason (Metrics) and logged at debug level; it never blocks the
// loop and never reaches the core.
package replica

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/multiformats/go-multiaddr"
	"go.uber.org/zap"

	"github.com/pbftkit/pbft/app"
	"github.com/pbftkit/pbft/crypto"
	"github.com/pbftkit/pbft/network"
	"github.com/pbftkit/pbft/pbft"
	"github.com/pbftkit/pbft/pbft/cluster"
	"github.com/pbftkit/pbft/pbft/driver"
	"github.com/pbftkit/pbft/pbft/replica/store"
)

// Options configure a replica.
type Options struct {
	Cluster *cluster.Cluster
	ID      uint32
	Key     *crypto.PrivateKey // this replica's key (cluster.LoadKey checks it)
	App     app.Application
	// DataDir holds the replica's records in Pebble, synced before every send. Empty
	// keeps them in memory: a restarted process then starts from nothing, which is only
	// safe in tests and demos. If the records there are damaged, Start fails with the
	// store's *store.DamageError (errors.Is store.ErrDamaged), which says how to recover.
	DataDir string
	// NoSync skips the fsync of each record write. Records still reach the operating
	// system before any message that depends on them leaves, so a crash of the replica
	// process loses nothing; a crash of the machine may lose the last writes, and a
	// replica restarted on them could contradict what it sent. Off by default.
	NoSync bool
	// Listen overrides the address the cluster lists for this replica.
	Listen []string
	// Verifiers is the number of signature-verification workers (0: one per CPU).
	Verifiers int
	Logger    *zap.Logger
}

// Storage is where records go before messages leave.
type Storage interface {
	Append([]pbft.Record) error
	Compact(keep []pbft.Record) error
	Load() ([]pbft.Record, error)
	Close() error
}

// queue sizes: inbound frames waiting for a verifier, and verified messages waiting
// for the loop. Beyond them input is dropped (and counted), never buffered unbounded.
const (
	inboxLen    = 1 << 14
	verifiedLen = 1 << 12
	drainBatch  = 512 // messages stepped before one Ready is handled
)

// Replica is a running replica.
type Replica struct {
	opts     Options
	cl       *cluster.Cluster
	core     *pbft.Replica
	drv      *driver.Driver // the Ready contract, shared with the simulator
	host     *network.Host
	store    Storage
	verifier pbft.Verifier
	lim      pbft.Limits
	log      *zap.Logger
	metrics  *Metrics

	replicaOf  map[peer.ID]pbft.ReplicaID
	clientOf   map[peer.ID]pbft.ClientID
	peerOf     []peer.ID
	clientPeer map[pbft.ClientID]peer.ID

	// inbox holds replicas' frames waiting for a verifier, clientInbox clients'
	// requests: apart, and replicas first, so that clients flooding requests
	// (with bad signatures, say) cannot crowd out the protocol's own messages.
	inbox       chan queued
	clientInbox chan queued
	// replicaQueued and clientQueued count, per sender, its frames waiting for a
	// verifier: each gets a fair share of its queue (a replica 1/n of it, a client
	// twice its reply window), so one Byzantine sender cannot fill it.
	replicaQueued []atomic.Int32
	clientQueued  map[pbft.ClientID]*atomic.Int32
	verified      chan pbft.Message
	results       chan pbft.Executed
	exec          *executor
	persistQ      chan []driver.Durable

	status   atomic.Pointer[pbft.Status]
	quit     chan struct{} // closed to stop every goroutine
	quitOnce sync.Once
	wg       sync.WaitGroup
	stop     sync.Once
	errMu    sync.Mutex
	err      error // why the replica stopped, if it failed
}

// Start restores the replica from its records (if any) and starts serving.
func Start(opts Options) (*Replica, error) {
	cl := opts.Cluster
	me, err := cl.Replica(opts.ID)
	if err != nil {
		return nil, err
	}
	if opts.Key == nil || !opts.Key.Public().Equal(me.Public) {
		return nil, fmt.Errorf("%s: replicas[%d]: the key given is not the public_key configured", cl.Path, opts.ID)
	}
	if opts.App == nil {
		return nil, errors.New("replica: Options.App is nil")
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Verifiers <= 0 {
		opts.Verifiers = runtime.GOMAXPROCS(0)
	}
	r := &Replica{
		opts: opts, cl: cl, lim: cl.Limits(),
		log:           opts.Logger.With(zap.Uint32("replica", opts.ID)),
		metrics:       newMetrics(),
		replicaOf:     make(map[peer.ID]pbft.ReplicaID),
		clientOf:      make(map[peer.ID]pbft.ClientID),
		clientPeer:    make(map[pbft.ClientID]peer.ID),
		clientQueued:  make(map[pbft.ClientID]*atomic.Int32),
		inbox:         make(chan queued, inboxLen),
		clientInbox:   make(chan queued, inboxLen),
		replicaQueued: make([]atomic.Int32, len(cl.Replicas)),
		verified:      make(chan pbft.Message, verifiedLen),
		results:       make(chan pbft.Executed, 1024),
		persistQ:      make(chan []driver.Durable, 4096),
		quit:          make(chan struct{}),
	}
	r.verifier = pbft.Verifier{Keys: cl.KeyRing(), N: len(cl.Replicas), Limits: r.lim, Cache: newVerifiedCache(1 << 16)}
	signer := &pbft.KeySigner{Cluster: cl.Name, Key: opts.Key}
	if r.core, err = pbft.NewReplica(cl.PBFTConfig(pbft.ReplicaID(opts.ID), signer)); err != nil {
		return nil, fmt.Errorf("%s: protocol: %w", cl.Path, err)
	}
	if err := r.openStore(); err != nil {
		return nil, err
	}
	r.drv = driver.New(r.core, timedStore{r.store, r.metrics}, hostTransport{r}, driver.Observer{
		Drop: func(d pbft.Drop) {
			r.metrics.drop(d.Reason)
			if ce := r.log.Check(zap.DebugLevel, "core dropped message"); ce != nil {
				ce.Write(zap.String("reason", d.Reason), zap.Stringer("type", d.Type), zap.Uint32("from", d.From))
			}
		},
		Stable: func(s *pbft.StableCheckpoint) {
			r.metrics.StableSeq.Store(s.Seq)
			r.log.Debug("stable checkpoint", zap.Uint64("seq", s.Seq), zap.Stringer("state", s.State))
		},
		Install: func(in *pbft.Install, own bool) {
			r.log.Info("installed checkpoint state", zap.Uint64("seq", in.Seq), zap.Int("bytes", len(in.App)), zap.Bool("own", own))
		},
		Executed: func(b *pbft.Batch, _ [][]byte) {
			r.metrics.Batches.Add(1)
			r.metrics.Requests.Add(uint64(len(b.Requests)))
		},
	})
	r.exec = newExecutor(opts.App, r.drv, r.results)
	if err := r.restore(); err != nil {
		r.store.Close()
		return nil, err
	}
	st := r.core.Status()
	r.status.Store(&st)
	// No message leaves before the loop runs (Restore may have signed some, which wait
	// in the core's Ready), and the host refuses to start beside another process of
	// this replica (see startHost): a twin is turned away before it sends anything.
	if err := r.startHost(me); err != nil {
		r.store.Close()
		return nil, err
	}
	r.wg.Add(1)
	go func() { defer r.wg.Done(); r.exec.run(r.quit) }()
	for range opts.Verifiers {
		r.wg.Add(1)
		go func() { defer r.wg.Done(); r.verify() }()
	}
	r.wg.Add(1)
	go func() { defer r.wg.Done(); r.persist() }()
	r.wg.Add(1)
	go func() { defer r.wg.Done(); r.loop() }()
	r.log.Info("replica started", zap.Stringer("peer", r.host.ID()), zap.Any("addrs", r.host.Addrs()),
		zap.Int("n", len(cl.Replicas)), zap.Int("f", cl.F), zap.Uint64("view", st.View), zap.Uint64("stable", st.LowMark),
		zap.String("scheme", cl.Scheme.Name()), zap.Int("verifiers", opts.Verifiers))
	return r, nil
}

func (r *Replica) openStore() error {
	if r.opts.DataDir == "" {
		r.store = memStore{&driver.MemStorage{}}
		return nil
	}
	s, err := store.Open(r.opts.DataDir, store.Options{Sync: !r.opts.NoSync, Logger: r.log})
	if inUse := (*store.InUseError)(nil); errors.As(err, &inUse) {
		// The usual cause is the operator starting the same replica twice: say so,
		// rather than leave them to decode a lock error.
		if inUse.SameProcess {
			return fmt.Errorf("replica %d: data dir %s is in use by another replica of this process (is replica %d started twice?)", r.opts.ID, r.opts.DataDir, r.opts.ID)
		}
		return fmt.Errorf("replica %d: data dir %s is in use by another process (is replica %d already running?)", r.opts.ID, r.opts.DataDir, r.opts.ID)
	}
	if err != nil {
		return r.storeError(err)
	}
	r.store = s
	return nil
}

// storeError is how Start reports an error of the store: as the store words it (it
// names the directory, and for damaged records the file and how to recover), after
// the replica's id, so that the user reads the recovery hint unchanged.
func (r *Replica) storeError(err error) error {
	return fmt.Errorf("replica %d: %w", r.opts.ID, err)
}

// restore brings the core back to where its records say it was.
func (r *Replica) restore() error {
	recs, err := r.store.Load()
	if err != nil {
		return r.storeError(err)
	}
	if len(recs) == 0 {
		return nil
	}
	if _, err := r.drv.Restore(&r.verifier); err != nil {
		return fmt.Errorf("replica %d: data dir %s: %w", r.opts.ID, r.opts.DataDir, err)
	}
	st := r.core.Status()
	r.log.Info("restored from records", zap.Int("records", len(recs)), zap.Uint64("view", st.View),
		zap.Bool("active", st.Active), zap.Uint64("stable", st.LowMark))
	return nil
}

func (r *Replica) startHost(me *cluster.Member) error {
	ident, id, err := network.Identity(r.opts.Key)
	if err != nil {
		return err
	}
	if id != me.PeerID {
		return fmt.Errorf("%s: replicas[%d].peer_id: %s does not match its key (%s)", r.cl.Path, r.opts.ID, me.PeerID, id)
	}
	var allow, replicas, clients []peer.ID
	r.peerOf = make([]peer.ID, len(r.cl.Replicas))
	for _, m := range r.cl.Replicas {
		replicas = append(replicas, m.PeerID)
		r.replicaOf[m.PeerID] = pbft.ReplicaID(m.ID)
		r.peerOf[m.ID] = m.PeerID
	}
	for _, m := range r.cl.Clients {
		clients = append(clients, m.PeerID)
		r.clientOf[m.PeerID] = pbft.ClientID(m.ID)
		r.clientPeer[pbft.ClientID(m.ID)] = m.PeerID
		r.clientQueued[pbft.ClientID(m.ID)] = new(atomic.Int32)
	}
	allow = append(append(allow, replicas...), clients...)
	listen := r.opts.Listen
	if len(listen) == 0 {
		listen = []string{me.Addr.String()}
	}
	// Two processes of one replica would each sign from their own history: to the
	// others, an equivocating replica. network.New refuses a listen address already
	// bound and finds out whether the holder is this replica; the address the others
	// dial, when it is not one we listen on (a NAT in between, say), is probed here.
	if !slices.Contains(listen, me.Addr.String()) {
		ctx, cancel := context.WithTimeout(context.Background(), twinProbeTimeout)
		twin, _ := network.ProbeIdentity(ctx, me.PeerID, me.Addr)
		cancel()
		if twin {
			return r.twinError(me.Addr, me.PeerID)
		}
	}
	h, err := network.New(network.Config{Identity: ident, Listen: listen, Allow: allow, QUIC: r.cl.UsesQUIC(),
		MaxFrame: r.cl.Protocol.MaxFrameBytes, Logger: r.log,
		// Each role on its own protocol: a client cannot open replica streams.
		ProtocolPeers: map[protocol.ID][]peer.ID{network.ReplicaProtocol: replicas, network.ClientProtocol: clients}})
	if inUse := (*network.AddrInUseError)(nil); errors.As(err, &inUse) {
		if inUse.Self {
			return r.twinError(inUse.Addr, inUse.ID)
		}
		return fmt.Errorf("replica %d: cannot listen on %s: the address is in use, and nothing there answered as replica %d (%s): "+
			"another program holds it, or a process of replica %d too busy to answer; check who holds it with: %s",
			r.opts.ID, inUse.Addr, r.opts.ID, inUse.Reason(), r.opts.ID, whoHolds(inUse.Addr))
	}
	if err != nil {
		return fmt.Errorf("replica %d: listen on %v: %w", r.opts.ID, listen, err)
	}
	for _, m := range r.cl.Replicas {
		if m.ID != r.opts.ID {
			h.AddPeer(m.PeerID, []multiaddr.Multiaddr{m.Addr})
		}
	}
	h.Handle(network.ReplicaProtocol, r.onReplicaFrame)
	h.Handle(network.ClientProtocol, r.onClientFrame)
	r.host = h
	return nil
}

// twinProbeTimeout bounds the probe of the replica's advertised address when it does
// not listen there itself: a live replica answers in milliseconds, an address that
// drops packets costs this much at start.
const twinProbeTimeout = 5 * time.Second

// twinError is the refusal to start beside another process of this replica, which
// answered at addr with the replica's peer ID id.
func (r *Replica) twinError(addr multiaddr.Multiaddr, id peer.ID) error {
	return fmt.Errorf("replica %d: another process is already running replica %d on %s (it answered there with the replica's peer ID %s): "+
		"stop it before starting this one; two processes for one replica sign from two histories, which makes replica %d equivocate",
		r.opts.ID, r.opts.ID, addr, id, r.opts.ID)
}

// whoHolds is the command that shows which process holds addr's port.
func whoHolds(addr multiaddr.Multiaddr) string {
	if port, err := addr.ValueForProtocol(multiaddr.P_UDP); err == nil {
		return "ss -lunp 'sport = :" + port + "'"
	}
	if port, err := addr.ValueForProtocol(multiaddr.P_TCP); err == nil {
		return "ss -ltnp 'sport = :" + port + "'"
	}
	return "ss -ltunp"
}

// Stop shuts the replica down: the network first, then the loop and its workers, then
// the store. It returns why the replica stopped if it failed on its own.
func (r *Replica) Stop() error {
	r.stop.Do(func() {
		r.host.Close()
		r.quitOnce.Do(func() { close(r.quit) })
		r.wg.Wait()
		if err := r.store.Close(); err != nil {
			r.fail(fmt.Errorf("close store: %w", err))
		}
		r.log.Info("replica stopped")
	})
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return r.err
}

// Status is the core's position after the last event the loop handled.
func (r *Replica) Status() pbft.Status {
	if st := r.status.Load(); st != nil {
		return *st
	}
	return pbft.Status{ID: pbft.ReplicaID(r.opts.ID)}
}

// Metrics are the replica's counters.
func (r *Replica) Metrics() *Metrics { return r.metrics }

// PeerID is the replica's libp2p identity.
func (r *Replica) PeerID() peer.ID { return r.host.ID() }

// Network is the replica's transport statistics.
func (r *Replica) Network() network.Stats { return r.host.Stats() }

// --- input: frames from the network, verified off the loop ---

func (r *Replica) onReplicaFrame(from peer.ID, frame []byte) {
	rid, ok := r.replicaOf[from]
	if !ok {
		r.dropInput("frame from a non-replica on the replica protocol", from)
		return
	}
	env, err := pbft.DecodeEnvelope(frame, r.lim)
	if err != nil {
		r.dropInput("malformed frame", from, zap.Error(err))
		return
	}
	// Replicas relay what others signed: client requests (to the primary), the
	// CHECKPOINTs of a stable proof (to a laggard), the NEW-VIEW (to a replica left in
	// an older view), and the primary's PRE-PREPAREs and the COMMITs of a commit
	// certificate (to a replica lagging in the window). Anything else a replica sends
	// is its own, and its stream says who it is.
	if !relayed(env.Msg.Type) && env.Msg.From != uint32(rid) {
		r.dropInput("message names another sender than its stream", from, zap.Uint32("claims", env.Msg.From))
		return
	}
	r.enqueue(r.inbox, queued{env, &r.replicaQueued[rid]}, inboxLen/len(r.replicaQueued), from, "replica")
}

// queued is a frame waiting for a verifier, with its sender's count of such frames.
type queued struct {
	env    *pbft.Envelope
	sender *atomic.Int32
}

func relayed(t pbft.MsgType) bool {
	return t == pbft.MsgRequest || t == pbft.MsgCheckpoint || t == pbft.MsgNewView || t == pbft.MsgPrePrepare || t == pbft.MsgCommit
}

func (r *Replica) onClientFrame(from peer.ID, frame []byte) {
	cid, ok := r.clientOf[from]
	if !ok {
		r.dropInput("frame from an unregistered client", from)
		return
	}
	env, err := pbft.DecodeEnvelope(frame, r.lim)
	if err != nil {
		r.dropInput("malformed frame", from, zap.Error(err))
		return
	}
	if env.Msg.Type != pbft.MsgRequest || env.Msg.From != uint32(cid) {
		r.dropInput("a client sent something other than its own request", from, zap.Stringer("type", env.Msg.Type))
		return
	}
	r.enqueue(r.clientInbox, queued{env, r.clientQueued[cid]}, 2*r.cl.Protocol.ReplyWindow, from, "client")
}

// enqueue queues a frame for a verifier if its sender is within its share of q and q
// has room; role ("replica" or "client") names the queue in drop reasons.
func (r *Replica) enqueue(q chan queued, it queued, share int, from peer.ID, role string) {
	r.metrics.FramesIn.Add(1)
	if it.sender.Add(1) > int32(share) {
		it.sender.Add(-1)
		r.dropInput(role+" over its share of the verification queue", from)
		return
	}
	select {
	case q <- it:
	default:
		it.sender.Add(-1)
		r.dropInput(role+" verification queue full", from)
	}
}

func (r *Replica) dropInput(reason string, from peer.ID, fields ...zap.Field) {
	r.metrics.drop(reason)
	if ce := r.log.Check(zap.DebugLevel, "dropped input"); ce != nil {
		ce.Write(append(fields, zap.String("reason", reason), zap.Stringer("from", from))...)
	}
}

// verify is one worker of the pool: signature checks are pure and run in parallel.
func (r *Replica) verify() {
	for picks := 0; ; picks++ {
		var it queued
		select {
		case <-r.quit:
			return
		default:
		}
		// Replicas first, but every fourth pick a waiting client request: a
		// Byzantine replica keeping the replica queue busy cannot starve clients.
		if picks%4 == 3 {
			select {
			case it = <-r.clientInbox:
			default:
			}
		}
		if it.env == nil {
			select {
			case it = <-r.inbox:
			default:
				select {
				case <-r.quit:
					return
				case it = <-r.inbox:
				case it = <-r.clientInbox:
				}
			}
		}
		it.sender.Add(-1)
		env := it.env
		m, err := r.verifier.Open(env)
		if err != nil {
			reason := "malformed message"
			if errors.Is(err, pbft.ErrBadSignature) {
				reason = "bad signature"
			}
			r.metrics.drop(reason)
			if ce := r.log.Check(zap.DebugLevel, "dropped message"); ce != nil {
				ce.Write(zap.String("reason", reason), zap.Stringer("type", env.Msg.Type), zap.Uint32("from", env.Msg.From), zap.Error(err))
			}
			continue
		}
		select {
		case r.verified <- m:
		case <-r.quit:
			return
		}
	}
}

// --- the event loop: the only goroutine that touches the core ---

func (r *Replica) loop() {
	ticker := time.NewTicker(r.cl.Tick)
	defer ticker.Stop()
	r.handleReady()
	for {
		select {
		case <-r.quit:
			return
		case m := <-r.verified:
			r.core.Step(m)
			for i := 0; i < drainBatch; i++ {
				select {
				case m := <-r.verified:
					r.core.Step(m)
					continue
				default:
				}
				break
			}
		case ex := <-r.results:
			if err := r.core.Executed(ex); err != nil {
				r.fail(fmt.Errorf("executed n=%d: %w", ex.Seq, err))
				return
			}
		case <-ticker.C:
			if err := r.exec.failure(); err != nil {
				r.fail(fmt.Errorf("application: %w", err))
				return
			}
			r.core.Tick()
		}
		if !r.handleReady() {
			return
		}
	}
}

// handleReady drains the core's output through the driver: replies have left, records
// and the messages that wait for them go to the persister, work to the executor. It
// reports false if the replica is stopping.
func (r *Replica) handleReady() bool {
	durable, work := r.drv.Advance()
	if len(durable) > 0 {
		// Records become durable, then their messages leave, on the persister's
		// goroutine: the loop goes on stepping while the disk syncs, and the next
		// sync carries everything that arrived meanwhile (group commit).
		select {
		case r.persistQ <- durable:
		case <-r.quit:
			return false
		}
	}
	if len(work) > 0 {
		r.exec.push(work)
	}
	st := r.core.Status()
	if prev := r.status.Load(); prev != nil && (prev.View != st.View || prev.Active != st.Active) {
		r.log.Info("view", zap.Uint64("view", st.View), zap.Bool("active", st.Active), zap.Uint32("primary", uint32(st.Primary)))
	}
	r.status.Store(&st)
	return true
}

// persist runs the driver's Persist stage: one sync carries every item queued while
// the previous one ran.
func (r *Replica) persist() {
	var items []driver.Durable
	for {
		items = items[:0]
		select {
		case <-r.quit:
			return
		case it := <-r.persistQ:
			items = append(items, it...)
		}
	more:
		for len(items) < 1024 {
			select {
			case it := <-r.persistQ:
				items = append(items, it...)
			default:
				break more
			}
		}
		if err := r.drv.Persist(items); err != nil {
			// Sending what is not durable could make this replica contradict itself
			// after a crash: stop instead.
			r.fail(err)
			return
		}
		r.exec.persisted()
	}
}

// hostTransport sends the driver's messages over the libp2p host.
type hostTransport struct{ r *Replica }

func (t hostTransport) Send(ob *pbft.Outbound) { t.r.send(ob) }

// timedStore counts and times the store's durable writes.
type timedStore struct {
	Storage
	m *Metrics
}

func (s timedStore) Append(recs []pbft.Record) error {
	t0 := time.Now()
	err := s.Storage.Append(recs)
	s.m.Persists.Add(1)
	s.m.PersistNanos.Add(uint64(time.Since(t0).Nanoseconds()))
	return err
}

func (r *Replica) send(ob *pbft.Outbound) {
	frame := pbft.EncodeEnvelope(ob.Env)
	switch ob.To.Kind {
	case pbft.ToReplica:
		if int(ob.To.Replica) < len(r.peerOf) {
			r.host.Send(r.peerOf[ob.To.Replica], network.ReplicaProtocol, frame)
		}
	case pbft.ToAllReplicas:
		for i, p := range r.peerOf {
			if uint32(i) != r.opts.ID {
				r.host.Send(p, network.ReplicaProtocol, frame)
			}
		}
	case pbft.ToClient:
		if p, ok := r.clientPeer[ob.To.Client]; ok {
			r.host.Send(p, network.ClientProtocol, frame)
		}
	}
}

// fail records why the replica cannot go on safely and stops its goroutines.
func (r *Replica) fail(err error) {
	r.errMu.Lock()
	if r.err == nil {
		r.err = err
		r.log.Error("replica stopping", zap.Error(err))
	}
	r.errMu.Unlock()
	r.quitOnce.Do(func() { close(r.quit) })
}

// Done is closed when the replica stops, by Stop or because it failed (Stop then says why).
func (r *Replica) Done() <-chan struct{} { return r.quit }

// memStore keeps records in memory: no durability.
type memStore struct{ *driver.MemStorage }

func (memStore) Close() error { return nil }
