package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pbftkit/pbft/pbft"
	"github.com/pbftkit/pbft/pbft/replica/store"
)

// buildCLI builds the pbft binary once per test run, as a user's `go build` would.
func buildCLI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pbft")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// freeBase finds n consecutive free TCP ports on 127.0.0.1.
func freeBase(t *testing.T, n int) int {
	t.Helper()
	for try := 0; try < 100; try++ {
		base := 20000 + rand.IntN(40000)
		ok := true
		var ls []net.Listener
		for i := 0; i < n && ok; i++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+i))
			if err != nil {
				ok = false
				break
			}
			ls = append(ls, l)
		}
		for _, l := range ls {
			l.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free port range")
	return 0
}

func pbftCmd(bin string, args ...string) (string, string, error) {
	var out, errOut bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), err
}

// Four replica processes started by hand from `pbft init` serve `pbft client`, and
// stop cleanly on SIGTERM.
func TestFourProcessClusterServesClientPutAndGet(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildCLI(t)
	dir := t.TempDir()
	base := freeBase(t, 4)
	if out, errOut, err := pbftCmd(bin, "init", "--replicas", "4", "--out", dir, "--base-port", fmt.Sprint(base)); err != nil {
		t.Fatalf("init: %v\n%s%s", err, out, errOut)
	}
	cfg := filepath.Join(dir, "cluster.yaml")
	var procs []*exec.Cmd
	var logs []*bytes.Buffer
	metrics := fmt.Sprintf("127.0.0.1:%d", freeBase(t, 1))
	for i := 0; i < 4; i++ {
		var buf bytes.Buffer
		args := []string{"replica", "--config", cfg, "--id", fmt.Sprint(i)}
		if i == 0 {
			args = append(args, "--metrics", metrics)
		}
		p := exec.Command(bin, args...)
		p.Stdout, p.Stderr = &buf, &buf
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, p)
		logs = append(logs, &buf)
	}
	defer func() {
		for _, p := range procs {
			p.Process.Kill()
		}
	}()
	// The replicas take a moment to listen: retry the first write until it is voted.
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, errOut, err := pbftCmd(bin, "client", "--config", cfg, "--timeout", "3s", "put", "colour", "blue")
		if err == nil {
			if strings.TrimSpace(out) != "OK" || !strings.Contains(errOut, "voted by replicas") {
				t.Fatalf("put printed %q / %q", out, errOut)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("put never succeeded: %v\n%s\nreplica 0 log:\n%s", err, errOut, logs[0])
		}
	}
	out, errOut, err := pbftCmd(bin, "client", "--config", cfg, "--id", "2", "get", "colour")
	if err != nil || strings.TrimSpace(out) != "blue" {
		t.Fatalf("get: %v %q %q", err, out, errOut)
	}
	if out, _, err := pbftCmd(bin, "client", "--config", cfg, "delete", "colour"); err != nil || strings.TrimSpace(out) != "OK" {
		t.Fatalf("delete: %v %q", err, out)
	}
	if out, _, err := pbftCmd(bin, "client", "--config", cfg, "get", "colour"); err != nil || strings.TrimSpace(out) != "(not found)" {
		t.Fatalf("get after delete: %v %q", err, out)
	}
	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `pbft_requests_executed_total{replica="0"}`) {
		t.Fatalf("metrics lack the replica's counters:\n%.2000s", body)
	}
	for i, p := range procs {
		p.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- p.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("replica %d exited with %v after SIGTERM:\n%s", i, err, logs[i])
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("replica %d did not stop on SIGTERM", i)
		}
		if !strings.Contains(logs[i].String(), "replica stopped") {
			t.Fatalf("replica %d log lacks a clean stop:\n%s", i, logs[i])
		}
	}
	// Durable records: each replica kept a data directory beside cluster.yaml.
	if _, err := os.Stat(filepath.Join(dir, "replica-0.data")); err != nil {
		t.Fatalf("no data directory: %v", err)
	}
}

// Bad user input exits non-zero with a message naming the file and the field.
func TestCLIRejectsBadInputNamingFileAndField(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildCLI(t)
	dir := t.TempDir()
	if _, errOut, err := pbftCmd(bin, "init", "--replicas", "4", "--out", dir); err != nil {
		t.Fatalf("init: %v %s", err, errOut)
	}
	cfg := filepath.Join(dir, "cluster.yaml")
	broken := filepath.Join(dir, "broken.yaml")
	raw, _ := os.ReadFile(cfg)
	os.WriteFile(broken, bytes.Replace(raw, []byte("tick:"), []byte("tock: 1\n  tick:"), 1), 0o644)
	cases := []struct {
		args []string
		want []string
	}{
		{[]string{"init", "--replicas", "3", "--out", t.TempDir()}, []string{"--replicas", "at least 4"}},
		{[]string{"init", "--replicas", "4", "--out", dir}, []string{"already exists"}},
		{[]string{"replica", "--config", filepath.Join(dir, "missing.yaml"), "--id", "0"}, []string{"missing.yaml"}},
		{[]string{"replica", "--config", broken, "--id", "0"}, []string{broken, "unknown field \"tock\""}},
		{[]string{"replica", "--config", cfg, "--id", "7"}, []string{"--id", "0..3"}},
		{[]string{"client", "--config", cfg, "--id", "99", "get", "k"}, []string{"--id", "no client with id 99"}},
		{[]string{"client", "--config", cfg, "frobnicate", "k"}, []string{"unknown operation"}},
		{[]string{"sim", "--replicas", "2"}, []string{"--replicas"}},
	}
	for _, tc := range cases {
		_, errOut, err := pbftCmd(bin, tc.args...)
		if err == nil {
			t.Errorf("pbft %v: exit 0", tc.args)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(errOut, w) {
				t.Errorf("pbft %v: stderr %q lacks %q", tc.args, errOut, w)
			}
		}
	}
	// A missing key file names itself.
	os.Remove(filepath.Join(dir, "replica-1.key"))
	if _, errOut, err := pbftCmd(bin, "replica", "--config", cfg, "--id", "1"); err == nil || !strings.Contains(errOut, "replicas[1].key_file") {
		t.Errorf("missing key file: %v %q", err, errOut)
	}
	// With no replica running, a client gives up with exit status 1.
	if _, errOut, err := pbftCmd(bin, "client", "--config", cfg, "--timeout", "1s", "get", "k"); err == nil || !strings.Contains(errOut, "f+1=2") {
		t.Errorf("client without a cluster: %v %q", err, errOut)
	}
}

// syncBuffer is a bytes.Buffer a process writes to while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runningReplica starts `pbft replica --config cfg --id id` and waits until it serves;
// it is killed at the end of the test. The returned stop sends SIGTERM and checks that
// it exits cleanly.
func runningReplica(t *testing.T, bin, cfg string, id int) (log *syncBuffer, stop func()) {
	t.Helper()
	log = &syncBuffer{}
	p := exec.Command(bin, "replica", "--config", cfg, "--id", fmt.Sprint(id))
	p.Stdout, p.Stderr = log, log
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- p.Wait() }()
	t.Cleanup(func() { p.Process.Kill() })
	// Generous: a loaded machine running the race detector elsewhere.
	deadline := time.After(60 * time.Second)
	for !strings.Contains(log.String(), "replica started") {
		select {
		case err := <-exited:
			t.Fatalf("replica %d exited before serving: %v\n%s", id, err, log)
		case <-deadline:
			t.Fatalf("replica %d did not start within 60 s:\n%s", id, log)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return log, func() {
		t.Helper()
		p.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("replica %d exited with %v after SIGTERM:\n%s", id, err, log)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("replica %d did not stop on SIGTERM", id)
		}
	}
}

// initCluster runs `pbft init` on free ports and returns the path of cluster.yaml.
func initCluster(t *testing.T, bin string, extra ...string) string {
	t.Helper()
	dir := t.TempDir()
	args := append([]string{"init", "--replicas", "4", "--out", dir, "--base-port", fmt.Sprint(freeBase(t, 4))}, extra...)
	if out, errOut, err := pbftCmd(bin, args...); err != nil {
		t.Fatalf("init: %v\n%s%s", err, out, errOut)
	}
	return filepath.Join(dir, "cluster.yaml")
}

// A second `pbft replica --id 1` on another data dir, while replica 1 runs, exits
// non-zero saying that another process runs replica 1 on its address; the first one
// keeps running and stops cleanly. Over TCP and QUIC.
func TestSecondProcessForOneReplicaIsRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildCLI(t)
	for _, transport := range []string{"tcp", "quic"} {
		t.Run(transport, func(t *testing.T) {
			var extra []string
			if transport == "quic" {
				extra = []string{"--quic"}
			}
			cfg := initCluster(t, bin, extra...)
			log, stop := runningReplica(t, bin, cfg, 1)
			_, errOut, err := pbftCmd(bin, "replica", "--config", cfg, "--id", "1", "--data", filepath.Join(t.TempDir(), "other.data"))
			if err == nil {
				t.Fatalf("a second replica 1 on another data dir exited 0:\n%s", errOut)
			}
			addr := regexp.MustCompile(`address: (\S+)`).FindAllStringSubmatch(mustReadFile(t, cfg), -1)[1][1]
			want := "another process is already running replica 1 on " + addr
			if !strings.Contains(errOut, want) {
				t.Fatalf("stderr %q lacks %q", errOut, want)
			}
			if strings.Contains(log.String(), "replica stopped") {
				t.Fatalf("the first replica 1 stopped:\n%s", log)
			}
			stop()
		})
	}
}

// A second `pbft replica --id 1` on the same data dir exits non-zero saying the dir is
// in use by another process, not Pebble's "resource temporarily unavailable".
func TestDataDirHeldByAnotherProcessSaysSo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildCLI(t)
	cfg := initCluster(t, bin)
	_, stop := runningReplica(t, bin, cfg, 1)
	_, errOut, err := pbftCmd(bin, "replica", "--config", cfg, "--id", "1")
	if err == nil {
		t.Fatalf("a second replica 1 on the same data dir exited 0:\n%s", errOut)
	}
	data := filepath.Join(filepath.Dir(cfg), "replica-1.data")
	want := "replica 1: data dir " + data + " is in use by another process (is replica 1 already running?)"
	if !strings.Contains(errOut, want) || strings.Contains(errOut, "resource temporarily unavailable") {
		t.Fatalf("stderr %q lacks %q", errOut, want)
	}
	stop()
}

// `pbft init` writes private keys 0600; one made readable by others is refused at
// start, naming the file and the chmod that fixes it, and accepted again after it.
func TestPrivateKeyReadableByOthersIsRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildCLI(t)
	cfg := initCluster(t, bin)
	key := filepath.Join(filepath.Dir(cfg), "replica-2.key")
	if st, err := os.Stat(key); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("pbft init wrote %s with mode %v (%v), want 0600", key, st.Mode().Perm(), err)
	}
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, err := pbftCmd(bin, "replica", "--config", cfg, "--id", "2")
	if err == nil {
		t.Fatalf("replica 2 started with a key of mode 0644:\n%s", errOut)
	}
	for _, w := range []string{"replicas[2].key_file", key + ": private key is readable by group or others (mode 0644); run: chmod 600 " + key} {
		if !strings.Contains(errOut, w) {
			t.Errorf("stderr %q lacks %q", errOut, w)
		}
	}
	if err := os.Chmod(key, 0o600); err != nil {
		t.Fatal(err)
	}
	_, stop := runningReplica(t, bin, cfg, 2)
	stop()
}

func mustReadFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A replica whose records are damaged (bytes flipped in the middle of its write-ahead
// log) exits 1 at start, printing the store's message: the file, and how to recover.
// Once its data directory is moved away as the message says, it starts.
func TestReplicaWithDamagedRecordsExitsSayingHowToRecover(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildCLI(t)
	dir := t.TempDir()
	base := freeBase(t, 4)
	if out, errOut, err := pbftCmd(bin, "init", "--replicas", "4", "--out", dir, "--base-port", fmt.Sprint(base)); err != nil {
		t.Fatalf("init: %v\n%s%s", err, out, errOut)
	}
	cfg := filepath.Join(dir, "cluster.yaml")
	data := filepath.Join(dir, "replica-0.data")
	wal := damagedStore(t, data)

	_, errOut, err := pbftCmd(bin, "replica", "--config", cfg, "--id", "0")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("replica on damaged records: %v, want exit status 1\n%s", err, errOut)
	}
	for _, want := range []string{"pbft: replica 0: store " + data + ": damaged records: WAL " + wal,
		"move the directory " + data + " away", "state transfer"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}

	if err := os.Rename(data, data+".damaged"); err != nil {
		t.Fatal(err)
	}
	var log syncBuffer
	p := exec.Command(bin, "replica", "--config", cfg, "--id", "0")
	p.Stdout, p.Stderr = &log, &log
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(log.String(), "replica started") {
		select {
		case err := <-done:
			t.Fatalf("replica on an empty directory exited: %v\n%s", err, log.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Process.Kill()
			t.Fatalf("replica on an empty directory did not start:\n%s", log.String())
		}
	}
	p.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("replica exited with %v after SIGTERM:\n%s", err, log.String())
		}
	case <-time.After(20 * time.Second):
		p.Process.Kill()
		t.Fatal("replica did not stop on SIGTERM")
	}
}

// damagedStore writes a store in dir whose write-ahead log (returned) spans several
// blocks, and flips bytes in its middle.
func damagedStore(t *testing.T, dir string) string {
	t.Helper()
	s, err := store.Open(dir, store.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	for n := range uint64(100) {
		rec := pbft.Record{Kind: pbft.RecordStable, Seq: n, State: bytes.Repeat([]byte{byte(n)}, 2000)}
		if err := s.Append([]pbft.Record{rec}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	logs, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil || len(logs) != 1 {
		t.Fatalf("WALs %v (%v): want one", logs, err)
	}
	b, err := os.ReadFile(logs[0])
	if err != nil {
		t.Fatal(err)
	}
	for i := len(b) / 2; i < len(b)/2+8; i++ {
		b[i] ^= 0xff
	}
	if err := os.WriteFile(logs[0], b, 0o644); err != nil {
		t.Fatal(err)
	}
	return logs[0]
}
