package fastconn

import (
	"bytes"
	"errors"
	"io"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestSpliceMovesEverythingToEOF sends more than a pipe holds through
// Splice, to a slow reader, and checks every byte, the count and the EOF.
func TestSpliceMovesEverythingToEOF(t *testing.T) {
	src, in := pair(t)
	dst, out := pair(t)
	want := make([]byte, 8<<20+123)
	for i := range want {
		want[i] = byte(i * 13)
	}
	go func() {
		in.Write(want)
		in.CloseWrite()
	}()
	got := make(chan []byte, 1)
	go func() {
		var buf bytes.Buffer
		chunk := make([]byte, 4096) // slower than the splice: dst must wait
		for {
			n, err := out.Read(chunk)
			buf.Write(chunk[:n])
			if err != nil {
				break
			}
		}
		got <- buf.Bytes()
	}()
	n, err := Splice(dst, src)
	if err != nil || n != int64(len(want)) {
		t.Fatalf("Splice: %d, %v; want %d, nil", n, err, len(want))
	}
	dst.CloseWrite()
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("the far end got %d bytes, not the %d sent", len(b), len(want))
	}
}

// TestSpliceStopsAtReadDeadline: the deadline ends a Splice waiting for
// data with a timeout, after passing on what came before it.
func TestSpliceStopsAtReadDeadline(t *testing.T) {
	src, in := pair(t)
	dst, out := pair(t)
	in.Write([]byte("before"))
	src.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := Splice(dst, src)
	if !errors.Is(err, os.ErrDeadlineExceeded) || n != 6 {
		t.Fatalf("Splice past the deadline: %d, %v; want 6, a timeout", n, err)
	}
	got := make([]byte, 6)
	if _, err := io.ReadFull(out, got); err != nil || string(got) != "before" {
		t.Fatalf("far end read %q, %v", got, err)
	}
}

func TestSpliceReportsPeerReset(t *testing.T) {
	src, in := pair(t)
	dst, _ := pair(t)
	in.SetLinger(0)
	in.Close()
	_, err := Splice(dst, src)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Splice from a reset peer: %v; want ECONNRESET", err)
	}
}

// SplicedAt moves while one Splice empties its pipe into a slow reader, not
// only when Splice returns: a caller's idle timeout shorter than that drain
// must see the bytes moving (proxy's idle check reads it).
func TestSplicedAtMovesDuringALongSplice(t *testing.T) {
	src, in := pair(t)
	dst, out := pair(t)
	fixSendBuffer(t, dst, 4096)
	go func() {
		in.Write(make([]byte, 1<<20)) // one pipe's worth, taken in at once
		in.CloseWrite()
	}()
	go func() {
		chunk := make([]byte, 4096)
		for {
			if _, err := out.Read(chunk); err != nil {
				return
			}
			time.Sleep(2 * time.Millisecond) // the slow reader's pace: about 2 MB/s at most
		}
	}()
	done := make(chan error, 1)
	start := Mono()
	go func() {
		_, err := Splice(dst, src)
		done <- err
	}()
	var stamps []time.Duration
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			if len(stamps) < 2 || stamps[len(stamps)-1] <= stamps[0] {
				t.Fatalf("SplicedAt while the splice ran: %v; want it to move along (Splice took %v)", stamps, Mono()-start)
			}
			return
		case <-time.After(50 * time.Millisecond):
			stamps = append(stamps, dst.SplicedAt())
		}
	}
}
