package integration

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/multiformats/go-multiaddr"
	"go.uber.org/zap"

	"github.com/pbftkit/pbft/app/kvstore"
	"github.com/pbftkit/pbft/crypto"
	"github.com/pbftkit/pbft/network"
	"github.com/pbftkit/pbft/pbft"
	"github.com/pbftkit/pbft/pbft/client"
)

// rawHost starts a bare network.Host with the identity of key (closed at the end of the
// test) that admits the cluster's replicas and can dial those listed in dial.
func (tc *testCluster) rawHost(key *crypto.PrivateKey, listen []string, dial ...int) *network.Host {
	tc.t.Helper()
	ident, _, err := network.Identity(key)
	if err != nil {
		tc.t.Fatal(err)
	}
	var allow []peer.ID
	for _, m := range tc.cl.Replicas {
		allow = append(allow, m.PeerID)
	}
	h, err := network.New(network.Config{Identity: ident, Listen: listen, Allow: allow,
		MaxFrame: tc.cl.Protocol.MaxFrameBytes, Logger: zap.NewNop()})
	if err != nil {
		tc.t.Fatal(err)
	}
	tc.t.Cleanup(func() { h.Close() })
	for _, i := range dial {
		m := tc.cl.Replicas[i]
		h.AddPeer(m.PeerID, []multiaddr.Multiaddr{m.Addr})
	}
	return h
}

// runRequests has each client run n puts and gets on its own key, checking that every
// result is voted by f+1 replicas and reads the client's last write.
func (tc *testCluster) runRequests(t *testing.T, clients []*client.Client, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for j, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("client-%d", j)
			var last []byte
			for i := range n {
				op := kvstore.Get(key)
				if i%2 == 0 {
					last = fmt.Appendf(nil, "v%d", i)
					op = kvstore.Put(key, last)
				}
				res, err := c.Invoke(ctx, op)
				if err != nil {
					t.Errorf("client %d request %d: %v", j, i, err)
					return
				}
				if !tc.checkVoters(t, fmt.Sprintf("client %d request %d", j, i), res) {
					return
				}
				r, err := kvstore.DecodeResult(res.Value)
				if err != nil || !r.OK || (i%2 == 1 && !bytes.Equal(r.Value, last)) {
					t.Errorf("client %d request %d: result %+v (%v), want the last write %q", j, i, r, err, last)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestGarbageAndBadSignaturesFromAReplicaDoNotStopTheOthers runs replicas 0, 1 and 2
// for real; in the seat of replica 3 a bare host with replica 3's transport identity
// keeps sending random bytes, well-formed messages with bad signatures and messages
// naming another replica as their sender. Clients must still get every result voted by
// f+1 replicas, and every garbage frame must be dropped and counted by its reason.
func TestGarbageAndBadSignaturesFromAReplicaDoNotStopTheOthers(t *testing.T) {
	const requests = 200
	tc := newCluster(t, 4, 4, fastProtocol())
	for i := range 3 {
		tc.start(i)
	}
	me := tc.cl.Replicas[3]
	evil := tc.rawHost(tc.replicaKey(3), []string{me.Addr.String()}, 0, 1, 2)
	evil.Handle(network.ReplicaProtocol, func(peer.ID, []byte) {}) // what the others send: ignored

	// The frames: garbage, a prepare signed with a key that is not replica 3's, a
	// prepare of replica 3 with one signature byte flipped, and a prepare signed as
	// replica 1 sent on replica 3's stream.
	stranger, err := tc.cl.Scheme.GenerateKey(crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	prep := pbft.Prepare{View: 0, Seq: 1, Digest: crypto.Hash([]byte("no such batch"))}
	wrongKey := pbft.Sign(&pbft.KeySigner{Cluster: tc.cl.Name, Key: stranger}, pbft.MsgPrepare, 3, prep)
	flipped := pbft.Sign(&pbft.KeySigner{Cluster: tc.cl.Name, Key: tc.replicaKey(3)}, pbft.MsgPrepare, 3, prep)
	flipped.Sig[len(flipped.Sig)/2] ^= 0x01
	impostor := pbft.Sign(&pbft.KeySigner{Cluster: tc.cl.Name, Key: tc.replicaKey(3)}, pbft.MsgPrepare, 1, prep)
	signedFrames := [][]byte{
		pbft.EncodeEnvelope(&pbft.Envelope{Msg: wrongKey}),
		pbft.EncodeEnvelope(&pbft.Envelope{Msg: flipped}),
	}
	impostorFrame := pbft.EncodeEnvelope(&pbft.Envelope{Msg: impostor})

	type sent struct{ garbage, badSig, impostor uint64 }
	var sentTo [3]sent // what each replica was sent, once the sender stops
	stopEvil := make(chan struct{})
	evilDone := make(chan struct{})
	go func() {
		defer close(evilDone)
		rng := rand.New(rand.NewPCG(3, 3))
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			for i := range 3 {
				to := tc.cl.Replicas[i].PeerID
				junk := make([]byte, 1+rng.IntN(300))
				for k := range junk {
					junk[k] = byte(rng.Uint32())
				}
				junk[0] = 0xff // a CBOR "break": never the start of an envelope
				if evil.Send(to, network.ReplicaProtocol, junk) {
					sentTo[i].garbage++
				}
				for _, f := range signedFrames {
					if evil.Send(to, network.ReplicaProtocol, bytes.Clone(f)) {
						sentTo[i].badSig++
					}
				}
				if evil.Send(to, network.ReplicaProtocol, bytes.Clone(impostorFrame)) {
					sentTo[i].impostor++
				}
			}
			select {
			case <-stopEvil:
				return
			case <-tick.C:
			}
		}
	}()
	stopSending := sync.OnceFunc(func() { close(stopEvil); <-evilDone })
	t.Cleanup(stopSending)

	var clients []*client.Client
	for id := range uint32(4) {
		clients = append(clients, tc.client(id+1, 0))
	}
	tc.runRequests(t, clients, requests/len(clients))
	stopSending()
	if t.Failed() {
		return
	}

	// Every garbage frame sent arrives (nothing is lost on loopback) and is dropped for
	// its reason. Correct replicas send none of these (what they relay, checkpoints of
	// a stable proof and NEW-VIEWs, is accepted from any replica's stream), so every
	// count is exact.
	reasons := []struct {
		name  string
		sent  func(sent) uint64
		exact bool
	}{
		{"malformed frame", func(s sent) uint64 { return s.garbage }, true},
		{"bad signature", func(s sent) uint64 { return s.badSig }, true},
		{"message names another sender than its stream", func(s sent) uint64 { return s.impostor }, true},
	}
	for i := range 3 {
		r := tc.reps[i]
		counted := func() bool {
			d := r.Metrics().Drops()
			for _, rs := range reasons {
				if n, want := d[rs.name], rs.sent(sentTo[i]); n < want || rs.exact && n != want {
					return false
				}
			}
			return true
		}
		waitFor(t, 10*time.Second, fmt.Sprintf("replica %d counted every garbage frame %+v by reason", i, sentTo[i]), counted,
			func() string { return fmt.Sprintf("drops %v, sender stats %+v", r.Metrics().Drops(), evil.Stats()) })
		if sentTo[i].garbage == 0 || sentTo[i].badSig == 0 || sentTo[i].impostor == 0 {
			t.Errorf("replica %d was sent %+v: the test sent nothing of some kind", i, sentTo[i])
		}
	}
	waitFor(t, 10*time.Second, "replicas 0, 1 and 2 executed the same sequence numbers",
		func() bool { ok, _ := sameExecuted(tc.live(), 1); return ok },
		func() string { _, ex := sameExecuted(tc.live(), 1); return fmt.Sprintf("executed %v", ex) })
	t.Logf("replica 0 dropped %v", tc.reps[0].Metrics().Drops())
}

// TestUnknownPeerIsRefused has a host whose transport identity is not in cluster.yaml
// send a validly signed request of a registered client to the primary. The replica must
// refuse the connection (counted in its network stats) and nothing must execute.
func TestUnknownPeerIsRefused(t *testing.T) {
	tc := startCluster(t, 4, 2, fastProtocol())
	unlisted, err := tc.cl.Scheme.GenerateKey(crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	intruder := tc.rawHost(unlisted, nil, 0)
	var replies sync.Map
	intruder.Handle(network.ClientProtocol, func(from peer.ID, _ []byte) { replies.Store(from, true) })

	// The request is client 2's own, correctly signed: only the identity of the peer
	// carrying it is wrong.
	signer := &pbft.KeySigner{Cluster: tc.cl.Name, Key: tc.clientKey(2)}
	req := pbft.Sign(signer, pbft.MsgRequest, 2, pbft.Request{Client: 2, Timestamp: uint64(time.Now().UnixNano()),
		Op: kvstore.Put("intruder", []byte("was here"))})
	if !intruder.Send(tc.cl.Replicas[0].PeerID, network.ClientProtocol, pbft.EncodeEnvelope(&pbft.Envelope{Msg: req})) {
		t.Fatal("the frame was not even queued")
	}
	// The host redials with backoff; each attempt is refused during the handshake.
	primary := tc.reps[0]
	// Were it let in, its request would execute at once: stop waiting then too.
	waitFor(t, 10*time.Second, "the primary refused the unlisted peer's connection three times",
		func() bool { return primary.Network().Refused >= 3 || primary.Status().Executed > 0 },
		func() string { return fmt.Sprintf("primary network stats %+v", primary.Network()) })
	for i, r := range tc.reps {
		if st := r.Status(); st.Executed != 0 {
			t.Errorf("replica %d executed seq %d with no registered client talking", i, st.Executed)
		}
		if d := r.Metrics().Drops()["frame from an unregistered client"]; d != 0 {
			t.Errorf("replica %d read %d frames of the unlisted peer: it was let in", i, d)
		}
	}
	replies.Range(func(k, _ any) bool { t.Errorf("the unlisted peer got an answer from %v", k); return true })

	// A registered client, afterwards, finds no trace of the request.
	c := tc.client(1, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := c.Invoke(ctx, kvstore.Get("intruder"))
	if err != nil {
		t.Fatal(err)
	}
	tc.checkVoters(t, "get", res)
	if r, err := kvstore.DecodeResult(res.Value); err != nil || !r.OK || r.Found {
		t.Errorf("get(intruder) = %+v (%v), want not found", r, err)
	}
	for i := range tc.reps {
		tc.stop(i)
		if n := tc.stores[i].Len(); n != 0 {
			t.Errorf("replica %d's store holds %d keys, want none", i, n)
		}
	}
}

// TestOversizedFrameIsDroppedAndTheReplicaKeepsServing has a registered client's
// identity open a client stream to the primary and declare a frame longer than the
// cluster's max_frame_bytes. The primary must count it, reset that stream, and go on
// serving: the other clients' requests, and the same peer on a new stream.
func TestOversizedFrameIsDroppedAndTheReplicaKeepsServing(t *testing.T) {
	const requests = 40
	tc := startCluster(t, 4, 3, fastProtocol())
	primary := tc.reps[0]
	target := tc.cl.Replicas[0]

	// A bare libp2p host: network.Host never writes a frame above its limit.
	ident, _, err := network.Identity(tc.clientKey(1))
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(libp2p.Identity(ident), libp2p.NoListenAddrs, libp2p.DisableRelay(), libp2p.Ping(false))
	if err != nil {
		t.Fatal(err)
	}
	closeRaw := sync.OnceFunc(func() { h.Close() })
	t.Cleanup(closeRaw)
	h.Peerstore().AddAddrs(target.PeerID, []multiaddr.Multiaddr{target.Addr}, peerstore.PermanentAddrTTL)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := h.NewStream(ctx, target.PeerID, network.ClientProtocol)
	if err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, 4+1024)
	binary.BigEndian.PutUint32(frame, uint32(tc.cl.Protocol.MaxFrameBytes)+1)
	if _, err := s.Write(frame); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the primary counted the oversized frame",
		func() bool { return primary.Network().Oversized >= 1 },
		func() string { return fmt.Sprintf("primary network stats %+v", primary.Network()) })
	// The primary reset the stream: reading it fails.
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := s.Read(make([]byte, 1)); err == nil {
		t.Errorf("read %d bytes from a stream the primary should have reset", n)
	}
	if d := primary.Metrics().Drops(); len(d) != 0 {
		t.Errorf("the oversized frame reached the replica's handler: drops %v", d)
	}
	closeRaw()

	// Other clients, and then the offending client itself, are served.
	tc.runRequests(t, []*client.Client{tc.client(2, 0), tc.client(3, 0)}, requests/2)
	tc.runRequests(t, []*client.Client{tc.client(1, 0)}, requests/2)
	if t.Failed() {
		return
	}
	waitFor(t, 10*time.Second, "every replica, the primary included, executed the same sequence numbers",
		func() bool { ok, _ := sameExecuted(tc.reps, 1); return ok },
		func() string { _, ex := sameExecuted(tc.reps, 1); return fmt.Sprintf("executed %v", ex) })
	if v := primary.Status().View; v != 0 {
		t.Logf("note: the cluster moved to view %d", v)
	}
}
