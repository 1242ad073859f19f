package network

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// BenchmarkFrameThroughput sends 200-byte frames one way between two hosts
// over loopback TCP and reports delivered frames per second. The sender keeps
// at most half a queue in flight, so nothing is dropped.
func BenchmarkFrameThroughput(b *testing.B) {
	a, c := newIdentity(b), newIdentity(b)
	src := startHost(b, a, "", ids(c))
	dst := startHost(b, c, localListen, ids(a))
	const window = DefaultQueueLen / 2
	var received int
	progress := make(chan int, 1)
	dst.Handle(ReplicaProtocol, func(_ peer.ID, _ []byte) {
		received++ // one reader goroutine: no race
		if received%256 == 0 || received == b.N {
			select {
			case <-progress:
			default:
			}
			progress <- received
		}
	})
	connect(dst, src)
	frame := make([]byte, 200)

	done := 0
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		for i-done >= window {
			done = <-progress
		}
		if !src.Send(c.id, ReplicaProtocol, frame) {
			b.Fatal("frame dropped")
		}
	}
	for done < b.N {
		done = <-progress
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "frames/s")
}
