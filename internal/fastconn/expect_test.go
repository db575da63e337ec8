package fastconn

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// expectPing writes "ping" after ExpectReply and checks the peer got it.
func expectPing(t *testing.T, c *Conn, peer net.Conn) {
	t.Helper()
	c.ExpectReply()
	if n, err := c.Write([]byte("ping")); n != 4 || err != nil {
		t.Fatalf("write: %d, %v; want 4, nil", n, err)
	}
}

// The Write returns only once the answer is there, and the Read gets it;
// over and over on one connection, with the answer sometimes arriving
// before the Write's wait began (the peer answers at once).
func TestExpectReplyWaitsForTheAnswer(t *testing.T) {
	c, peer := pair(t)
	var answered atomic.Bool
	go func() {
		buf := make([]byte, 4)
		for i := 0; ; i++ {
			if _, err := io.ReadFull(peer, buf); err != nil {
				return
			}
			if i == 0 {
				// A slow first answer: a Write that did not wait
				// returns long before it.
				time.Sleep(50 * time.Millisecond)
			}
			answered.Store(true)
			if _, err := peer.Write([]byte("pong")); err != nil {
				return
			}
		}
	}()
	got := make([]byte, 16)
	for i := range 500 {
		answered.Store(false)
		expectPing(t, c, peer)
		if !answered.Load() {
			t.Fatalf("round %d: Write returned before the peer answered", i)
		}
		if n, err := c.Read(got); err != nil || string(got[:n]) != "pong" {
			t.Fatalf("round %d: read %q, %v", i, got[:n], err)
		}
	}
}

// With no answer, the wait ends at the read deadline: the Write still
// reports its bytes, and the Read after it times out.
func TestExpectReplyWaitEndsAtReadDeadline(t *testing.T) {
	c, peer := pair(t)
	c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	expectPing(t, c, peer)
	got := make([]byte, 4)
	if _, err := io.ReadFull(peer, got); err != nil || string(got) != "ping" {
		t.Fatalf("peer read %q, %v", got, err)
	}
	if _, err := c.Read(got); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read with no answer: %v; want a timeout", err)
	}
}

// A request larger than the socket buffers cannot go out in the wait's
// write: Write sends the rest the usual way, and the answer is still read.
func TestExpectReplyLargeWrite(t *testing.T) {
	c, peer := pair(t)
	want := make([]byte, 8<<20)
	for i := range want {
		want[i] = byte(i * 13)
	}
	got := make(chan []byte, 1)
	go func() {
		var buf bytes.Buffer
		_, _ = io.CopyN(&buf, peer, int64(len(want)))
		got <- buf.Bytes()
		_, _ = peer.Write([]byte("done"))
	}()
	c.ExpectReply()
	if n, err := c.Write(want); n != len(want) || err != nil {
		t.Fatalf("write: %d, %v", n, err)
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("peer got %d bytes, not the %d written", len(b), len(want))
	}
	answer := make([]byte, 4)
	if _, err := io.ReadFull(c, answer); err != nil || string(answer) != "done" {
		t.Fatalf("read %q, %v", answer, err)
	}
}

// A peer that closes or resets instead of answering ends the wait, and the
// Read reports how.
func TestExpectReplyPeerGoesAway(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reset bool
		want  error
	}{
		{"FIN", false, io.EOF},
		{"reset", true, syscall.ECONNRESET},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, peer := pair(t)
			go func() {
				_, _ = io.ReadFull(peer, make([]byte, 4))
				if tc.reset {
					_ = peer.SetLinger(0)
				}
				_ = peer.Close()
			}()
			c.SetReadDeadline(time.Now().Add(time.Minute))
			expectPing(t, c, peer)
			if _, err := c.Read(make([]byte, 4)); !errors.Is(err, tc.want) {
				t.Fatalf("read: %v; want %v", err, tc.want)
			}
		})
	}
}

// Close ends the wait; the Read after it fails as on a closed net.Conn.
func TestExpectReplyClose(t *testing.T) {
	c, peer := pair(t)
	go func() {
		_, _ = io.ReadFull(peer, make([]byte, 4))
		_ = c.Close()
	}()
	expectPing(t, c, peer)
	if _, err := c.Read(make([]byte, 4)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after Close: %v; want net.ErrClosed", err)
	}
}

// ExpectReply is for one Write: the one after it does not wait. (If it
// did, this test would hang until the deadline and fail.)
func TestExpectReplyIsForOneWrite(t *testing.T) {
	c, peer := pair(t)
	go func() {
		buf := make([]byte, 4)
		_, _ = io.ReadFull(peer, buf)
		_, _ = peer.Write([]byte("pong"))
	}()
	c.SetReadDeadline(time.Now().Add(time.Minute))
	expectPing(t, c, peer)
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Write([]byte("more"))
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a Write without ExpectReply waited for an answer")
	}
}
