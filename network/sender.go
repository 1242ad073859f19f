package network

import (
	"bufio"
	"context"
	"errors"
	"math/rand/v2"
	"sync/atomic"
	"time"

	p2pnet "github.com/libp2p/go-libp2p/core/network"
	"go.uber.org/zap"
)

// Redial policy of a writer whose stream failed: exponential backoff with
// jitter, so that replicas restarting together are not hammered in lockstep.
const (
	backoffMin  = 50 * time.Millisecond
	backoffMax  = 2 * time.Second
	dialTimeout = 10 * time.Second
)

// errStreamEnded is the failure of a stream its peer closed or reset.
var errStreamEnded = errors.New("stream ended by the peer")

// sender owns the traffic of one (peer, protocol): a bounded queue and the
// goroutine that drains it into one long-lived stream. For a dialable peer
// (a replica) it opens that stream itself and reopens it after failures. For
// a client it writes on the newest stream the client opened, and it goes away
// when the client has none left.
type sender struct {
	h    *Host
	key  streamKey
	dial bool
	q    chan []byte
	// queued is the bytes in q, bounded by the host's queueBytes.
	queued atomic.Int64

	opened    bool        // a stream was opened before (for Reconnects)
	failures  int         // consecutive failures since the last good flush
	connected atomic.Bool // holds a stream; observed by tests
}

// outStream is the stream a sender writes on. dead is closed when the
// stream's reader has stopped, that is when the stream is broken.
type outStream struct {
	s        p2pnet.Stream
	w        *bufio.Writer
	dead     <-chan struct{}
	deadline time.Time // the write deadline armed on s
}

// push queues f without blocking; false means the queue was full.
func (s *sender) push(f []byte) bool {
	if s.queued.Add(int64(len(f))) > int64(s.h.queueBytes) {
		s.queued.Add(-int64(len(f)))
		s.h.stats.queueDrops.Add(1)
		return false
	}
	select {
	case s.q <- f:
		return true
	default:
		s.queued.Add(-int64(len(f)))
		s.h.stats.queueDrops.Add(1)
		return false
	}
}

func (s *sender) run() {
	defer s.h.wg.Done()
	var out *outStream
	for {
		if out == nil {
			if out = s.acquire(); out == nil {
				return
			}
		}
		select {
		case <-s.h.ctx.Done():
			out.s.Reset()
			return
		case <-out.dead:
			s.fail(out, errStreamEnded)
			out = nil
		case f := <-s.q:
			if !s.dial && !s.h.isNewestInbound(s.key, out.s) {
				// The client opened a newer stream: answer on that one.
				if out = s.acquire(); out == nil {
					s.h.stats.noRoute.Add(1)
					return
				}
			}
			n, bytes, err := s.writeBatch(out, f)
			if err != nil {
				s.h.stats.lost.Add(uint64(n))
				s.fail(out, err)
				out = nil
				continue
			}
			s.failures = 0
			s.h.stats.framesOut.Add(uint64(n))
			s.h.stats.bytesOut.Add(bytes)
		}
	}
}

// writeBatch writes f and whatever else is queued, then flushes once the
// queue is empty. n counts the frames taken from the queue.
func (s *sender) writeBatch(out *outStream, f []byte) (n int, bytes uint64, err error) {
	// A peer that stops reading fails the stream here instead of holding the writer
	// (and its queue) for ever; one that reads slowly but steadily keeps it, since the
	// deadline, long enough for the largest frame, is renewed as frames go out.
	need := s.h.transferTime(s.h.maxFrame + writeBufSize)
	for {
		n++
		s.queued.Add(-int64(len(f)))
		if time.Until(out.deadline) < need/2 {
			out.deadline = time.Now().Add(need)
			out.s.SetWriteDeadline(out.deadline)
		}
		if err = writeFrame(out.w, f); err != nil {
			return n, bytes, err
		}
		bytes += uint64(len(f))
		select {
		case f = <-s.q:
		default:
			return n, bytes, out.w.Flush()
		}
	}
}

// fail gives up a broken stream.
func (s *sender) fail(out *outStream, err error) {
	s.connected.Store(false)
	out.s.Reset()
	if s.h.ctx.Err() != nil {
		return
	}
	s.failures++
	if !s.dial {
		// Clients come and go: not worth more than a debug line.
		s.h.dropInbound(s.key, out.s)
		s.h.log.Debug("reply stream failed", zap.Stringer("peer", s.key.peer),
			zap.String("protocol", string(s.key.proto)), zap.Error(err))
		return
	}
	s.h.log.Info("stream failed, redialing", zap.Stringer("peer", s.key.peer),
		zap.String("protocol", string(s.key.proto)), zap.Error(err))
}

// acquire returns the stream to write on next, or nil when the sender must
// stop: the host is closing, or (for a client) no stream is left to answer on.
func (s *sender) acquire() *outStream {
	var out *outStream
	if s.dial {
		out = s.dialStream()
	} else {
		out = s.replyStream()
	}
	if out != nil {
		s.connected.Store(true)
	}
	return out
}

// dialStream opens a stream to the peer, retrying with backoff.
func (s *sender) dialStream() *outStream {
	h := s.h
	for {
		if s.failures > 0 && !s.sleep(backoff(s.failures)) {
			return nil
		}
		// Our own backoff replaces the swarm's, which would refuse to redial
		// a restarted replica for several seconds.
		ctx, cancel := context.WithTimeout(p2pnet.WithForceDirectDial(h.ctx, "pbft writer"), dialTimeout)
		st, err := h.h.NewStream(ctx, s.key.peer, s.key.proto)
		cancel()
		if err != nil {
			if h.ctx.Err() != nil {
				return nil
			}
			s.failures++
			h.log.Debug("cannot open stream", zap.Stringer("peer", s.key.peer),
				zap.String("protocol", string(s.key.proto)), zap.Int("failures", s.failures), zap.Error(err))
			continue
		}
		if s.opened || s.failures > 0 {
			h.stats.reconnects.Add(1)
		}
		s.opened = true
		if !h.track(st) {
			return nil
		}
		dead := make(chan struct{})
		go func() {
			defer h.wg.Done()
			// Replies to a client come back on the stream it opened.
			h.readLoop(st, s.key.peer, s.key.proto)
			st.Reset()
			close(dead)
			h.untrack(st)
		}()
		return &outStream{s: st, w: bufio.NewWriterSize(st, writeBufSize), dead: dead}
	}
}

// replyStream returns the newest inbound stream of the peer on the protocol.
// When there is none it unregisters the sender and drops what is queued, under
// the lock Send takes, so no frame is queued after the last drain.
func (s *sender) replyStream() *outStream {
	h := s.h
	h.mu.Lock()
	in := h.inbound[s.key]
	if in == nil {
		if h.senders[s.key] == s {
			delete(h.senders, s.key)
		}
	}
	h.mu.Unlock()
	if in != nil {
		return &outStream{s: in.s, w: bufio.NewWriterSize(in.s, writeBufSize), dead: in.done}
	}
	for {
		select {
		case f := <-s.q:
			s.queued.Add(-int64(len(f)))
			h.stats.noRoute.Add(1)
		default:
			return nil
		}
	}
}

// sleep waits d or until the host closes; false means it closed.
func (s *sender) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.h.ctx.Done():
		return false
	}
}

// backoff returns the delay before redial number n (n >= 1): 50 ms doubling
// up to 2 s, then drawn uniformly from its upper half.
func backoff(n int) time.Duration {
	d := backoffMax
	if n < 16 {
		d = min(backoffMin<<(n-1), backoffMax)
	}
	return d/2 + rand.N(d/2+1)
}

// isNewestInbound reports whether s is the newest inbound stream of k.
func (h *Host) isNewestInbound(k streamKey, s p2pnet.Stream) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	in := h.inbound[k]
	return in != nil && in.s == s
}

// dropInbound forgets s as the stream to answer k on, after a write failed.
func (h *Host) dropInbound(k streamKey, s p2pnet.Stream) {
	h.mu.Lock()
	if in := h.inbound[k]; in != nil && in.s == s {
		delete(h.inbound, k)
	}
	h.mu.Unlock()
}

// untrack forgets a stream whose reader has stopped.
func (h *Host) untrack(s p2pnet.Stream) {
	h.mu.Lock()
	delete(h.streams, s)
	h.mu.Unlock()
}
