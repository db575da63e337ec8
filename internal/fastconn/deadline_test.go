package fastconn

import (
	"errors"
	"io"
	"os"
	"runtime"
	"testing"
	"time"
)

// readResult is what a Read in another goroutine returned, and when.
type readResult struct {
	n    int
	err  error
	took time.Duration
	data string // what was read, for the exchange tests
}

func readAsync(c *Conn) <-chan readResult {
	ch := make(chan readResult, 1)
	go func() {
		start := time.Now()
		n, err := c.Read(make([]byte, 64))
		ch <- readResult{n: n, err: err, took: time.Since(start)}
	}()
	return ch
}

// waitBusy waits until c's Read is running; it may not be parked yet, and
// the tests hold either way.
func waitBusy(t *testing.T, c *Conn) {
	t.Helper()
	for start := time.Now(); !c.rd.busy.Load(); {
		if time.Since(start) > 5*time.Second {
			t.Fatal("the read never started")
		}
		time.Sleep(time.Millisecond)
	}
}

// A deadline moved by another goroutine while a Read waits takes effect for
// that Read, earlier or later, as on a net.Conn.
func TestDeadlineMovedWhileReadWaits(t *testing.T) {
	c, _ := pair(t)
	c.SetReadDeadline(time.Now().Add(time.Hour))
	res := readAsync(c)
	waitBusy(t, c)
	set := time.Now()
	c.SetReadDeadline(set.Add(50 * time.Millisecond))
	r := <-res
	if !errors.Is(r.err, os.ErrDeadlineExceeded) || time.Since(set) < 50*time.Millisecond {
		t.Fatalf("deadline moved earlier: %v after %v; want a timeout, not before 50ms", r.err, time.Since(set))
	}

	// Moved later while the Read waits. The premise needs the second set to
	// come well before the first deadline; a starved test goroutine can
	// miss that, and then the round proves nothing and runs again.
	for try := 1; ; try++ {
		start := time.Now()
		c.SetReadDeadline(start.Add(200 * time.Millisecond))
		res := readAsync(c)
		waitBusy(t, c)
		set := time.Now()
		c.SetReadDeadline(set.Add(600 * time.Millisecond))
		r := <-res
		if set.Sub(start) >= 150*time.Millisecond && try < 3 {
			continue
		}
		if !errors.Is(r.err, os.ErrDeadlineExceeded) || time.Since(set) < 600*time.Millisecond {
			t.Fatalf("deadline moved later: %v after %v; want a timeout, not before 600ms", r.err, time.Since(set))
		}
		return
	}
}

// A deadline never ends a wait before the time asked for, and ends it about
// a sixteenth of the timeout later at most (the bound checked here is loose:
// a loaded machine runs late).
func TestDeadlineNeverEarly(t *testing.T) {
	c, _ := pair(t)
	for _, d := range []time.Duration{20 * time.Millisecond, 160 * time.Millisecond} {
		set := time.Now()
		c.SetReadDeadline(set.Add(d))
		_, err := c.Read(make([]byte, 8))
		took := time.Since(set)
		if !errors.Is(err, os.ErrDeadlineExceeded) || took < d {
			t.Fatalf("deadline %v: %v after %v; want a timeout, not before", d, err, took)
		}
		if took > d+d/16+2*time.Second {
			t.Errorf("deadline %v ended the read after %v", d, took)
		}
	}
}

// Each window of a loop that sets a deadline and reads until it passes
// waits for its whole window: an armed deadline that passed must not fail
// the next read at once (which would spin).
func TestDeadlineWindowsDoNotSpin(t *testing.T) {
	c, _ := pair(t)
	const windows, window = 5, 20 * time.Millisecond
	start := time.Now()
	for range windows {
		c.SetReadDeadline(time.Now().Add(window))
		if _, _, err := c.ReadPooled(NewPool(64)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read: %v; want a timeout", err)
		}
	}
	if took := time.Since(start); took < windows*window {
		t.Fatalf("%d windows of %v took %v", windows, window, took)
	}
}

// A deadline in the past fails the next Read even with bytes waiting: the
// TCP plane stops a copy that way before it reads a client's bytes.
func TestPastDeadlineFailsReadWithDataWaiting(t *testing.T) {
	c, peer := pair(t)
	c.SetReadDeadline(time.Now().Add(time.Hour))
	peer.Write([]byte("a"))
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	peer.Write([]byte("b"))
	untilInq(t, c, 1) // "b" is there: the read must fail all the same
	c.SetReadDeadline(time.Unix(1, 0))
	if n, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after a past deadline: %d, %v; want a timeout", n, err)
	}
	// Cleared, the byte is there to read.
	c.SetReadDeadline(time.Time{})
	got := make([]byte, 1)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "b" {
		t.Fatalf("read after clearing the deadline: %q, %v", got, err)
	}
}

// A cleared deadline no longer ends a wait.
func TestClearedDeadline(t *testing.T) {
	c, peer := pair(t)
	c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read: %v; want a timeout", err)
	}
	c.SetReadDeadline(time.Time{})
	time.AfterFunc(100*time.Millisecond, func() { peer.Write([]byte("x")) })
	if n, err := c.Read(make([]byte, 1)); n != 1 || err != nil {
		t.Fatalf("read with no deadline: %d, %v; want the byte sent after 100ms", n, err)
	}
}

// What the laziness is for: a keep-alive server's deadlines per request
// (fasthttp's: idle timeout before the request, read timeout once it
// starts, write timeout before the response) reach the poller a handful of
// times over 300 requests, not three times per request.
func TestKeepAliveDeadlinesRarelyReachThePoller(t *testing.T) {
	c, peer := pair(t)
	const requests = 300
	go func() {
		buf := make([]byte, 8)
		for range requests {
			if _, err := peer.Write([]byte("GET")); err != nil {
				return
			}
			if _, err := io.ReadFull(peer, buf[:2]); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 3)
	for i := range requests {
		c.SetReadDeadline(time.Now().Add(60 * time.Second))
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Write([]byte("ok")); err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
	}
	if n := c.rd.applied.Load() + c.wd.applied.Load(); n > 10 {
		t.Fatalf("%d deadlines reached the poller over %d requests; want a handful", n, requests)
	}
}

// A connection whose calls never wait never gives its deadlines to the
// poller, as a one-request connection's calls often do not (its request is
// there when it is accepted, its response fits the socket's buffer). The
// first call that has to wait arms the deadline, which then ends it.
func TestDeadlinesReachThePollerOnlyForAWait(t *testing.T) {
	c, peer := pair(t)
	if _, err := peer.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	// Peeks never wait, so they let the read below find the bytes.
	for deadline := time.Now().Add(5 * time.Second); !c.Gone(); {
		if time.Now().After(deadline) {
			t.Fatal("the peer's bytes never arrived")
		}
		runtime.Gosched()
	}
	c.SetReadDeadline(time.Now().Add(time.Minute))
	c.SetWriteDeadline(time.Now().Add(time.Minute))
	if _, err := io.ReadFull(c, make([]byte, 7)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("response")); err != nil {
		t.Fatal(err)
	}
	if n := c.rd.applied.Load() + c.wd.applied.Load(); n != 0 {
		t.Fatalf("%d deadlines reached the poller, though no call waited", n)
	}
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	_, err := c.Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a read that waits past its deadline: %v; want os.ErrDeadlineExceeded", err)
	}
	if waited := time.Since(start); waited < 50*time.Millisecond {
		t.Fatalf("the read ended after %v, before its deadline", waited)
	}
	if n := c.rd.applied.Load(); n != 1 {
		t.Fatalf("%d read deadlines reached the poller; want the 1 the wait needed", n)
	}
}
