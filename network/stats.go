package network

import "sync/atomic"

// Stats is a snapshot of a Host's counters. Frames and bytes count network
// traffic only (not frames sent to self) and bytes exclude the 4-byte length
// prefixes.
type Stats struct {
	FramesIn  uint64 // frames read from streams
	FramesOut uint64 // frames written and flushed to streams
	BytesIn   uint64 // payload bytes of FramesIn
	BytesOut  uint64 // payload bytes of FramesOut

	// QueueDrops counts frames refused by Send because the destination's
	// queue (or the loopback queue) was full.
	QueueDrops uint64
	// Oversized counts frames longer than MaxFrame: declared by a peer (the
	// stream was reset) or handed to Send (refused).
	Oversized uint64
	// Refused counts connections and streams of peers outside Allow.
	Refused uint64
	// Reconnects counts outbound streams opened again after the previous one
	// to the same (peer, protocol) failed, or after failed dials.
	Reconnects uint64
	// NoRoute counts frames dropped because the destination has no address
	// and no inbound stream to answer on (a client that never connected or
	// went away).
	NoRoute uint64
	// Lost counts frames taken from a queue whose stream then failed before
	// they were known to be flushed. Some of them may have arrived.
	Lost uint64
}

// counters are the live atomic counters behind Stats.
type counters struct {
	framesIn, framesOut, bytesIn, bytesOut atomic.Uint64
	queueDrops, oversized, refused         atomic.Uint64
	reconnects, noRoute, lost              atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		FramesIn:   c.framesIn.Load(),
		FramesOut:  c.framesOut.Load(),
		BytesIn:    c.bytesIn.Load(),
		BytesOut:   c.bytesOut.Load(),
		QueueDrops: c.queueDrops.Load(),
		Oversized:  c.oversized.Load(),
		Refused:    c.refused.Load(),
		Reconnects: c.reconnects.Load(),
		NoRoute:    c.noRoute.Load(),
		Lost:       c.lost.Load(),
	}
}
