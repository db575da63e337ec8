package fastconn

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// relayResult is one RelayTo's return.
type relayResult struct {
	moved int64
	data  []byte
	err   error
}

// relayAsync runs RelayTo from src to dst until it returns an error,
// writing the bytes it returns to dst and passing the FIN on as a copy loop
// does, and sends each return on the channel.
func relayAsync(src, dst *Conn, pool *Pool) <-chan relayResult {
	out := make(chan relayResult, 64)
	go func() {
		defer close(out)
		for {
			moved, buf, n, err := src.RelayTo(dst, pool)
			r := relayResult{moved: moved, err: err}
			if n > 0 {
				r.data = append([]byte(nil), (*buf)[:n]...)
				pool.Put(buf)
			}
			out <- r // before the Write, which may wait for the test to read
			if err == io.EOF {
				dst.CloseWrite() // the FIN goes on, as a proxy passes it
			}
			if err != nil {
				return
			}
			if _, err := dst.Write(r.data); err != nil {
				out <- relayResult{err: err}
				return
			}
		}
	}()
	return out
}

// untilArmed waits until the poller holds c's relay.
func untilArmed(t *testing.T, c *Conn) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); c.rstate.Load() != relayArmed; {
		if time.Now().After(deadline) {
			t.Fatal("the relay was never armed")
		}
		runtime.Gosched()
	}
}

func readFull(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, n)
	if k, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("reading %d bytes: %v (got %q)", n, err, b[:k])
	}
	return b
}

// Small messages go through the poller without waking RelayTo's caller:
// it returns once, at the FIN, with every byte counted in moved.
func TestRelayForwardsWithoutWakingTheReader(t *testing.T) {
	src, in := pair(t)
	dst, out := pair(t)
	results := relayAsync(src, dst, NewPool(1024))
	untilArmed(t, src)
	want := 0
	for i := range 200 {
		msg := fmt.Appendf(nil, "message %d", i)
		if _, err := in.Write(msg); err != nil {
			t.Fatal(err)
		}
		if got := readFull(t, out, len(msg)); !bytes.Equal(got, msg) {
			t.Fatalf("got %q, want %q", got, msg)
		}
		// relayAsync reports a return before it writes the bytes out.
		select {
		case r := <-results:
			t.Fatalf("message %d: RelayTo returned (moved %d, %q, %v); want the poller to forward it", i, r.moved, r.data, r.err)
		default:
		}
		want += len(msg)
	}
	in.CloseWrite()
	r := within(t, results, "RelayTo's end at the FIN")
	if r.err != io.EOF || len(r.data) != 0 || r.moved != int64(want) {
		t.Fatalf("RelayTo returned moved %d, %d bytes, %v; want moved %d, none, EOF", r.moved, len(r.data), r.err, want)
	}
}

// A FIN right behind the last bytes, so that the read taking the bytes
// leaves it in the socket with no new readiness to come, still ends the
// relay (EPOLLRDHUP), every time.
func TestRelaySeesFINBehindShortRead(t *testing.T) {
	for i := range 100 {
		src, in := pair(t)
		dst, out := pair(t)
		results := relayAsync(src, dst, NewPool(1024))
		untilArmed(t, src)
		msg := fmt.Appendf(nil, "last words %d", i)
		in.Write(msg)
		in.CloseWrite()
		if got := readFull(t, out, len(msg)); !bytes.Equal(got, msg) {
			t.Fatalf("got %q, want %q", got, msg)
		}
		var moved int64
		for done := false; !done; {
			select {
			case r, ok := <-results:
				if !ok {
					done = true
					break
				}
				moved += r.moved + int64(len(r.data))
				if r.err != nil && r.err != io.EOF {
					t.Fatal(r.err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("round %d: the relay never saw the FIN", i)
			}
		}
		if moved != int64(len(msg)) {
			t.Fatalf("round %d: %d bytes counted, want %d", i, moved, len(msg))
		}
	}
}

// A read that fills the buffer is handed to the caller (bulk data, which a
// copy loop splices), and so are bytes the destination cannot take.
func TestRelayHandsBackFullReads(t *testing.T) {
	src, in := pair(t)
	dst, out := pair(t)
	results := relayAsync(src, dst, NewPool(1024))
	untilArmed(t, src)
	msg := bytes.Repeat([]byte("x"), 4096)
	in.Write(msg)
	r := within(t, results, "RelayTo's end at a full buffer")
	if r.moved != 0 || len(r.data) != 1024 || r.err != nil {
		t.Fatalf("RelayTo returned moved %d, %d bytes, %v; want 0, the full buffer (1024), nil", r.moved, len(r.data), r.err)
	}
	readFull(t, out, len(msg))
	in.Close()
	for range results {
	}
}

// When the destination's buffer is full, the relay stops and hands the
// bytes it could not write to the caller, whose Write waits for room;
// nothing is lost or reordered.
func TestRelayStopsAtFullDestination(t *testing.T) {
	src, in := pair(t)
	dst, out := pair(t)
	fixSendBuffer(t, dst, 4096)
	out.SetReadBuffer(4096)
	results := relayAsync(src, dst, NewPool(1024))
	untilArmed(t, src)
	var sent bytes.Buffer
	var r relayResult
	for i := 0; r.data == nil; i++ {
		if i == 100000 {
			t.Fatal("the relay never stopped though nobody reads the destination")
		}
		msg := fmt.Appendf(nil, "%08d|", i)
		in.Write(msg)
		sent.Write(msg)
		// One message per read: wait until it left src's socket.
		for waiting := true; waiting && r.data == nil; {
			select {
			case r = <-results:
				if r.err != nil || len(r.data) == 0 {
					t.Fatalf("RelayTo returned %d bytes, %v; want the bytes dst could not take", len(r.data), r.err)
				}
			default:
				waiting = inq(t, src) > 0
				runtime.Gosched()
			}
		}
	}
	got := readFull(t, out, sent.Len())
	if !bytes.Equal(got, sent.Bytes()) {
		t.Fatal("bytes lost or reordered on the way")
	}
	in.Close()
	for range results {
	}
}

// fixSendBuffer sets c's send buffer to n bytes (SO_SNDBUF), which also
// keeps the kernel from growing it: once the peer stops reading, the
// buffer stays full.
func fixSendBuffer(t *testing.T, c *Conn, n int) {
	t.Helper()
	if err := c.control("setsockopt", func(fd int) error {
		return syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_SNDBUF, n)
	}); err != nil {
		t.Fatal(err)
	}
}

// inq reports how many bytes wait in c's socket to be read (SIOCINQ, which is TIOCINQ).
func inq(t *testing.T, c *Conn) int {
	var n int32
	if err := c.control("ioctl", func(fd int) error {
		if _, _, errno := syscall.RawSyscall(syscall.SYS_IOCTL, uintptr(fd), syscall.TIOCINQ, uintptr(unsafe.Pointer(&n))); errno != 0 {
			return errno
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return int(n)
}

// within takes the next value from ch: a wait that never ends fails the test
// in 5s, naming what it waited for, instead of hanging the run.
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("%s never came", what)
		panic("unreachable")
	}
}

// untilInq waits until n bytes wait in c's socket: n > 0 for bytes a peer
// sent (on loopback, there when its write returned), 0 for a reader in the
// poller to have taken them.
func untilInq(t *testing.T, c *Conn, n int) {
	t.Helper()
	for start := time.Now(); inq(t, c) != n; time.Sleep(time.Millisecond) {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("%d bytes wait in the socket, want %d", inq(t, c), n)
		}
	}
}

// A deadline ends the wait with the bytes moved so far, and Close ends it
// with net.ErrClosed.
func TestRelayDeadlineAndClose(t *testing.T) {
	src, in := pair(t)
	dst, out := pair(t)
	results := relayAsync(src, dst, NewPool(1024))
	untilArmed(t, src)
	in.Write([]byte("hello"))
	readFull(t, out, 5)
	src.SetReadDeadline(time.Now())
	r := within(t, results, "RelayTo's end at the deadline")
	if !errors.Is(r.err, os.ErrDeadlineExceeded) || r.moved != 5 {
		t.Fatalf("RelayTo returned moved %d, %v; want 5, a deadline error", r.moved, r.err)
	}

	src.SetReadDeadline(time.Time{})
	results = relayAsync(src, dst, NewPool(1024))
	untilArmed(t, src)
	src.Close()
	if r := within(t, results, "RelayTo's end at Close"); !errors.Is(r.err, net.ErrClosed) {
		t.Fatalf("RelayTo cut short by Close: %v; want net.ErrClosed", r.err)
	}
}

// Many relayed connections at once, both directions, as a TCP proxy runs
// them: every round trip arrives.
func TestManyRelaysLoseNothing(t *testing.T) {
	const conns, rounds = 32, 300
	pool := NewPool(1024)
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for range conns {
		client, cpeer := pair(t)
		backend, bpeer := pair(t)
		up, down := relayAsync(client, backend, pool), relayAsync(backend, client, pool)
		go echo(bpeer)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := echoRounds(cpeer, rounds, "relay"); err != nil {
				errs <- err
				return
			}
			cpeer.CloseWrite()
			for _, ch := range []<-chan relayResult{up, down} {
				for r := range ch {
					if r.err != nil && r.err != io.EOF {
						errs <- r.err
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// echo is a backend that sends back what it reads, and its FIN after the
// client's.
func echo(peer *net.TCPConn) {
	_, _ = io.Copy(peer, peer)
	peer.CloseWrite()
}

// echoRounds sends rounds messages from peer, each read back whole from an
// echo at the other end before the next, and returns the bytes sent.
func echoRounds(peer *net.TCPConn, rounds int, tag string) (int, error) {
	buf := make([]byte, 64)
	sent := 0
	for r := range rounds {
		msg := fmt.Appendf(nil, "%s round %d", tag, r)
		peer.Write(msg)
		peer.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(peer, buf[:len(msg)]); err != nil || !bytes.Equal(buf[:len(msg)], msg) {
			return sent, fmt.Errorf("%s round %d: %q, %v", tag, r, buf[:len(msg)], err)
		}
		sent += len(msg)
	}
	return sent, nil
}
