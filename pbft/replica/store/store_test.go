package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/zap"

	"github.com/pbftkit/pbft/crypto"
	"github.com/pbftkit/pbft/pbft"
)

// Records of every kind, shaped like the ones the core emits (signatures are filler:
// the store neither checks nor needs them).

func sig(from uint32, salt uint64) []byte {
	s := make([]byte, 64)
	binary.BigEndian.PutUint64(s, salt)
	s[63] = byte(from)
	return s
}

func digestOf(seq uint64) crypto.Digest {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	return crypto.Hash([]byte("batch"), b[:])
}

func signed(t pbft.MsgType, from uint32, body any, salt uint64) pbft.Signed {
	return pbft.Signed{Type: t, From: from, Body: pbft.Marshal(body), Sig: sig(from, salt)}
}

func request(client pbft.ClientID, ts uint64) pbft.Signed {
	return signed(pbft.MsgRequest, uint32(client),
		pbft.Request{Client: client, Timestamp: ts, Op: []byte(fmt.Sprintf("put k%d v%d", ts, ts))}, ts)
}

func prePrepareRec(view, seq uint64) pbft.Record {
	pp := pbft.PrePrepare{View: view, Seq: seq, Digest: digestOf(seq)}
	env := pbft.Envelope{
		Msg:   signed(pbft.MsgPrePrepare, uint32(view%4), pp, seq),
		Batch: []pbft.Signed{request(7, seq), request(8, seq)},
	}
	return pbft.Record{Kind: pbft.RecordMessage, View: view, Seq: seq, Env: env}
}

func prepareRec(view, seq uint64) pbft.Record {
	p := pbft.Prepare{View: view, Seq: seq, Digest: digestOf(seq)}
	return pbft.Record{Kind: pbft.RecordMessage, View: view, Seq: seq,
		Env: pbft.Envelope{Msg: signed(pbft.MsgPrepare, 1, p, seq)}}
}

func commitRec(view, seq uint64) pbft.Record {
	c := pbft.Commit{View: view, Seq: seq, Digest: digestOf(seq)}
	return pbft.Record{Kind: pbft.RecordMessage, View: view, Seq: seq,
		Env: pbft.Envelope{Msg: signed(pbft.MsgCommit, 1, c, seq)}}
}

func viewChangeRec(view uint64) pbft.Record {
	vc := pbft.ViewChange{NewView: view, StableSeq: 0}
	return pbft.Record{Kind: pbft.RecordMessage, View: view,
		Env: pbft.Envelope{Msg: signed(pbft.MsgViewChange, 1, vc, view)}}
}

func certRec(view, seq uint64) pbft.Record {
	pp := pbft.PrePrepare{View: view, Seq: seq, Digest: digestOf(seq)}
	p := pbft.Prepare{View: view, Seq: seq, Digest: digestOf(seq)}
	cert := pbft.PreparedCert{
		PrePrepare: signed(pbft.MsgPrePrepare, uint32(view%4), pp, seq),
		Prepares:   []pbft.Signed{signed(pbft.MsgPrepare, 1, p, seq), signed(pbft.MsgPrepare, 2, p, seq)},
	}
	return pbft.Record{Kind: pbft.RecordPrepared, View: view, Seq: seq, Cert: cert}
}

func stableRec(seq uint64, appBytes int) pbft.Record {
	app := make([]byte, appBytes)
	for i := range app {
		app[i] = byte(i*31 + int(seq))
	}
	clients := []pbft.ClientRecord{
		{Client: 7, Low: seq, Replies: []pbft.CachedReply{{Timestamp: seq + 1, Result: []byte("ok")}}},
		{Client: 8, Low: seq - 1},
	}
	state := pbft.Marshal(pbft.CheckpointState{App: app, Clients: clients})
	d := pbft.StateDigest(app, clients)
	var proof []pbft.Signed
	for from := uint32(0); from < 3; from++ {
		proof = append(proof, signed(pbft.MsgCheckpoint, from, pbft.Checkpoint{Seq: seq, State: d}, seq))
	}
	return pbft.Record{Kind: pbft.RecordStable, Seq: seq, Proof: proof, State: state}
}

// history is what a replica might persist through seq: per slot its pre-prepare,
// prepare, certificate and commit, and a stable checkpoint every interval slots.
func history(view, from, through, interval uint64) []pbft.Record {
	var recs []pbft.Record
	for n := from; n <= through; n++ {
		recs = append(recs, prePrepareRec(view, n), prepareRec(view, n), certRec(view, n), commitRec(view, n))
		if n%interval == 0 {
			recs = append(recs, stableRec(n, 1024))
		}
	}
	return recs
}

// testOptions are DefaultOptions with Pebble's log dropped.
func testOptions(testing.TB) Options {
	return Options{Sync: true, Logger: zap.NewNop()}
}

func mustOpen(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func mustLoad(t testing.TB, s *Store) []pbft.Record {
	t.Helper()
	recs, err := s.Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return recs
}

// recordsEqual compares records as their encoding does: nil and empty containers alike.
// Byte strings (a checkpoint state may be MBs) are compared whole, not byte by byte.
var recordsEqual = cmp.Options{
	cmpopts.EquateEmpty(),
	cmp.FilterValues(func(a, b []byte) bool { return len(a) > 0 || len(b) > 0 },
		cmp.Comparer(bytes.Equal)),
}

func checkRecords(t testing.TB, what string, got, want []pbft.Record) {
	t.Helper()
	if diff := cmp.Diff(want, got, recordsEqual); diff != "" {
		t.Fatalf("%s: records differ (-want +got):\n%s", what, diff)
	}
}

// rawPebble opens the store's database directly, as a test's way to tamper with it.
func rawPebble(t testing.TB, dir string) *pebble.DB {
	t.Helper()
	db, err := pebble.Open(dir, pebbleOptions(zap.NewNop()))
	if err != nil {
		t.Fatalf("pebble.Open: %v", err)
	}
	return db
}

func TestRecordsSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	want := []pbft.Record{
		prePrepareRec(0, 1), prepareRec(0, 1), certRec(0, 1), commitRec(0, 1),
		stableRec(2, 1<<20), // a stable checkpoint with a MB of application state
		viewChangeRec(1),
		{Kind: pbft.RecordMessage}, // the zero message record: empty everything
	}
	s := mustOpen(t, dir, testOptions(t))
	if err := s.Append(want[:4]); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(want[4:]); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(nil); err != nil {
		t.Fatal(err)
	}
	checkRecords(t, "before reopen", mustLoad(t, s), want)
	size := s.Size()
	if size <= 1<<20 {
		t.Fatalf("Size = %d, want more than the MB of state", size)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Load(); err != ErrClosed {
		t.Fatalf("Load after Close: %v, want ErrClosed", err)
	}
	if err := s.Append(want[:1]); err != ErrClosed {
		t.Fatalf("Append after Close: %v, want ErrClosed", err)
	}

	s = mustOpen(t, dir, testOptions(t))
	defer s.Close()
	checkRecords(t, "after reopen", mustLoad(t, s), want)
	if s.Len() != len(want) {
		t.Fatalf("Len = %d, want %d", s.Len(), len(want))
	}
	if s.Size() != size {
		t.Fatalf("Size after reopen = %d, want %d", s.Size(), size)
	}
	if s.DiskUsage() == 0 {
		t.Fatal("DiskUsage = 0")
	}
}

func TestCompactKeepsExactlyTheKeptRecordsAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, testOptions(t))
	defer func() { s.Close() }()

	// View 0 through seq 12 with checkpoints every 5, then a view change and view 1.
	all := history(0, 1, 12, 5)
	all = append(all, viewChangeRec(1))
	all = append(all, history(1, 13, 14, 5)...)
	for i := 0; i < len(all); i += 7 { // appended in Ready-sized batches
		if err := s.Append(all[i:min(i+7, len(all))]); err != nil {
			t.Fatal(err)
		}
	}
	before := s.Size()
	keep := pbft.CompactRecords(mustLoad(t, s))
	if len(keep) == 0 || len(keep) >= len(all) {
		t.Fatalf("CompactRecords kept %d of %d: the test needs a real compaction", len(keep), len(all))
	}
	if err := s.Compact(keep); err != nil {
		t.Fatal(err)
	}
	checkRecords(t, "after compact", mustLoad(t, s), keep)
	if s.Len() != len(keep) || s.Size() >= before {
		t.Fatalf("Len, Size = %d, %d; want %d and less than %d", s.Len(), s.Size(), len(keep), before)
	}

	// Reopen: exactly keep, and appends go after it.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dir, testOptions(t))
	checkRecords(t, "after reopen", mustLoad(t, s), keep)
	more := history(1, 15, 20, 5)
	if err := s.Append(more); err != nil {
		t.Fatal(err)
	}
	want := append(append([]pbft.Record{}, keep...), more...)
	checkRecords(t, "after append", mustLoad(t, s), want)

	// A second compaction, then a reopen again.
	keep2 := pbft.CompactRecords(want)
	if err := s.Compact(keep2); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dir, testOptions(t))
	checkRecords(t, "after second compaction and reopen", mustLoad(t, s), keep2)
}

// Compact deletes runs of every shape: at either end, in the middle, single records and
// long runs, everything, and nothing.
func TestCompactKeepsAnySubsequence(t *testing.T) {
	all := history(0, 1, 6, 3) // 26 records
	masks := map[string]func(i int) bool{
		"nothing":      func(int) bool { return false },
		"everything":   func(int) bool { return true },
		"every third":  func(i int) bool { return i%3 == 0 },
		"ends only":    func(i int) bool { return i == 0 || i == len(all)-1 },
		"middle only":  func(i int) bool { return i > 5 && i < 20 },
		"all but one":  func(i int) bool { return i != 11 },
		"first half":   func(i int) bool { return i < len(all)/2 },
		"alternate":    func(i int) bool { return i%2 == 1 },
		"last only":    func(i int) bool { return i == len(all)-1 },
		"without ends": func(i int) bool { return i != 0 && i != len(all)-1 },
	}
	for name, keepIt := range masks {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			opts := testOptions(t)
			opts.Sync = false
			s := mustOpen(t, dir, opts)
			if err := s.Append(all); err != nil {
				t.Fatal(err)
			}
			var keep []pbft.Record
			for i := range all {
				if keepIt(i) {
					keep = append(keep, all[i])
				}
			}
			if err := s.Compact(keep); err != nil {
				t.Fatal(err)
			}
			checkRecords(t, "after compact", mustLoad(t, s), keep)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = mustOpen(t, dir, opts)
			defer s.Close()
			checkRecords(t, "after reopen", mustLoad(t, s), keep)
		})
	}
}

func TestCompactRefusesWhatIsNotAStoredSubsequence(t *testing.T) {
	s := mustOpen(t, t.TempDir(), testOptions(t))
	defer s.Close()
	all := []pbft.Record{prepareRec(0, 1), prepareRec(0, 2), prepareRec(0, 3)}
	if err := s.Append(all); err != nil {
		t.Fatal(err)
	}
	for name, keep := range map[string][]pbft.Record{
		"out of order": {all[2], all[0]},
		"never stored": {all[0], prepareRec(0, 4)},
		"twice":        {all[1], all[1]},
	} {
		if err := s.Compact(keep); err == nil || !strings.Contains(err.Error(), s.Dir()) {
			t.Errorf("%s: Compact = %v, want an error naming the directory", name, err)
		}
	}
	checkRecords(t, "after refused compactions", mustLoad(t, s), all)

	// Identical records stored twice are two records: keeping one drops the other.
	if err := s.Append(all[:1]); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact([]pbft.Record{all[0], all[2]}); err != nil {
		t.Fatal(err)
	}
	checkRecords(t, "after dropping a duplicate", mustLoad(t, s), []pbft.Record{all[0], all[2]})
}

func TestCorruptRecordIsAnErrorNamingItsKey(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, testOptions(t))
	if err := s.Append([]pbft.Record{prepareRec(0, 1), prepareRec(0, 2), prepareRec(0, 3)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	db := rawPebble(t, dir)
	bad := recordKey(2)
	if err := db.Set(bad, []byte("\xff not cbor"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s = mustOpen(t, dir, testOptions(t))
	defer s.Close()
	recs, err := s.Load()
	if err == nil {
		t.Fatalf("Load of a corrupt store returned %d records and no error", len(recs))
	}
	if !errors.Is(err, ErrDamaged) {
		t.Errorf("Load error %q is not ErrDamaged", err)
	}
	for _, want := range []string{fmt.Sprintf("%x", bad), dir} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Load error %q does not name %q", err, want)
		}
	}
}

func TestUnknownFormatVersionIsRefused(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, testOptions(t))
	if err := s.Append([]pbft.Record{prepareRec(0, 1)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	db := rawPebble(t, dir)
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], FormatVersion+1)
	if err := db.Set(metaFormatKey, v[:], pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := Open(dir, testOptions(t))
	if err == nil {
		s.Close()
		t.Fatal("Open accepted an unknown format version")
	}
	for _, want := range []string{dir, string(metaFormatKey), fmt.Sprint(FormatVersion + 1)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Open error %q does not name %q", err, want)
		}
	}
}

func TestDataWithoutFormatVersionIsRefused(t *testing.T) {
	dir := t.TempDir()
	db := rawPebble(t, dir)
	if err := db.Set(recordKey(1), pbft.Marshal(prepareRec(0, 1)), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, testOptions(t))
	if err == nil {
		s.Close()
		t.Fatal("Open accepted a database with data but no format version")
	}
	if !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), string(metaFormatKey)) {
		t.Errorf("Open error %q names neither the directory nor the field", err)
	}
}

func TestAppendIsOrderedAcrossManyBatches(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions(t)
	opts.Sync = false // ordering, not durability, is under test; keep it fast
	s := mustOpen(t, dir, opts)
	var want []pbft.Record
	seq := uint64(0)
	// More than 256 and 65536/256 records, so counters cross byte boundaries of the key.
	for batch := 0; batch < 300; batch++ {
		recs := make([]pbft.Record, 1+batch%4)
		for i := range recs {
			seq++
			recs[i] = prepareRec(0, seq)
		}
		if err := s.Append(recs); err != nil {
			t.Fatal(err)
		}
		want = append(want, recs...)
		if batch == 150 { // and across a reopen
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = mustOpen(t, dir, opts)
		}
	}
	defer s.Close()
	if seq <= 256 {
		t.Fatalf("only %d records: the test must cross a key byte", seq)
	}
	checkRecords(t, "many batches", mustLoad(t, s), want)
}

// Concurrent appends each stay contiguous and in their order; the race detector checks
// the rest.
func TestConcurrentAppendsStayWhole(t *testing.T) {
	opts := testOptions(t)
	opts.Sync = false
	s := mustOpen(t, t.TempDir(), opts)
	defer s.Close()
	const writers, batches = 4, 25
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for b := range batches {
				v := uint64(w)
				n := uint64(b * 3)
				if err := s.Append([]pbft.Record{prepareRec(v, n+1), prepareRec(v, n+2), prepareRec(v, n+3)}); err != nil {
					t.Error(err)
					return
				}
				_ = s.Len()
				_ = s.Size()
			}
		})
	}
	wg.Wait()
	recs := mustLoad(t, s)
	if len(recs) != writers*batches*3 {
		t.Fatalf("%d records, want %d", len(recs), writers*batches*3)
	}
	last := map[uint64]uint64{}
	for i := 0; i < len(recs); i += 3 {
		v := recs[i].View
		for j := range 3 {
			r := recs[i+j]
			if r.View != v || r.Seq != last[v]+1 {
				t.Fatalf("record %d: view %d seq %d after seq %d of view %d", i+j, r.View, r.Seq, last[v], v)
			}
			last[v] = r.Seq
		}
	}
}

func benchAppend(b *testing.B, sync bool) {
	opts := DefaultOptions()
	opts.Sync = sync
	s := mustOpen(b, b.TempDir(), opts)
	defer s.Close()
	// Three small records per Ready, as the normal case persists (a pre-prepare's
	// prepare and commit): votes padded to ~200 bytes with a longer signature. Built
	// beforehand, so the figure is the store's (encoding included), not the test's.
	vote := func(r pbft.Record) pbft.Record {
		r.Env.Msg.Sig = append(r.Env.Msg.Sig, make([]byte, 77)...)
		return r
	}
	batches := make([][]pbft.Record, 1024)
	for i := range batches {
		n := uint64(i)
		batches[i] = []pbft.Record{vote(prepareRec(0, 3*n+1)), vote(prepareRec(0, 3*n+2)), vote(commitRec(0, 3*n+3))}
	}
	size := 0
	for _, r := range batches[1] {
		size += len(pbft.Marshal(r))
	}
	b.SetBytes(int64(size))
	for i := 0; b.Loop(); i++ {
		if err := s.Append(batches[i%len(batches)]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(size)/3, "B/record")
}

func BenchmarkAppendSynced(b *testing.B)   { benchAppend(b, true) }
func BenchmarkAppendUnsynced(b *testing.B) { benchAppend(b, false) }
