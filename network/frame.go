package network

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
)

// frameChunk bounds the first allocation for an inbound frame: a longer frame
// grows its buffer as its bytes actually arrive, so a peer declaring a large
// frame and sending nothing costs little memory.
const frameChunk = 64 << 10

// oversizedError reports an inbound frame declared longer than the limit.
type oversizedError struct{ size, max uint64 }

func (e *oversizedError) Error() string {
	return fmt.Sprintf("frame of %d bytes exceeds the limit of %d", e.size, e.max)
}

// writeFrame appends one length-prefixed frame to w. It does not flush.
func writeFrame(w *bufio.Writer, f []byte) error {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(f)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.Write(f)
	return err
}

// readFrame reads one length-prefixed frame of at most max bytes. The
// declared length is checked before anything is allocated for it. The
// returned slice is freshly allocated and belongs to the caller.
func readFrame(r *bufio.Reader, max int) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	size := uint64(binary.BigEndian.Uint32(hdr[:]))
	if size > uint64(max) {
		return nil, &oversizedError{size, uint64(max)}
	}
	n := int(size)
	buf := make([]byte, 0, min(n, frameChunk))
	for len(buf) < n {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(n-len(buf), len(buf)))
		}
		m, err := r.Read(buf[len(buf):min(cap(buf), n)])
		buf = buf[:len(buf)+m]
		if err != nil && len(buf) < n {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return buf, nil
}
