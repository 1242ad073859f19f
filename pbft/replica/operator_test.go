package replica

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/multiformats/go-multiaddr"

	"github.com/pbftkit/pbft/app/kvstore"
)

// startAgain starts a second replica i beside the running one, with opts changed by
// mod, and returns the error (stopping it, and failing the test, if it started).
func (tc *testCluster) startAgain(i int, mod func(*Options)) error {
	tc.t.Helper()
	key, err := tc.cl.LoadKey(&tc.cl.Replicas[i])
	if err != nil {
		tc.t.Fatal(err)
	}
	opts := Options{Cluster: tc.cl, ID: uint32(i), Key: key, App: kvstore.New(),
		DataDir: filepath.Join(tc.t.TempDir(), "other.data")}
	mod(&opts)
	r, err := Start(opts)
	if err == nil {
		r.Stop()
		tc.t.Fatalf("a second replica %d started beside the running one", i)
	}
	return err
}

func wantAll(t *testing.T, err error, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
}

// A second replica 1 on another data dir is refused before it signs anything, naming
// the replica and the address where the first one answered, over TCP and QUIC; and the
// first one goes on serving.
func TestSecondProcessForOneReplicaIsRefused(t *testing.T) {
	for _, quic := range []bool{false, true} {
		t.Run(map[bool]string{false: "TCP", true: "QUIC"}[quic], func(t *testing.T) {
			tc := newTestClusterOn(t, quic, 1)
			tc.puts(0, 3)
			err := tc.startAgain(1, func(*Options) {})
			addr := tc.cl.Replicas[1].Addr.String()
			wantAll(t, err, "another process is already running replica 1 on "+addr, tc.cl.Replicas[1].PeerID.String(), "stop it")
			tc.puts(3, 6)
		})
	}
}

// A second replica 1 listening elsewhere than the address the cluster lists for it is
// refused too: it probes that address, and the first one answers there.
func TestSecondReplicaListeningElsewhereIsRefusedAtItsListedAddress(t *testing.T) {
	tc := newTestCluster(t)
	err := tc.startAgain(1, func(o *Options) { o.Listen = []string{"/ip4/127.0.0.1/tcp/0"} })
	wantAll(t, err, "another process is already running replica 1 on "+tc.cl.Replicas[1].Addr.String())
}

// A second replica 1 on the data dir of the running one is refused by the lock, saying
// the dir is in use.
func TestDataDirHeldByAnotherReplicaSaysSo(t *testing.T) {
	tc := newTestCluster(t)
	dir := filepath.Join(tc.dir, "replica-1.data")
	err := tc.startAgain(1, func(o *Options) { o.DataDir = dir })
	wantAll(t, err, "replica 1: data dir "+dir+" is in use")
	if strings.Contains(err.Error(), "resource temporarily unavailable") {
		t.Errorf("error %q is Pebble's bare errno", err)
	}
}

// A replica whose address another program holds is refused, naming the address, saying
// nothing there answered as the replica, and what command shows the holder.
func TestReplicaOnAnAddressHeldByAnotherProgramSaysWhatToCheck(t *testing.T) {
	tc := newTestCluster(t)
	if err := tc.reps[3].Stop(); err != nil {
		t.Fatal(err)
	}
	tc.reps[3] = nil
	addr := tc.cl.Replicas[3].Addr
	port, err := addr.ValueForProtocol(multiaddr.P_TCP)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatalf("take replica 3's port: %v", err)
	}
	defer l.Close()
	go func() { // a program that speaks something else: it hangs up
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	err = tc.startAgain(3, func(*Options) {})
	wantAll(t, err, fmt.Sprintf("replica 3: cannot listen on %s: the address is in use", addr),
		"nothing there answered as replica 3", "ss -ltnp 'sport = :"+port+"'")
}
