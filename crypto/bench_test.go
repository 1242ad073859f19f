package crypto

import "testing"

var benchDomain = Domain{Cluster: "bench-cluster", Type: 2, Signer: 3}

// benchMsg is roughly the size of a PBFT prepare/commit message.
var benchMsg = make([]byte, 200)

func BenchmarkSign(b *testing.B) {
	for _, name := range Schemes() {
		b.Run(name, func(b *testing.B) {
			k := testKey(b, name, "bench")
			b.ReportAllocs()
			for b.Loop() {
				k.Sign(benchDomain, benchMsg)
			}
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	for _, name := range Schemes() {
		b.Run(name, func(b *testing.B) {
			k := testKey(b, name, "bench")
			pub := k.Public()
			sig := k.Sign(benchDomain, benchMsg)
			b.ReportAllocs()
			for b.Loop() {
				if !pub.Verify(benchDomain, benchMsg, sig) {
					b.Fatal("signature does not verify")
				}
			}
		})
	}
}

func BenchmarkHash200B(b *testing.B) {
	msg := make([]byte, 200)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		Hash(msg)
	}
}
