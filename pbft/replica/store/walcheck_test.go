package store

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/record"
)

// The WALs here are written by Pebble's own LogWriter, the one its commit pipeline
// uses, and read back by Pebble's own record.Reader the way its replay does: checkWAL
// is checked against the real format, not against a writer of ours.

// testLogNum is the log number of the test WALs.
const testLogNum = 7

// wal is a WAL as Pebble wrote it, and where each of its records ends.
type wal struct {
	bytes []byte   // the file, closed: it ends with Pebble's end-of-log mark
	recs  [][]byte // the records written
	ends  []int    // offset just past each record
}

// crashed is the file as a crash would leave it after the last record was written:
// without the end-of-log mark that Close appends (the last 11 bytes).
func (w *wal) crashed() []byte { return w.bytes[:len(w.bytes)-recyclableHeaderSize] }

// writeWAL writes recs with Pebble's LogWriter as log logNum and closes it.
func writeWAL(t testing.TB, logNum uint64, recs [][]byte) *wal {
	t.Helper()
	var buf bytes.Buffer
	lw := record.NewLogWriter(&buf, pebble.FileNum(logNum), record.LogWriterConfig{})
	w := &wal{recs: recs}
	for _, r := range recs {
		end, err := lw.WriteRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		w.ends = append(w.ends, int(end))
	}
	if err := lw.Close(); err != nil {
		t.Fatal(err)
	}
	w.bytes = buf.Bytes()
	if len(w.bytes) != w.ends[len(w.ends)-1]+recyclableHeaderSize {
		t.Fatalf("WAL of %d bytes, last record ends at %d: where is the end-of-log mark?", len(w.bytes), w.ends[len(w.ends)-1])
	}
	return w
}

// testRecords are n records of random sizes, some spanning several 32 KiB blocks.
func testRecords(n int, seed uint64) [][]byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	recs := make([][]byte, n)
	for i := range recs {
		size := 12 + rng.IntN(6000)
		if i%7 == 3 {
			size = 40_000 + rng.IntN(40_000)
		}
		recs[i] = make([]byte, size)
		for j := range recs[i] {
			recs[i][j] = byte(rng.Uint32())
		}
	}
	return recs
}

// pebbleReplays returns the records Pebble's replay reads from a WAL: up to the end,
// or silently up to the first chunk it cannot read (replayWAL in open.go, last WAL).
func pebbleReplays(t testing.TB, b []byte, logNum uint64) [][]byte {
	t.Helper()
	rr := record.NewReader(bytes.NewReader(b), pebble.FileNum(logNum))
	var recs [][]byte
	for {
		r, err := rr.Next()
		var buf bytes.Buffer
		if err == nil {
			_, err = io.Copy(&buf, r)
		}
		if err == io.EOF || record.IsInvalidRecord(err) {
			return recs
		}
		if err != nil {
			t.Fatalf("Pebble's reader: %v", err)
		}
		recs = append(recs, buf.Bytes())
	}
}

func check(b []byte, logNum uint64) error {
	return checkWAL(bytes.NewReader(b), "/data/000007.log", logNum)
}

func mustBeDamage(t *testing.T, what string, err error) *walDamage {
	t.Helper()
	var d *walDamage
	if !errors.As(err, &d) {
		t.Fatalf("%s: checkWAL = %v, want damage", what, err)
	}
	return d
}

func flipped(b []byte, at int) []byte {
	c := bytes.Clone(b)
	c[at] ^= 0x5a
	return c
}

func TestCheckWALAcceptsWhatPebbleWrote(t *testing.T) {
	w := writeWAL(t, testLogNum, testRecords(40, 1))
	if len(w.bytes) < 5*walBlockSize {
		t.Fatalf("test WAL of %d bytes: want several blocks", len(w.bytes))
	}
	for name, b := range map[string][]byte{"closed": w.bytes, "crashed after its last record": w.crashed()} {
		if err := check(b, testLogNum); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if got := pebbleReplays(t, b, testLogNum); len(got) != len(w.recs) {
			t.Errorf("%s: Pebble replays %d records of %d", name, len(got), len(w.recs))
		}
	}
	if err := check(nil, testLogNum); err != nil {
		t.Errorf("empty WAL: %v", err)
	}
}

// The bug: bytes flipped in the middle of the last WAL make Pebble's replay stop there
// without an error. checkWAL calls it damage, naming the file and the offsets.
func TestFlippedBytesInsideTheWALAreDamage(t *testing.T) {
	w := writeWAL(t, testLogNum, testRecords(40, 2))
	at := (w.ends[9] + w.ends[10]) / 2 // inside record 10
	b := flipped(w.bytes, at)
	if got := pebbleReplays(t, b, testLogNum); len(got) > 10 {
		t.Fatalf("Pebble replays %d records past the damage: the test damages nothing", len(got))
	}
	for name, b := range map[string][]byte{"closed": b, "crashed": b[:len(w.crashed())]} {
		err := check(b, testLogNum)
		d := mustBeDamage(t, name, err)
		if d.stop > int64(at) || d.stop < int64(w.ends[9]) || d.later <= d.stop {
			t.Errorf("%s: damage at %d reported as stop %d, proof %d", name, at, d.stop, d.later)
		}
		for _, want := range []string{"/data/000007.log", fmt.Sprint(d.stop), "silently drop"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: %q does not say %q", name, err, want)
			}
		}
	}
}

// A chunk whose log number field is damaged looks to Pebble like the end of the log
// (it takes it for stale data of a recycled file): damage all the same.
func TestFlippedLogNumberIsDamage(t *testing.T) {
	w := writeWAL(t, testLogNum, testRecords(40, 3))
	at := w.ends[12] + 7 // the log number of record 13's first chunk
	b := flipped(w.bytes, at)
	if got := pebbleReplays(t, b, testLogNum); len(got) != 13 {
		t.Fatalf("Pebble replays %d records, want it to stop silently after 13", len(got))
	}
	mustBeDamage(t, "log number", check(b, testLogNum))
}

// A process killed while writing leaves the WAL cut anywhere: never damage.
func TestTornWALTailIsNotDamage(t *testing.T) {
	recs := append(testRecords(6, 4), bytes.Repeat([]byte("the last record "), 6000))
	w := writeWAL(t, testLogNum, recs)
	last := w.ends[len(w.ends)-2]
	cuts := map[int]bool{}
	for cut := 0; cut < len(w.bytes); cut += 97 {
		cuts[cut] = true
	}
	for cut := last; cut < len(w.bytes); cut += 31 { // in the last record, and
		cuts[cut] = true
	}
	for b := 0; b < len(w.bytes); b += walBlockSize { // around its chunk headers
		for cut := max(b-12, last); cut < b+12; cut++ {
			cuts[cut] = true
		}
	}
	for cut := range cuts {
		if cut > len(w.bytes) {
			continue
		}
		if err := check(w.bytes[:cut], testLogNum); err != nil {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		if got := pebbleReplays(t, w.bytes[:cut], testLogNum); cut >= last && len(got) < len(recs)-1 {
			t.Fatalf("cut at %d in the last record: Pebble replays %d records of the %d before it", cut, len(got), len(recs)-1)
		}
	}
}

// Pebble preallocates WAL space: a crash may leave zeros after the last record.
func TestZeroedWALTailIsNotDamage(t *testing.T) {
	w := writeWAL(t, testLogNum, testRecords(20, 5))
	cut := (w.ends[len(w.ends)-2] + w.ends[len(w.ends)-1]) / 2
	b := append(bytes.Clone(w.bytes[:cut]), make([]byte, 3*walBlockSize)...)
	if err := check(b, testLogNum); err != nil {
		t.Fatal(err)
	}
}

// A power loss while the last record was written may keep some of its blocks and lose
// others: not damage (nothing after it was acknowledged). The same hole in a log that
// was closed cleanly is damage: Close came after the record was synced.
func TestLostBlocksOfTheLastRecordAreATornTail(t *testing.T) {
	recs := testRecords(10, 6)
	recs = append(recs, bytes.Repeat([]byte("last record, 4 blocks long "), 5000))
	w := writeWAL(t, testLogNum, recs)
	start := w.ends[len(w.ends)-2]
	hole := (start/walBlockSize + 2) * walBlockSize // a block in the middle of it
	lose := func(b []byte) []byte {
		b = bytes.Clone(b)
		clear(b[hole : hole+walBlockSize])
		return b
	}
	if got := pebbleReplays(t, lose(w.crashed()), testLogNum); len(got) != len(recs)-1 {
		t.Fatalf("Pebble replays %d records, want all but the last", len(got))
	}
	if err := check(lose(w.crashed()), testLogNum); err != nil {
		t.Fatalf("crashed: %v", err)
	}
	d := mustBeDamage(t, "closed", check(lose(w.bytes), testLogNum))
	if !strings.Contains(d.proof, "end-of-log mark") {
		t.Fatalf("proof %q, want the end-of-log mark", d.proof)
	}
}

// Pebble recycles WAL files: a new log written over an older one leaves the older
// one's chunks after its end. They carry the older log number and are never proof.
func TestStaleChunksOfARecycledWALAreNotDamage(t *testing.T) {
	old := writeWAL(t, 3, testRecords(60, 7))
	cur := writeWAL(t, testLogNum, testRecords(20, 8))
	for name, b := range map[string][]byte{"closed": cur.bytes, "crashed": cur.crashed()} {
		recycled := append(bytes.Clone(b), old.bytes[len(b):]...)
		if err := check(recycled, testLogNum); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		damaged := flipped(recycled, cur.ends[5]+100)
		mustBeDamage(t, name+", damaged", check(damaged, testLogNum))
	}
}

// Whatever single byte of a closed WAL is damaged, either checkWAL reports it or
// Pebble still replays every record; in a WAL cut by a crash the same holds for every
// byte before the last record, the one that may have been in flight.
func TestEveryFlippedByteIsReportedOrHarmless(t *testing.T) {
	w := writeWAL(t, testLogNum, testRecords(12, 9))
	positions := map[int]bool{}
	for at := 0; at < len(w.bytes); at += 41 {
		positions[at] = true
	}
	near := append([]int{0}, w.ends...) // every chunk header around record and block starts
	for b := walBlockSize; b < len(w.bytes); b += walBlockSize {
		near = append(near, b)
	}
	for _, p := range near {
		for at := p - 12; at < p+12; at++ {
			if at >= 0 && at < len(w.bytes) {
				positions[at] = true
			}
		}
	}
	lastStart := w.ends[len(w.ends)-2]
	for at := range positions {
		for name, b := range map[string][]byte{"closed": w.bytes, "crashed": w.crashed()} {
			if at >= len(b) || name == "crashed" && at >= lastStart {
				continue
			}
			b := flipped(b, at)
			if check(b, testLogNum) != nil {
				continue
			}
			got := pebbleReplays(t, b, testLogNum)
			if len(got) != len(w.recs) {
				t.Fatalf("%s: byte %d flipped: no damage reported, Pebble replays %d records of %d", name, at, len(got), len(w.recs))
			}
			for i := range got {
				if !bytes.Equal(got[i], w.recs[i]) {
					t.Fatalf("%s: byte %d flipped: no damage reported, record %d differs", name, at, i)
				}
			}
		}
	}
}

// The cost of the check on a 64 MiB WAL (Pebble's default memtable, hence WAL, is 4
// MiB), read from a file as Open reads it (from the page cache): all of it replayed,
// or all of it the stale bytes of a recycled file after a short new log, searched past
// the stop point.
func BenchmarkCheckWAL64MiB(b *testing.B) {
	recs := make([][]byte, 0, 64<<10)
	rec := bytes.Repeat([]byte{0xa5, 0x17, 0x3c}, 333)
	for size := 0; size < 64<<20; size += len(rec) {
		recs = append(recs, rec)
	}
	full := writeWAL(b, testLogNum, recs).bytes
	short := writeWAL(b, testLogNum, recs[:10]).bytes
	recycled := append(bytes.Clone(short), writeWAL(b, 3, recs).bytes[len(short):]...)
	for _, bc := range []struct {
		name string
		wal  []byte
	}{{"replayed", full}, {"recycled", recycled}} {
		b.Run(bc.name, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "000007.log")
			if err := os.WriteFile(path, bc.wal, 0o644); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(bc.wal)))
			for b.Loop() {
				f, err := os.Open(path)
				if err != nil {
					b.Fatal(err)
				}
				err = checkWAL(f, path, testLogNum)
				f.Close()
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
