package crypto

import (
	"crypto/sha256"
	"strings"
	"testing"
)

func TestHashIsSHA256OfConcatenatedParts(t *testing.T) {
	want := Digest(sha256.Sum256([]byte("hello, world")))
	for _, parts := range [][][]byte{
		{[]byte("hello, world")},
		{[]byte("hello"), []byte(", "), []byte("world")},
		{nil, []byte("hello, world"), {}},
	} {
		if got := Hash(parts...); got != want {
			t.Errorf("Hash(%q) = %s, want %s", parts, got, want)
		}
	}
	if got, want := Hash(), Digest(sha256.Sum256(nil)); got != want {
		t.Errorf("Hash() = %s, want SHA-256 of the empty string %s", got, want)
	}
}

func TestDigestStringIsFullLowercaseHexAndShortIsItsPrefix(t *testing.T) {
	d := Hash([]byte("abc"))
	const want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
	if d.String() != want {
		t.Fatalf("String() = %s, want %s", d.String(), want)
	}
	if d.Short() != want[:8] || !strings.HasPrefix(d.String(), d.Short()) {
		t.Fatalf("Short() = %s, want %s", d.Short(), want[:8])
	}
}

func TestDigestIsZeroOnlyForZeroValue(t *testing.T) {
	var z Digest
	if !z.IsZero() {
		t.Error("zero Digest: IsZero() = false")
	}
	if Hash().IsZero() || Hash([]byte{0}).IsZero() {
		t.Error("real digest reports IsZero() = true")
	}
	z[31] = 1
	if z.IsZero() {
		t.Error("digest with one non-zero byte reports IsZero() = true")
	}
}
