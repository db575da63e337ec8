package fastconn

import (
	"bytes"
	"errors"
	"io"
	"syscall"
	"testing"

	"github.com/pacer-lb/pacer/internal/testnet"
)

// A Splice that cannot make its pipe, the process being out of
// descriptors, copies instead, as the net package's splice does: a
// connection moving bulk data must not break because other connections
// hold every descriptor for a moment.
func TestSpliceCopiesWithoutDescriptors(t *testing.T) {
	if !testnet.InChild(t) {
		return
	}
	src, in := pair(t)
	dst, out := pair(t)
	testnet.ExhaustDescriptors(t)
	if _, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0); !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("a new socket with the descriptors exhausted: %v; want EMFILE", err)
	}

	want := make([]byte, 4<<20+17)
	for i := range want {
		want[i] = byte(i * 7)
	}
	go func() {
		in.Write(want)
		in.CloseWrite()
	}()
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(out)
		got <- b
	}()
	n, err := Splice(dst, src)
	if err != nil || n != int64(len(want)) {
		t.Fatalf("Splice without a descriptor to spare: %d, %v; want %d, nil", n, err, len(want))
	}
	dst.CloseWrite()
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("the far end got %d bytes, not the %d sent", len(b), len(want))
	}
}
