package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble"
	"go.uber.org/zap"

	"github.com/pbftkit/pbft/pbft"
)

// filesOf returns the paths of dir's files whose names end with suffix.
func filesOf(t *testing.T, dir, suffix string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), suffix) {
			paths = append(paths, filepath.Join(dir, e.Name()))
		}
	}
	return paths
}

// theWAL returns the path of dir's only WAL and its size.
func theWAL(t *testing.T, dir string) (string, int64) {
	t.Helper()
	logs := filesOf(t, dir, ".log")
	if len(logs) != 1 {
		t.Fatalf("%s holds WALs %v, want one", dir, logs)
	}
	fi, err := os.Stat(logs[0])
	if err != nil {
		t.Fatal(err)
	}
	return logs[0], fi.Size()
}

// appendSlots appends recs one slot (four records, or five with a checkpoint) at a
// time: one Pebble batch, so one WAL record, each.
func appendSlots(t *testing.T, s *Store, recs []pbft.Record) {
	t.Helper()
	for len(recs) > 0 {
		n := min(4, len(recs))
		if n < len(recs) && recs[n].Kind == pbft.RecordStable {
			n++
		}
		if err := s.Append(recs[:n]); err != nil {
			t.Fatal(err)
		}
		recs = recs[n:]
	}
}

// flipBytes damages n bytes of the file at path from offset at.
func flipBytes(t *testing.T, path string, at int64, n int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		b[at+int64(i)] ^= 0xff
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// copyDir copies the files of dir (a closed store) into a new directory.
func copyDir(t *testing.T, dir string) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// mustBeDamaged checks that err is Open's damage error for dir, naming what.
func mustBeDamaged(t *testing.T, err error, dir string, what ...string) {
	t.Helper()
	var d *DamageError
	if !errors.Is(err, ErrDamaged) || !errors.As(err, &d) || d.Dir != dir {
		t.Fatalf("error %v: want a *DamageError for %s", err, dir)
	}
	for _, want := range append(what, dir, "move the directory", "state transfer") {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// Bytes flipped in the middle of the WAL (not a torn tail): Pebble alone would open
// the store without a word and without every record after them; Open refuses it,
// naming the file and saying how to recover, and keeps refusing (it changed nothing).
func TestDamageInsideTheWALStopsTheStoreAtOpen(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, testOptions(t))
	recs := history(0, 1, 120, 8)
	appendSlots(t, s, recs)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Pebble's Close does not flush the memtable: the records are in the WAL only.
	if ssts := filesOf(t, dir, ".sst"); len(ssts) != 0 {
		t.Fatalf("tables %v after Close: want the records in the WAL only", ssts)
	}
	wal, size := theWAL(t, dir)
	if size < 4*walBlockSize {
		t.Fatalf("WAL of %d bytes: want several 32 KiB blocks", size)
	}
	flipBytes(t, wal, size/2, 8)
	plain := copyDir(t, dir)

	for range 2 {
		s, err := Open(dir, testOptions(t))
		if err == nil {
			n := s.Len()
			s.Close()
			t.Fatalf("Open of a store whose WAL is damaged: no error, %d records of %d", n, len(recs))
		}
		mustBeDamaged(t, err, dir, wal)
	}

	// Pebble alone would have opened the same bytes and dropped records in silence.
	db, err := pebble.Open(plain, &pebble.Options{Logger: pebbleLogger{zap.NewNop()}})
	if err != nil {
		t.Fatalf("Pebble alone: %v", err)
	}
	defer db.Close()
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: recordLower, UpperBound: recordUpper})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	if n >= len(recs) {
		t.Fatalf("Pebble alone kept all %d records: the test damages nothing Pebble drops", n)
	}
}

// A process killed while it appended leaves the WAL cut in its last record: Open
// recovers every record before it, and the store goes on from there.
func TestTornWALTailRecoversTheRecordsBeforeIt(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, testOptions(t))
	before := history(0, 1, 40, 8)
	appendSlots(t, s, before)
	_, start := theWAL(t, dir) // every append is synced: the WAL is on disk up to here
	// The last append, one WAL record of several blocks.
	if err := s.Append([]pbft.Record{stableRec(48, 100_000)}); err != nil {
		t.Fatal(err)
	}
	wal, end := theWAL(t, dir)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(wal, (start+end)/2); err != nil {
		t.Fatal(err)
	}

	s = mustOpen(t, dir, testOptions(t))
	checkRecords(t, "after a torn tail", mustLoad(t, s), before)
	more := []pbft.Record{prepareRec(1, 41)}
	if err := s.Append(more); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dir, testOptions(t))
	defer s.Close()
	checkRecords(t, "after a torn tail and one more append", mustLoad(t, s), append(before, more...))
}

// Bytes flipped inside a table (the records flushed from the WAL) stop Open too: Pebble
// reports it as corruption, which Open reports as damage, naming the table.
func TestDamagedTableStopsTheStoreAtOpen(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, testOptions(t))
	appendSlots(t, s, history(0, 1, 120, 8))
	if err := s.db.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ssts := filesOf(t, dir, ".sst")
	if len(ssts) != 1 {
		t.Fatalf("tables %v after a flush: want one", ssts)
	}
	fi, err := os.Stat(ssts[0])
	if err != nil {
		t.Fatal(err)
	}
	flipBytes(t, ssts[0], fi.Size()/2, 8)

	s, err = Open(dir, testOptions(t))
	if err == nil {
		s.Close()
		t.Fatal("Open of a store with a damaged table: no error")
	}
	if !pebble.IsCorruptionError(err) {
		t.Errorf("error %v: not Pebble's corruption", err)
	}
	mustBeDamaged(t, err, dir, strings.TrimSuffix(filepath.Base(ssts[0]), ".sst"))
}
