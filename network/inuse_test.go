package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
)

// boundAddr returns the address h listens on for the transport of listen.
func boundAddr(t *testing.T, h *Host, quic bool) ma.Multiaddr {
	t.Helper()
	for _, a := range h.Addrs() {
		_, err := a.ValueForProtocol(ma.P_QUIC_V1)
		if (err == nil) == quic {
			return a
		}
	}
	t.Fatalf("host %s has no %s address in %v", h.ID(), map[bool]string{true: "QUIC", false: "TCP"}[quic], h.Addrs())
	return nil
}

// A second host with the same identity on an address already in use is refused, saying
// that a peer with its identity answers there: SO_REUSEPORT is off, for TCP and QUIC.
func TestSecondHostOfOneIdentityOnItsAddressIsRefused(t *testing.T) {
	for _, c := range []struct {
		name   string
		listen string
		quic   bool
	}{
		{"TCP", localListen, false},
		{"QUIC", "/ip4/127.0.0.1/udp/0/quic-v1", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			me := newIdentity(t)
			first := startHost(t, me, c.listen, ids(me), func(cfg *Config) { cfg.QUIC = c.quic })
			addr := boundAddr(t, first, c.quic)
			second, err := New(Config{Identity: me.key, Listen: []string{addr.String()}, Allow: ids(me), QUIC: c.quic})
			if err == nil {
				second.Close()
				t.Fatalf("a second host of %s started on %s", me.id, addr)
			}
			var inUse *AddrInUseError
			if !errors.As(err, &inUse) || !inUse.Self || !errors.Is(err, syscall.EADDRINUSE) {
				t.Fatalf("second host: %v, want an *AddrInUseError with Self wrapping EADDRINUSE", err)
			}
			for _, w := range []string{addr.String(), me.id.String(), "another process"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// A host of another identity on an address in use is refused too (binds are exclusive),
// and the error does not claim a twin.
func TestHostOnAnAddressOfAnotherPeerIsRefusedWithoutClaimingATwin(t *testing.T) {
	a, b := newIdentity(t), newIdentity(t)
	first := startHost(t, a, localListen, ids(a, b))
	addr := tcpAddr(t, first)
	_, err := New(Config{Identity: b.key, Listen: []string{addr.String()}, Allow: ids(a, b)})
	var inUse *AddrInUseError
	if !errors.As(err, &inUse) || inUse.Self || inUse.Probe == nil {
		t.Fatalf("host on another peer's address: %v, want an *AddrInUseError without Self, with the probe's reason", err)
	}
	if !strings.Contains(err.Error(), addr.String()) || !strings.Contains(err.Error(), "already in use") {
		t.Errorf("error %q does not name %s as in use", err, addr)
	}
}

// An address held by a program that is not a libp2p host is reported as in use, with
// the probe's reason, and no twin.
func TestHostOnAPortHeldByAnotherProgramIsRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("HTTP/1.0 400 not libp2p\r\n\r\n"))
			c.Close()
		}
	}()
	me := newIdentity(t)
	addr := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", l.Addr().(*net.TCPAddr).Port)
	_, err = New(Config{Identity: me.key, Listen: []string{addr}, Allow: ids(me)})
	var inUse *AddrInUseError
	if !errors.As(err, &inUse) || inUse.Self || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("host on a port held by another program: %v, want an *AddrInUseError without Self", err)
	}
}

// ProbeIdentity finds a live peer by its identity at its address, and not another peer
// there, nor anything at a closed port.
func TestProbeIdentityFindsOnlyTheHolderOfTheKey(t *testing.T) {
	for _, c := range []struct {
		name   string
		listen string
		quic   bool
	}{
		{"TCP", localListen, false},
		{"QUIC", "/ip4/127.0.0.1/udp/0/quic-v1", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, other := newIdentity(t), newIdentity(t)
			h := startHost(t, a, c.listen, ids(a), func(cfg *Config) { cfg.QUIC = c.quic })
			addr := boundAddr(t, h, c.quic)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if ok, err := ProbeIdentity(ctx, a.id, addr); !ok {
				t.Fatalf("probe of %s at its address: %v", a.id, err)
			}
			if ok, err := ProbeIdentity(ctx, other.id, addr); ok || err == nil {
				t.Fatalf("probe of another peer at %s: %v, %v; want false with a reason", addr, ok, err)
			}
		})
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed, _ := ma.NewMultiaddr(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", l.Addr().(*net.TCPAddr).Port))
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if ok, err := ProbeIdentity(ctx, newIdentity(t).id, closed); ok || err == nil {
		t.Fatalf("probe of a closed port: %v, %v; want false with a reason", ok, err)
	}
}

// A host stopped frees its address at once for a new host of the same identity.
func TestRestartedHostGetsItsAddressBack(t *testing.T) {
	me, peer := newIdentity(t), newIdentity(t)
	first, err := New(Config{Identity: me.key, Listen: []string{localListen}, Allow: ids(me, peer)})
	if err != nil {
		t.Fatal(err)
	}
	addr := tcpAddr(t, first)
	// A connection, so the port has sockets in TIME_WAIT or the like when it closes.
	other := startHost(t, peer, localListen, ids(me, peer))
	box := &inbox{}
	other.Handle(ReplicaProtocol, box.handle)
	connect(other, first)
	first.Send(peer.id, ReplicaProtocol, []byte("hello"))
	waitFor(t, "a frame over a connection", func() bool { return box.count(me.id) == 1 })
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := New(Config{Identity: me.key, Listen: []string{addr.String()}, Allow: ids(me, peer)})
	if err != nil {
		t.Fatalf("restart on %s: %v", addr, err)
	}
	again.Close()
}

// A twin listening on every interface is found too: the probe dials loopback, since an
// unspecified address is not dialable.
func TestSecondHostOfOneIdentityOnAllInterfacesIsRefused(t *testing.T) {
	me := newIdentity(t)
	first := startHost(t, me, "/ip4/0.0.0.0/tcp/0", ids(me))
	port, err := tcpAddr(t, first).ValueForProtocol(ma.P_TCP)
	if err != nil {
		t.Fatal(err)
	}
	addr := "/ip4/0.0.0.0/tcp/" + port
	second, err := New(Config{Identity: me.key, Listen: []string{addr}, Allow: ids(me)})
	if err == nil {
		second.Close()
		t.Fatalf("a second host of %s started on %s", me.id, addr)
	}
	var inUse *AddrInUseError
	if !errors.As(err, &inUse) || !inUse.Self || !strings.Contains(err.Error(), addr) {
		t.Fatalf("second host on %s: %v, want an *AddrInUseError with Self naming it", addr, err)
	}
}
