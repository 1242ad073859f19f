package store

import (
	"bufio"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// holdEnv, when set, makes this test binary a helper process that opens the store in
// the directory it names, prints "held", and keeps it open until its stdin closes.
const holdEnv = "PBFT_STORE_TEST_HOLD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(holdEnv); dir != "" {
		s, err := Open(dir, DefaultOptions())
		if err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(2)
		}
		os.Stdout.WriteString("held\n")
		io.Copy(io.Discard, os.Stdin)
		s.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A data dir another process holds open is refused with an error that says so (not
// Pebble's bare "resource temporarily unavailable"), and opens again once that process
// has gone.
func TestDataDirHeldByAnotherProcessSaysSo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	helper := exec.Command(os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), holdEnv+"="+dir)
	stdin, err := helper.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	helper.Stderr = &stderr
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	defer helper.Process.Kill()
	held := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		held <- line
	}()
	select {
	case line := <-held:
		if line != "held\n" {
			helper.Wait()
			t.Fatalf("helper did not open the store: %q %s", line, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("helper did not open the store within 60 s")
	}

	_, err = Open(dir, DefaultOptions())
	var inUse *InUseError
	if !errors.As(err, &inUse) || inUse.SameProcess {
		t.Fatalf("open of a dir held by another process: %v, want an *InUseError of another process", err)
	}
	for _, w := range []string{dir, "in use by another process", filepath.Join(dir, "LOCK")} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	if strings.Contains(err.Error(), "resource temporarily unavailable") {
		t.Errorf("error %q is Pebble's bare errno", err)
	}

	stdin.Close()
	if err := helper.Wait(); err != nil {
		t.Fatalf("helper: %v %s", err, stderr.String())
	}
	s, err := Open(dir, DefaultOptions())
	if err != nil {
		t.Fatalf("open after the other process exited: %v", err)
	}
	s.Close()
}

// Within one process a second Open of a dir is refused too, saying it is this process's,
// and Close releases the directory.
func TestDataDirOpenTwiceInOneProcessIsRefused(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(dir, DefaultOptions())
	var inUse *InUseError
	if !errors.As(err, &inUse) || !inUse.SameProcess || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second open: %v, want an *InUseError of this process naming %s", err, dir)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, DefaultOptions())
	if err != nil {
		t.Fatalf("open after close: %v", err)
	}
	s.Close()
}

// A directory where the LOCK file cannot be created is not reported as in use.
func TestDataDirThatCannotBeLockedIsNotCalledInUse(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(file, "data") // under a regular file: cannot exist
	_, err := Open(dir, DefaultOptions())
	var inUse *InUseError
	if err == nil || errors.As(err, &inUse) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("open under a file: %v, want an error naming %s that is not *InUseError", err, dir)
	}
}
