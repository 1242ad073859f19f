package store

// Checking Pebble's write-ahead logs before Pebble replays them.
//
// Pebble (v1.1) replays a WAL up to the first chunk it cannot read. In every WAL but the
// last it calls that an error; in the last one (and a store that runs for a while and
// closes cleanly has only one) it treats the bad chunk like the end of the log, a tail
// torn by a crash, and drops the rest without a word (open.go, replayWAL: the private
// strictWALTail option is off for the last WAL). A few flipped bytes in the middle of
// that log therefore make a replica forget everything it wrote after them, and restart
// from an older stable checkpoint as if nothing had happened: it could then sign the
// opposite of what it signed before.
//
// checkWAL reads a WAL as Pebble's replay does (record.Reader without recovery) to find
// the chunk where Pebble would stop, and decides whether that stop is a torn tail, which
// is expected after a crash and loses nothing that was acknowledged, or damage:
//
// The rule. Past the stop point, look for a chunk that proves the bytes at the stop
// point had been durably written before the crash: either
//
//   - a valid chunk of this log that starts a record (a full or first chunk carrying
//     this log's number, its checksum right), or
//   - the end-of-log mark Pebble writes when it closes a log cleanly (a recyclable full
//     chunk header with an empty payload, a zero checksum and the next log number).
//
// If there is one, the WAL is damaged; otherwise the stop is a torn tail.
//
// Why that rule, and not "any valid chunk after an invalid one":
//
//   - A Store acknowledges an Append (or a Compact) only once Pebble has synced it, and
//     writes one batch at a time, so at a crash at most one WAL record was in flight, and
//     it is the last one. A power loss may leave that record's blocks on disk in any
//     order, so a torn tail may be a hole followed by valid middle or last chunks of the
//     same record: those prove nothing. A later record's first chunk does: that record
//     was only written once the one before it was acknowledged, hence durable.
//   - Pebble writes the end-of-log mark only in Close, after every append, each of
//     them synced (with Sync on): a hole before the mark is damage too. This catches
//     damage in the last record of a cleanly closed log.
//   - Chunks are matched by log number, which Pebble writes into every (recyclable)
//     chunk: a recycled log file keeps the bytes of the older log it was, whose chunks
//     carry an older number, so that stale data never counts. The end-of-log mark of
//     an older log carries at most this log's number, never the next one. Legacy chunks
//     (no log number; Pebble v1.1 does not write them) never count either.
//
// What the rule cannot see: damage in the last record of a log that was not closed
// cleanly, which looks exactly like that record torn by a power loss. It loses at most
// that one record, the one that may have been in flight. With Options.Sync off, a crash
// of the machine may lose acknowledged records, out of order; where what survives shows
// it, checkWAL reports that, rightly, as damage.
//
// Cost: one sequential read of the file and a CRC-32C of the bytes up to the stop point
// (the same work Pebble's replay does again right after); past it (the tail, or a
// recycled file's stale bytes) only a search for this log's number, a CRC checked only
// where a header with a plausible type and length carries it.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/vfs"
)

// Pebble's WAL format (record/record.go), part of its wire format.
const (
	walBlockSize         = 32 << 10 // chunks never cross a block boundary
	legacyHeaderSize     = 7        // checksum (4), length (2), type (1)
	recyclableHeaderSize = 11       // the same, then the low 32 bits of the log number

	fullChunk  = 1
	firstChunk = 2
	lastChunk  = 4 // and 3, a middle chunk
	// Recyclable chunk types are the legacy ones plus recyclableOffset.
	recyclableFull   = 5
	recyclableFirst  = 6
	recyclableLast   = 8
	recyclableOffset = recyclableFull - fullChunk
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// chunkChecksum is Pebble's checksum (internal/crc): CRC-32C, rotated right by 15 bits
// and offset, so that data holding CRCs of its own does not look like chunks.
func chunkChecksum(b []byte) uint32 {
	c := crc32.Update(0, castagnoli, b)
	return (c>>15 | c<<17) + 0xa282ead8
}

// walLogNum returns the log number of a WAL file name, as Pebble parses it ("000012.log").
func walLogNum(name string) (uint64, bool) {
	num, ok := strings.CutSuffix(name, ".log")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(num, 10, 64)
	return n, err == nil
}

// walDamage is the error checkWAL returns for a damaged WAL.
type walDamage struct {
	path  string
	stop  int64  // offset of the chunk where Pebble's replay would stop
	why   string // what is wrong with that chunk
	later int64  // offset of the chunk proving that what was at stop had been durable
	proof string // what that chunk is
}

func (e *walDamage) Error() string {
	return fmt.Sprintf("WAL %s: %s at offset %d, yet %s at offset %d: replaying this log would silently drop everything from offset %d on",
		e.path, e.why, e.stop, e.proof, e.later, e.stop)
}

// checkWAL reads the WAL in r (the file at path, for errors), whose log number is
// logNum, and returns a *walDamage if it is damaged (see the rule above), nil if Pebble
// can replay it, read errors otherwise.
func checkWAL(r io.Reader, path string, logNum uint64) error {
	w := &walReader{r: r, logNum: uint32(logNum), block: -1}
	if err := w.replay(); err != nil {
		return fmt.Errorf("check WAL %s: %w", path, err)
	}
	if w.stopWhy == "" {
		return nil // a clean end of the file
	}
	later, proof, err := w.findProof()
	if err != nil {
		return fmt.Errorf("check WAL %s: %w", path, err)
	}
	if proof == "" {
		return nil // a torn tail
	}
	return &walDamage{path: path, stop: w.stopAt, why: w.stopWhy, later: later, proof: proof}
}

// walReader walks a WAL's chunks as Pebble's record.Reader does, one block at a time.
type walReader struct {
	r      io.Reader
	logNum uint32 // Pebble compares only the low 32 bits
	buf    [walBlockSize]byte
	n      int   // bytes of buf read from the file: walBlockSize but in the last block
	end    int   // offset in buf of the next chunk header
	block  int64 // number of the block in buf, -1 before the first

	// Where and why Pebble's replay stops; stopWhy is empty for a clean end of file.
	stopAt  int64
	stopWhy string
}

// replay reads whole records until Pebble's replay would stop, and records where.
func (w *walReader) replay() error {
	for {
		typ, ok, err := w.nextChunk(true)
		if err != nil || !ok {
			return err
		}
		for typ != fullChunk && typ != lastChunk {
			if typ, ok, err = w.nextChunk(false); err != nil || !ok {
				return err
			}
		}
	}
}

// stop records that Pebble's replay stops at the chunk header at buf[at], and why.
func (w *walReader) stop(at int, why string) (byte, bool, error) {
	w.stopAt = w.block*walBlockSize + int64(at)
	w.stopWhy = why
	return 0, false, nil
}

// nextChunk moves past the next chunk and returns its type (recyclable types mapped to
// the legacy ones), or ok false where Pebble's replay stops. It mirrors
// record.Reader.nextChunk (Pebble v1.1.5, not recovering), branch for branch:
// wantFirst is set between records, when Pebble skips chunks that do not start one.
func (w *walReader) nextChunk(wantFirst bool) (typ byte, ok bool, err error) {
	for {
		if at := w.end; at+legacyHeaderSize <= w.n {
			h := w.buf[at:w.n]
			checksum := binary.LittleEndian.Uint32(h[0:4])
			length := int(binary.LittleEndian.Uint16(h[4:6]))
			typ = h[6]
			if checksum == 0 && length == 0 && typ == 0 {
				if at+recyclableHeaderSize > w.n {
					w.end = w.n // the zero padding at the end of a block
					continue
				}
				return w.stop(at, "zeroed chunk")
			}
			headerSize := legacyHeaderSize
			if typ >= recyclableFull && typ <= recyclableLast {
				headerSize = recyclableHeaderSize
				if at+headerSize > w.n {
					return w.stop(at, "chunk header cut off")
				}
				if binary.LittleEndian.Uint32(h[7:11]) != w.logNum {
					// Between records Pebble takes this for the end of the log
					// (its end-of-log mark, or a recycled file's stale data).
					return w.stop(at, "chunk of another log")
				}
				typ -= recyclableOffset
			}
			payloadEnd := at + headerSize + length
			if payloadEnd > w.n {
				return w.stop(at, "chunk longer than its block")
			}
			if checksum != chunkChecksum(w.buf[at+6:payloadEnd]) {
				return w.stop(at, "checksum mismatch in the chunk")
			}
			w.end = payloadEnd
			if wantFirst && typ != fullChunk && typ != firstChunk {
				continue
			}
			return typ, true, nil
		}
		if w.n < walBlockSize && w.block >= 0 {
			// The file ends inside this block.
			if !wantFirst || w.end != w.n {
				return w.stop(w.end, "log ends inside a chunk or record")
			}
			return w.stop(w.end, "")
		}
		n, err := io.ReadFull(w.r, w.buf[:])
		if err == io.EOF {
			// The file ends at a block boundary.
			if !wantFirst {
				return w.stop(w.n, "log ends inside a record")
			}
			return w.stop(w.n, "")
		}
		if err != nil && err != io.ErrUnexpectedEOF {
			return 0, false, err
		}
		w.block++
		w.n, w.end = n, 0
	}
}

// findProof searches the rest of the file, past the stop point, for a chunk proving
// that the bytes at the stop point had been durable: a record of this log, or its
// end-of-log mark. It returns that chunk's offset and what it is, or "" for none.
func (w *walReader) findProof() (int64, string, error) {
	from := int(w.stopAt-w.block*walBlockSize) + 1
	for {
		if at, proof := w.searchBlock(from); proof != "" {
			return w.block*walBlockSize + int64(at), proof, nil
		}
		if w.n < walBlockSize {
			return 0, "", nil // that was the last block
		}
		n, err := io.ReadFull(w.r, w.buf[:])
		if err == io.EOF {
			return 0, "", nil
		}
		if err != nil && err != io.ErrUnexpectedEOF {
			return 0, "", err
		}
		w.block++
		w.n, from = n, 0
	}
}

// searchBlock looks in buf[from:n] for a chunk header that starts a record of this
// log, or for this log's end-of-log mark. Only headers whose log number field holds
// this log's number (or the next, for the mark) are examined, found by a byte search.
func (w *walReader) searchBlock(from int) (int, string) {
	b := w.buf[:w.n]
	var num [4]byte
	binary.LittleEndian.PutUint32(num[:], w.logNum)
	if at := findHeader(b, from, num, func(h []byte) bool {
		typ := h[6]
		if typ != recyclableFull && typ != recyclableFirst {
			return false
		}
		end := recyclableHeaderSize + int(binary.LittleEndian.Uint16(h[4:6]))
		return end <= len(h) && binary.LittleEndian.Uint32(h[0:4]) == chunkChecksum(h[6:end])
	}); at >= 0 {
		return at, "a record of this log starts"
	}
	binary.LittleEndian.PutUint32(num[:], w.logNum+1)
	if at := findHeader(b, from, num, func(h []byte) bool {
		return binary.LittleEndian.Uint32(h[0:4]) == 0 && binary.LittleEndian.Uint16(h[4:6]) == 0 &&
			h[6] == recyclableFull
	}); at >= 0 {
		return at, "the log's end-of-log mark (written when Pebble closed it cleanly) comes"
	}
	return -1, ""
}

// findHeader returns the offset of the first recyclable chunk header in b at or after
// from whose log number field is num and for which ok (given b from that header on)
// holds, or -1.
func findHeader(b []byte, from int, num [4]byte, ok func(h []byte) bool) int {
	for i := from + 7; i+4 <= len(b); {
		k := bytes.Index(b[i:], num[:])
		if k < 0 {
			return -1
		}
		at := i + k - 7
		if ok(b[at:]) {
			return at
		}
		i += k + 1
	}
	return -1
}

// walCheckFS is the file system the store opens Pebble on: it checks every WAL that
// Pebble opens for reading (checkWAL) before Pebble reads it, and fails the open if it
// is damaged. Pebble opens a WAL for reading only to replay it, in pebble.Open (it
// writes logs through Create and ReuseForWrite), so exactly the logs about to be
// replayed are checked, under the name Pebble takes the log number from, and a damaged
// one stops pebble.Open before it has changed anything on disk. Scanning the directory
// beforehand instead would also check logs already flushed (kept for recycling, deleted
// later), whose damage loses nothing: only Pebble's MANIFEST says which logs count.
type walCheckFS struct{ vfs.FS }

func (fs walCheckFS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	if logNum, ok := walLogNum(fs.PathBase(name)); ok {
		f, err := fs.FS.Open(name, vfs.SequentialReadsOption)
		if err != nil {
			return nil, err
		}
		err = checkWAL(f, name, logNum)
		_ = f.Close()
		if err != nil {
			return nil, err
		}
	}
	return fs.FS.Open(name, opts...)
}
