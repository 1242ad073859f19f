// Package store keeps a replica's pbft.Records durably on disk, in a Pebble database.
//
// The protocol core hands the runtime, in every Ready, the records it must make durable
// before it sends any of that Ready's messages (pbft.Record). A Store is where they go:
// Append writes them in one synced batch, Load gives every one of them back in append
// order after a restart (for pbft.Replica.Restore), and Compact drops those that
// pbft.CompactRecords no longer needs once a checkpoint is stable.
//
// Layout: one key per record, 'r' followed by a big-endian uint64 append counter, whose
// value is the record's canonical CBOR (pbft.Marshal); and one meta key holding the
// format version, which Open checks. Counters only grow, so key order is append order.
//
// Records that are damaged on disk are an error of Open or Load (DamageError), never
// silently lost: see walcheck.go for the case Pebble alone lets through.
package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"
	"go.uber.org/zap"

	"github.com/pbftkit/pbft/crypto"
	"github.com/pbftkit/pbft/pbft"
)

// FormatVersion is the on-disk format this package writes and the only one Open accepts.
const FormatVersion uint64 = 1

// Keys. Records live under recordPrefix; the meta key sorts before them.
const recordPrefix = 'r'

var (
	metaFormatKey = []byte("m/format")
	recordLower   = []byte{recordPrefix}
	recordUpper   = []byte{recordPrefix + 1}
)

// ErrClosed is returned by every method of a Store after Close.
var ErrClosed = errors.New("store: closed")

// InUseError is returned by Open when the directory is locked by another open Store:
// of another process (SameProcess false), or of this one. Two writers of one replica's
// records would each sign from their own history, so Open never shares a directory.
type InUseError struct {
	Dir         string
	SameProcess bool
	Err         error // the lock's own error (EAGAIN or EACCES from fcntl, or Pebble's)
}

func (e *InUseError) Error() string {
	if e.SameProcess {
		return fmt.Sprintf("store: data dir %s is in use by another store of this process", e.Dir)
	}
	return fmt.Sprintf("store: data dir %s is in use by another process (it holds %s)", e.Dir, filepath.Join(e.Dir, "LOCK"))
}

func (e *InUseError) Unwrap() error { return e.Err }

// ErrDamaged matches (errors.Is) every error of Open and Load saying that the records
// on disk are damaged: a write-ahead log damaged before its end (which Pebble alone
// would silently cut there), anything Pebble reports as corruption (a table or
// manifest whose checksum fails), a stored value that does not decode. Such errors
// are *DamageError.
var ErrDamaged = errors.New("damaged records")

// DamageError reports damaged records in a store's directory, and how to recover. A
// replica must not run on them: it can no longer know everything it signed, so it
// could contradict itself. Recovery is to start it on an empty directory, from which
// it rejoins the cluster by state transfer.
type DamageError struct {
	Dir string // the store's directory
	Err error  // what is damaged, naming the file (a WAL, a table) or the record key
}

func (e *DamageError) Error() string {
	return fmt.Sprintf("store %s: %v: %v; to recover, move the directory %s away (keep it to find out what happened) "+
		"and start the replica again: on an empty directory it rejoins the cluster by state transfer "+
		"(having forgotten what it signed, it counts as one of the f faulty replicas the cluster tolerates until the cluster has moved past it)",
		e.Dir, ErrDamaged, e.Err, e.Dir)
}

func (e *DamageError) Unwrap() error { return e.Err }

func (e *DamageError) Is(target error) bool { return target == ErrDamaged }

// errUndecodable marks a stored value that does not decode as a record: Pebble's
// checksums passed, so something other than this store wrote it, but the records can
// no more be trusted than if a disk had flipped its bytes.
var errUndecodable = errors.New("not a record this store wrote")

// isDamage reports whether err says that the stored records are damaged.
func isDamage(err error) bool {
	var wal *walDamage
	return errors.As(err, &wal) || pebble.IsCorruptionError(err) || errors.Is(err, errUndecodable)
}

// storeError is how Open and Load report err from doing what in dir: a *DamageError
// if it is about damaged records, else an error naming dir and what.
func storeError(dir, what string, err error) error {
	if isDamage(err) {
		return &DamageError{Dir: dir, Err: err}
	}
	return fmt.Errorf("store %s: %s: %w", dir, what, err)
}

// Options configure a Store. The zero value does not sync; start from DefaultOptions.
type Options struct {
	// Sync makes every Append (and Compact) wait for an fsync of Pebble's write-ahead log
	// before it returns. Without it a crash of the machine (not just of the process) may
	// lose the last appends, which breaks pbft's promise never to sign two different
	// things for one slot: turn it off only for tests and benchmarks.
	Sync bool
	// Logger, if set, receives what Pebble reports at warn level and above (background
	// errors, slow disks, write stalls); Pebble's informational chatter is dropped. A nil
	// Logger drops everything but fatal errors, which panic.
	Logger *zap.Logger
}

// DefaultOptions are the options a replica should run with: Sync on, no logger.
func DefaultOptions() Options { return Options{Sync: true} }

// entry is what a Store remembers of one stored record.
type entry struct {
	n      uint64        // append counter: the key is recordKey(n)
	digest crypto.Digest // crypto.Hash of the stored value (the record's CBOR)
	size   int64         // bytes of key and value
}

// Store is a durable, append-ordered list of pbft.Records. Its methods are safe for
// concurrent use; each runs alone.
type Store struct {
	dir  string
	wo   *pebble.WriteOptions
	lock *pebble.Lock // the directory's LOCK, released by Close after the database

	mu     sync.Mutex
	db     *pebble.DB // nil once closed
	index  []entry    // the stored records, in key (append) order
	next   uint64     // counter of the next record appended
	size   int64      // sum of index[i].size
	failed error      // set by a write whose outcome is unknown: the store refuses further use
}

// Open opens the store in dir, creating the directory and an empty store if needed. It
// refuses a directory another Store holds open (*InUseError), a database written in
// another format version, or one that holds data but no format version. Errors name dir.
//
// Open reads every stored value once, to index it for Compact; it does not decode them
// (Load does, and reports any that is corrupt).
//
// Damaged records stop Open with a *DamageError (errors.Is ErrDamaged), never silently:
// in particular a write-ahead log damaged before its end, which Pebble would replay
// only up to the damage (walcheck.go). A tail torn by a crash is not damage: Open
// recovers the records before it.
func Open(dir string, opts Options) (*Store, error) {
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	po := pebbleOptions(opts.Logger)
	po.Lock = lock
	db, err := pebble.Open(dir, po)
	if err != nil {
		_ = lock.Close()
		return nil, storeError(dir, "open", err)
	}
	s := &Store{dir: dir, db: db, lock: lock, wo: pebble.NoSync, next: 1}
	if opts.Sync {
		s.wo = pebble.Sync
	}
	if err := s.checkFormat(); err != nil {
		s.closeDB()
		return nil, storeError(dir, "open", err)
	}
	if err := s.loadIndex(); err != nil {
		s.closeDB()
		return nil, storeError(dir, "open", err)
	}
	return s, nil
}

// lockDir takes the directory's LOCK file, as pebble.Open would, but on its own, so
// that a lock held elsewhere is told apart from every other failure: Pebble reports it
// as the bare errno ("resource temporarily unavailable"), which says nothing about
// another process.
func lockDir(dir string) (*pebble.Lock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	lock, err := pebble.LockDirectory(dir, vfs.Default)
	if err == nil {
		return lock, nil
	}
	// Creating the LOCK file fails with a *PathError (a read-only directory, say); the
	// lock itself, fcntl(F_SETLK), with a bare EAGAIN or EACCES (POSIX allows either)
	// when another process holds it. Within one process Pebble keeps its own table of
	// locked files and says so in words.
	var pe *fs.PathError
	switch {
	case errors.As(err, &pe):
	case errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES):
		return nil, &InUseError{Dir: dir, Err: err}
	case strings.Contains(err.Error(), "held by current process"):
		return nil, &InUseError{Dir: dir, SameProcess: true, Err: err}
	}
	return nil, fmt.Errorf("store: open %s: lock: %w", dir, err)
}

// closeDB closes the database and then releases its directory's lock: in that order,
// so no other Store opens the directory while this one may still write.
func (s *Store) closeDB() error {
	err := s.db.Close()
	if lerr := s.lock.Close(); err == nil {
		err = lerr
	}
	return err
}

// checkFormat checks the format version, writing it (synced) into a new database.
func (s *Store) checkFormat() error {
	v, closer, err := s.db.Get(metaFormatKey)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		// New, or not ours: a database with any key but no format version is refused.
		it, err := s.db.NewIter(nil)
		if err != nil {
			return err
		}
		hasData := it.First()
		if err := it.Close(); err != nil {
			return err
		}
		if hasData {
			return fmt.Errorf("field %q missing from a database that holds data", metaFormatKey)
		}
		var val [8]byte
		binary.BigEndian.PutUint64(val[:], FormatVersion)
		if err := s.db.Set(metaFormatKey, val[:], pebble.Sync); err != nil {
			return fmt.Errorf("write field %q: %w", metaFormatKey, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("read field %q: %w", metaFormatKey, err)
	}
	defer closer.Close()
	if len(v) != 8 {
		return fmt.Errorf("field %q: malformed value %x", metaFormatKey, v)
	}
	if got := binary.BigEndian.Uint64(v); got != FormatVersion {
		return fmt.Errorf("field %q: unknown format version %d (this build reads version %d)",
			metaFormatKey, got, FormatVersion)
	}
	return nil
}

// loadIndex reads every record key and hashes its value.
func (s *Store) loadIndex() error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: recordLower, UpperBound: recordUpper})
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		n, ok := parseRecordKey(it.Key())
		if !ok {
			_ = it.Close()
			return fmt.Errorf("key %x: %w", it.Key(), errUndecodable)
		}
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return fmt.Errorf("%s: %w", keyName(it.Key()), err)
		}
		e := entry{n: n, digest: crypto.Hash(v), size: int64(len(it.Key()) + len(v))}
		s.index = append(s.index, e)
		s.size += e.size
		s.next = n + 1
	}
	return it.Close()
}

// usable returns why the store cannot be used, or nil. Call with s.mu held.
func (s *Store) usable() error {
	if s.db == nil {
		return ErrClosed
	}
	if s.failed != nil {
		return fmt.Errorf("store %s: unusable after a failed write: %w", s.dir, s.failed)
	}
	return nil
}

// Append writes recs after every record already stored, in order, in one Pebble batch,
// synced when Options.Sync. When it returns nil they are durable; when it returns an
// error their fate is unknown and the store refuses further use (reopen it).
func (s *Store) Append(recs []pbft.Record) error {
	if len(recs) == 0 {
		return nil
	}
	vals := make([][]byte, len(recs))
	for i := range recs {
		vals[i] = pbft.Marshal(&recs[i])
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	b := s.db.NewBatch()
	defer b.Close()
	added := make([]entry, len(vals))
	for i, v := range vals {
		n := s.next + uint64(i)
		k := recordKey(n)
		if err := b.Set(k, v, nil); err != nil {
			return fmt.Errorf("store %s: append %s: %w", s.dir, keyName(k), err)
		}
		added[i] = entry{n: n, digest: crypto.Hash(v), size: int64(len(k) + len(v))}
	}
	if err := b.Commit(s.wo); err != nil {
		s.failed = err
		return fmt.Errorf("store %s: append %d records: %w", s.dir, len(recs), err)
	}
	s.index = append(s.index, added...)
	s.next += uint64(len(added))
	for _, e := range added {
		s.size += e.size
	}
	return nil
}

// Load returns every stored record in append order. A record that does not decode is an
// error naming its key: corrupt storage is never skipped.
func (s *Store) Load() ([]pbft.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return nil, err
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: recordLower, UpperBound: recordUpper})
	if err != nil {
		return nil, storeError(s.dir, "load", err)
	}
	recs := make([]pbft.Record, 0, len(s.index))
	fail := func(err error) ([]pbft.Record, error) {
		_ = it.Close()
		return nil, storeError(s.dir, "load", err)
	}
	i := 0
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		n, ok := parseRecordKey(k)
		if !ok || i >= len(s.index) || s.index[i].n != n {
			return fail(fmt.Errorf("%s: %w", keyName(k), errUndecodable))
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return fail(fmt.Errorf("%s: %w", keyName(k), err))
		}
		var rec pbft.Record
		if err := pbft.Unmarshal(v, &rec); err != nil {
			return fail(fmt.Errorf("%s: %w: %w", keyName(k), errUndecodable, err))
		}
		recs = append(recs, rec)
		i++
	}
	if err := it.Close(); err != nil {
		return nil, storeError(s.dir, "load", err)
	}
	if i != len(s.index) {
		return nil, fmt.Errorf("store %s: load: %d records read, %d indexed", s.dir, i, len(s.index))
	}
	return recs, nil
}

// Compact replaces the stored records by keep, which must be a subsequence of them in
// order, as pbft.CompactRecords returns it from what Load returned (or from the same
// records as appended). Records are matched by their encoding. It deletes the others in
// one batch, synced when Options.Sync; if keep is not such a subsequence it changes
// nothing and returns an error. Its work is O(records stored + bytes of keep).
//
// Pebble reclaims the disk space of deleted records later, in its background compactions.
func (s *Store) Compact(keep []pbft.Record) error {
	want := make([]crypto.Digest, len(keep))
	for i := range keep {
		want[i] = crypto.Hash(pbft.Marshal(&keep[i]))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	kept := make([]bool, len(s.index))
	j := 0
	for i := range s.index {
		if j < len(want) && s.index[i].digest == want[j] {
			kept[i] = true
			j++
		}
	}
	if j < len(want) {
		r := &keep[j]
		return fmt.Errorf("store %s: compact: record %d of keep (%s view %d seq %d) is not stored after the ones before it",
			s.dir, j, r.Kind, r.View, r.Seq)
	}
	if j == len(s.index) {
		return nil // nothing to delete
	}
	b := s.db.NewBatch()
	defer b.Close()
	// Delete each run of dropped records: one point delete, or a range delete up to the
	// key just after its last (its key with a zero byte appended).
	for i := 0; i < len(s.index); {
		if kept[i] {
			i++
			continue
		}
		start := i
		for i < len(s.index) && !kept[i] {
			i++
		}
		first, last := recordKey(s.index[start].n), recordKey(s.index[i-1].n)
		var err error
		if start == i-1 {
			err = b.Delete(first, nil)
		} else {
			err = b.DeleteRange(first, append(last, 0), nil)
		}
		if err != nil {
			return fmt.Errorf("store %s: compact: %w", s.dir, err)
		}
	}
	if err := b.Commit(s.wo); err != nil {
		s.failed = err
		return fmt.Errorf("store %s: compact: %w", s.dir, err)
	}
	index := make([]entry, 0, len(keep))
	s.size = 0
	for i, e := range s.index {
		if kept[i] {
			index = append(index, e)
			s.size += e.size
		}
	}
	s.index = index
	return nil
}

// Len returns the number of records stored.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.index)
}

// Size returns the bytes (keys and values) of the records stored: what a full Load
// reads. It is exact and does not lag behind Compact; DiskUsage is what the disk holds.
func (s *Store) Size() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}

// DiskUsage returns Pebble's estimate of the bytes the store occupies on disk
// (write-ahead log, tables, manifest), including deleted records not yet compacted
// away. It is 0 after Close.
func (s *Store) DiskUsage() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return 0
	}
	return s.db.Metrics().DiskSpaceUsage()
}

// Dir returns the directory the store was opened in.
func (s *Store) Dir() string { return s.dir }

// Close closes the store. Closing a closed store does nothing; every other method then
// returns ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return nil
	}
	err := s.closeDB()
	s.db = nil
	if err != nil {
		return fmt.Errorf("store %s: close: %w", s.dir, err)
	}
	return nil
}

// recordKey is the key of the record with append counter n.
func recordKey(n uint64) []byte {
	k := make([]byte, 9, 10) // room for the zero byte of a range end
	k[0] = recordPrefix
	binary.BigEndian.PutUint64(k[1:], n)
	return k
}

// parseRecordKey returns the append counter of a record key.
func parseRecordKey(k []byte) (uint64, bool) {
	if len(k) != 9 || k[0] != recordPrefix {
		return 0, false
	}
	return binary.BigEndian.Uint64(k[1:]), true
}

// keyName is how errors name a key: its counter when it is a record key, and its bytes.
func keyName(k []byte) string {
	if n, ok := parseRecordKey(k); ok {
		return fmt.Sprintf("record %d (key %x)", n, k)
	}
	return fmt.Sprintf("key %x", k)
}

// pebbleOptions are Pebble's defaults with its logging routed to l (or dropped).
func pebbleOptions(l *zap.Logger) *pebble.Options {
	if l == nil {
		l = zap.NewNop()
	}
	l = l.Named("pebble")
	return &pebble.Options{
		FS:     walCheckFS{vfs.Default},
		Logger: pebbleLogger{l},
		EventListener: &pebble.EventListener{
			BackgroundError: func(err error) { l.Error("background error", zap.Error(err)) },
			DiskSlow: func(info pebble.DiskSlowInfo) {
				l.Warn("disk slow", zap.String("info", info.String()))
			},
			WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
				l.Warn("write stall", zap.String("reason", info.Reason))
			},
		},
	}
}

// pebbleLogger adapts zap to Pebble's Logger: informational messages are dropped (the
// events worth a warning arrive through the EventListener), fatal ones logged at error
// level and then panic, since Pebble expects Fatalf not to return.
type pebbleLogger struct{ l *zap.Logger }

func (pebbleLogger) Infof(string, ...any) {}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg)
	panic("pebble: " + msg)
}
