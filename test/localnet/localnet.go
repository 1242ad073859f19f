// Package localnet is what every test and local run on loopback needs: free ports for
// replicas' listen addresses, and waiting on a condition (never on a fixed sleep, which
// a loaded machine turns into a flake). It depends on the standard library only, so the
// transport's own tests can use it too.
package localnet

import (
	"fmt"
	"net"
	"time"
)

// FreePorts returns n loopback multiaddrs whose ports were free a moment ago: TCP, or
// QUIC (UDP) when quic is set. All n are held open together while they are picked, so
// no two are the same.
func FreePorts(n int, quic bool) ([]string, error) {
	var addrs []string
	var closers []func() error
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	for range n {
		if quic {
			c, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				return nil, fmt.Errorf("no free UDP port on 127.0.0.1: %w", err)
			}
			closers = append(closers, c.Close)
			addrs = append(addrs, fmt.Sprintf("/ip4/127.0.0.1/udp/%d/quic-v1", c.LocalAddr().(*net.UDPAddr).Port))
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("no free TCP port on 127.0.0.1: %w", err)
		}
		closers = append(closers, l.Close)
		addrs = append(addrs, fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", l.Addr().(*net.TCPAddr).Port))
	}
	return addrs, nil
}

// TB is the part of testing.TB that WaitFor uses (so that this package need not import
// testing into the binaries that use FreePorts).
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// WaitFor polls cond until it holds, and fails the test if it does not within d. what
// says what is awaited; detail, if not nil, says what was seen last.
func WaitFor(t TB, d time.Duration, what string, cond func() bool, detail func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			msg := ""
			if detail != nil {
				msg = ": " + detail()
			}
			t.Fatalf("timed out after %v waiting for %s%s", d, what, msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
