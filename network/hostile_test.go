package network

import (
	"context"
	"encoding/binary"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	p2pnet "github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
)

// Admitted peers can still be hostile: these tests hold the transport to the bounds a
// Byzantine replica or client must not get past.

// rawStream opens a bare libp2p stream from h to to on p.
func rawStream(t *testing.T, h *Host, to peer.ID, p protocol.ID) p2pnet.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := h.h.NewStream(ctx, to, p)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// isReset waits (up to 10 s) for st to be reset by the other side.
func isReset(st p2pnet.Stream) bool {
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := st.Read(make([]byte, 1))
	return errors.Is(err, p2pnet.ErrReset)
}

// A client may not open replica streams when the replica protocol lists its peers.
func TestPeerNotAdmittedOnAProtocolIsRefusedOnIt(t *testing.T) {
	replica, other, client := newIdentity(t), newIdentity(t), newIdentity(t)
	r := startHost(t, replica, localListen, ids(other, client), func(c *Config) {
		c.ProtocolPeers = map[protocol.ID][]peer.ID{ReplicaProtocol: {other.id}}
	})
	box := &inbox{}
	r.Handle(ReplicaProtocol, box.handle)
	r.Handle(ClientProtocol, box.handle)
	c := startHost(t, client, "", ids(replica))
	connect(r, c)
	st := rawStream(t, c, r.ID(), ReplicaProtocol)
	var frame [8]byte
	binary.BigEndian.PutUint32(frame[:4], 4)
	st.Write(frame[:])
	if !isReset(st) {
		t.Fatal("a client's replica stream was not reset")
	}
	c.Send(r.ID(), ClientProtocol, []byte("hello"))
	waitFor(t, "the client's frame on its own protocol", func() bool { return box.count(client.id) == 1 })
	if r.Stats().Refused == 0 {
		t.Fatal("the refusal was not counted")
	}
}

// One peer holds at most MaxInboundStreams streams per protocol: a newer one closes its
// oldest, so a peer that reconnects is never locked out by its own stale streams.
func TestPeerHoldsAtMostMaxInboundStreamsTheNewest(t *testing.T) {
	replica, client := newIdentity(t), newIdentity(t)
	r := startHost(t, replica, localListen, ids(client))
	box := &inbox{}
	r.Handle(ClientProtocol, box.handle)
	c := startHost(t, client, "", ids(replica))
	connect(r, c)
	const extra = 3
	var streams []p2pnet.Stream
	for i := 0; i < MaxInboundStreams+extra; i++ {
		st := rawStream(t, c, r.ID(), ClientProtocol)
		// A frame, awaited, makes the streams known to the other side in order.
		st.Write([]byte{0, 0, 0, 1, byte(i)})
		waitFor(t, "the stream's frame", func() bool { return box.count(client.id) == i+1 })
		streams = append(streams, st)
	}
	for i, st := range streams[:extra] {
		if !isReset(st) {
			t.Fatalf("old stream %d was not closed", i)
		}
	}
	for i, st := range streams[extra:] {
		st.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := st.Read(make([]byte, 1)); errors.Is(err, p2pnet.ErrReset) {
			t.Fatalf("new stream %d was closed", extra+i)
		}
	}
	if got := r.Stats().Refused; got != extra {
		t.Fatalf("Refused = %d, want %d", got, extra)
	}
}

// A frame that starts and never finishes loses its stream after FrameTimeout instead
// of pinning its buffer; the peer's next stream works.
func TestStalledFrameLosesItsStream(t *testing.T) {
	replica, client := newIdentity(t), newIdentity(t)
	r := startHost(t, replica, localListen, ids(client), func(c *Config) { c.FrameTimeout = 300 * time.Millisecond })
	box := &inbox{}
	r.Handle(ClientProtocol, box.handle)
	c := startHost(t, client, "", ids(replica))
	connect(r, c)
	st := rawStream(t, c, r.ID(), ClientProtocol)
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], 1000)
	st.Write(hdr[:])
	st.Write(make([]byte, 10)) // and then nothing
	if !isReset(st) {
		t.Fatal("a stalled frame's stream was not reset")
	}
	// An idle stream between frames is fine: no deadline applies there.
	c.Send(r.ID(), ClientProtocol, []byte("one"))
	waitFor(t, "the first frame", func() bool { return box.count(client.id) == 1 })
	time.Sleep(500 * time.Millisecond) // longer than FrameTimeout, idle on purpose
	c.Send(r.ID(), ClientProtocol, []byte("two"))
	waitFor(t, "a frame after an idle spell", func() bool { return box.count(client.id) == 2 })
}

// The bytes queued for a peer that does not take them are bounded, not just the frames.
func TestQueuedBytesPerPeerAreBounded(t *testing.T) {
	me, dead := newIdentity(t), newIdentity(t)
	// The budget is never below two frames of the largest size: here 64 KiB.
	h := startHost(t, me, localListen, ids(dead), func(c *Config) { c.QueueBytes, c.MaxFrame = 1, 32<<10 })
	h.AddPeer(dead.id, []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/1")}) // nothing listens
	frame := make([]byte, 16<<10)
	sent := 0
	for i := 0; i < 20; i++ {
		if h.Send(dead.id, ReplicaProtocol, frame) {
			sent++
		}
	}
	if sent > 5 || h.Stats().QueueDrops < 15 {
		t.Fatalf("queued %d frames of 16 KiB under a 64 KiB budget (%d drops)", sent, h.Stats().QueueDrops)
	}
}

// A healthy reader slower than its sender keeps its stream: the write deadline is
// renewed with every frame, so only a reader that stops makes it fire.
func TestSlowButSteadyReaderKeepsItsStream(t *testing.T) {
	sender, reader := newIdentity(t), newIdentity(t)
	s := startHost(t, sender, localListen, ids(reader), func(c *Config) { c.FrameTimeout = 300 * time.Millisecond })
	var got atomic.Int64
	r := startHost(t, reader, localListen, ids(sender), func(c *Config) { c.FrameTimeout = 300 * time.Millisecond })
	r.Handle(ReplicaProtocol, func(peer.ID, []byte) {
		time.Sleep(2 * time.Millisecond) // a slow consumer: the stream backs up
		got.Add(1)
	})
	s.AddPeer(r.ID(), r.Addrs())
	frame := make([]byte, 32<<10)
	const frames = 400 // about a second of reading, several FrameTimeouts
	for i := 0; i < frames; i++ {
		for !s.Send(r.ID(), ReplicaProtocol, frame) {
			time.Sleep(time.Millisecond)
		}
	}
	waitFor(t, "every frame at the slow reader", func() bool { return got.Load() == frames })
	if st := s.Stats(); st.Reconnects != 0 || st.Lost != 0 {
		t.Fatalf("a slow but steady reader lost its stream: %+v", st)
	}
}
