package network

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"github.com/pbftkit/pbft/test/localnet"
	"sync"
	"testing"
	"time"

	libp2pcrypto "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

const localListen = "/ip4/127.0.0.1/tcp/0"

// identity is a fresh libp2p key and its peer ID.
type identity struct {
	key libp2pcrypto.PrivKey
	id  peer.ID
}

func newIdentity(t testing.TB) identity {
	t.Helper()
	k, _, err := libp2pcrypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return identity{k, id}
}

func ids(xs ...identity) []peer.ID {
	out := make([]peer.ID, len(xs))
	for i, x := range xs {
		out[i] = x.id
	}
	return out
}

// startHost starts a host closed at the end of the test. An empty listen
// address makes a client.
func startHost(t testing.TB, me identity, listen string, allow []peer.ID, mod ...func(*Config)) *Host {
	t.Helper()
	cfg := Config{Identity: me.key, Allow: allow}
	if listen != "" {
		cfg.Listen = []string{listen}
	}
	for _, m := range mod {
		m(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Error(err)
		}
	})
	return h
}

// connect makes each host in from know the address of to.
func connect(to *Host, from ...*Host) {
	for _, f := range from {
		f.AddPeer(to.ID(), to.Addrs())
	}
}

// tcpAddr returns the host's loopback TCP address.
func tcpAddr(t testing.TB, h *Host) ma.Multiaddr {
	t.Helper()
	for _, a := range h.Addrs() {
		if _, err := a.ValueForProtocol(ma.P_TCP); err == nil {
			return a
		}
	}
	t.Fatalf("host %s has no TCP address in %v", h.ID(), h.Addrs())
	return nil
}

// waitFor waits on cond with a generous deadline (localnet.WaitFor).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	localnet.WaitFor(t, 15*time.Second, what, cond, nil)
}

// inbox records the frames a handler receives, per sender.
type inbox struct {
	mu     sync.Mutex
	frames map[peer.ID][][]byte
}

func (b *inbox) handle(from peer.ID, f []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.frames == nil {
		b.frames = make(map[peer.ID][][]byte)
	}
	b.frames[from] = append(b.frames[from], f)
}

func (b *inbox) from(p peer.ID) [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([][]byte(nil), b.frames[p]...)
}

func (b *inbox) count(p peer.ID) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.frames[p])
}

func (b *inbox) contains(p peer.ID, f []byte) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, g := range b.frames[p] {
		if bytes.Equal(f, g) {
			return true
		}
	}
	return false
}

// testFrame builds frame seq of a sender: the sequence number, then a body
// of seq-dependent length and content, so reordering and corruption show.
func testFrame(sender byte, seq int) []byte {
	f := make([]byte, 8+seq%700)
	binary.BigEndian.PutUint64(f, uint64(seq))
	for i := 8; i < len(f); i++ {
		f[i] = sender ^ byte(seq*31+i)
	}
	return f
}

func checkFrames(sender byte, got [][]byte) error {
	for i, f := range got {
		if want := testFrame(sender, i); !bytes.Equal(f, want) {
			return fmt.Errorf("frame %d from sender %d: got %d bytes (seq %d), want %d bytes",
				i, sender, len(f), binary.BigEndian.Uint64(append(f, make([]byte, 8)...)), len(want))
		}
	}
	return nil
}
