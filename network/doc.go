// Package network is the libp2p transport of replicas and clients.
//
// It moves opaque frames: protocol messages arrive here already signed and
// canonically encoded, and the transport never interprets them. What it adds
// is delivery between the members of a permissioned cluster:
//
//   - Every connection runs over TCP (optionally QUIC) with Noise and yamux,
//     so each frame is authenticated as coming from the peer ID at the other
//     end of the connection. Only the peer IDs in Config.Allow are admitted;
//     everybody else is refused during the handshake (see gater.go).
//   - Each (peer, protocol) pair has one long-lived outbound stream, owned by
//     one writer goroutine and fed by a bounded queue. Send never blocks: a
//     slow or dead peer fills its own queue and further frames to it are
//     dropped and counted. Writes are coalesced and flushed only when the
//     queue is empty, which is several times cheaper per frame than flushing
//     each one.
//   - Delivery is at most once and in order per (sender, protocol) while a
//     stream lives. When a stream breaks, frames already written to it may be
//     lost (counted in Stats.Lost) and the writer reconnects with exponential
//     backoff; frames queued meanwhile wait. The replication protocol above
//     is expected to retransmit what matters.
//   - Listen addresses are bound exclusively (no SO_REUSEPORT). New refuses
//     one already bound, with an AddrInUseError that says whether what
//     answers there proved it holds the host's own key: another process
//     running as the same peer (see inuse.go).
//   - Clients do not listen. A replica answers a client on the most recent
//     stream the client opened on that protocol; the client reads its
//     replies from the streams it opened.
//
// Frames are a 4-byte big-endian length followed by that many bytes. A frame
// longer than Config.MaxFrame is refused without allocating its declared
// length: the offending stream is reset and everything else keeps going.
// Empty frames are valid and delivered as empty slices; judging content is
// the caller's business.
package network
