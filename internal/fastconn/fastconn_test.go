package fastconn

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/pacer-lb/pacer/internal/testnet"
)

// pair returns a Conn accepted by a Listener (fastconn's own poller, as
// the data planes' client connections are) and the plain peer that dialled
// it, over real loopback sockets.
func pair(t testing.TB) (*Conn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl, err := NewListener(ln.(*net.TCPListener))
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	dialed := make(chan net.Conn, 1)
	go func() {
		c, _ := net.Dial("tcp", ln.Addr().String())
		dialed <- c
	}()
	c, err := fl.AcceptConn()
	if err != nil {
		t.Fatal(err)
	}
	peer := <-dialed
	if peer == nil {
		t.Fatal("dial failed")
	}
	t.Cleanup(func() { c.Close(); peer.Close() })
	return c, peer.(*net.TCPConn)
}

// pingPong sends "ping" from c to peer and "pong" back, checking both.
func pingPong(t *testing.T, c *Conn, peer net.Conn) {
	t.Helper()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(peer, got); err != nil || string(got) != "ping" {
		t.Fatalf("peer read %q, %v", got, err)
	}
	if _, err := peer.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "pong" {
		t.Fatalf("read %q, %v", got, err)
	}
}

func TestReadWriteAndEOF(t *testing.T) {
	c, peer := pair(t)
	pingPong(t, c, peer)
	got := make([]byte, 4)
	peer.CloseWrite()
	if n, err := c.Read(got); n != 0 || err != io.EOF {
		t.Fatalf("after the peer's FIN: %d, %v; want 0, EOF", n, err)
	}
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read: %d, %v", n, err)
	}
}

func TestReadDeadline(t *testing.T) {
	c, _ := pair(t)
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := c.Read(make([]byte, 8))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past the deadline: %v; want a timeout", err)
	}
	_, _, err = c.ReadPooled(NewPool(64))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("pooled read past the deadline: %v; want a timeout", err)
	}
}

// TestLargeWriteWaitsForReader writes more than the socket buffers hold, so
// the write must wait in the poller for the slow reader, and every byte must
// arrive in order.
func TestLargeWriteWaitsForReader(t *testing.T) {
	c, peer := pair(t)
	want := make([]byte, 8<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	got := make(chan []byte, 1)
	go func() {
		var buf bytes.Buffer
		chunk := make([]byte, 4096)
		for buf.Len() < len(want) {
			n, err := peer.Read(chunk)
			buf.Write(chunk[:n])
			if err != nil {
				break
			}
		}
		got <- buf.Bytes()
	}()
	if n, err := c.Write(want); n != len(want) || err != nil {
		t.Fatalf("write: %d, %v", n, err)
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("peer got %d bytes, not the %d written", len(b), len(want))
	}
}

func TestPeerResetIsECONNRESET(t *testing.T) {
	c, peer := pair(t)
	peer.SetLinger(0)
	peer.Close()
	_, err := c.Read(make([]byte, 8))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after the peer's reset: %v; want ECONNRESET", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("error %v is not a read *net.OpError", err)
	}
}

func TestWriteAfterCloseFails(t *testing.T) {
	c, _ := pair(t)
	c.Close()
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write on a closed conn: %v; want net.ErrClosed", err)
	}
}

func TestReadPooled(t *testing.T) {
	c, peer := pair(t)
	pool := NewPool(16)
	go peer.Write([]byte("0123456789abcdefXYZ"))
	var got []byte
	for len(got) < 19 {
		buf, n, err := c.ReadPooled(pool)
		if err != nil {
			t.Fatal(err)
		}
		if buf == nil || len(*buf) != 16 || n > 16 {
			t.Fatalf("buffer %v holding %d bytes; want a 16-byte pool buffer", buf, n)
		}
		got = append(got, (*buf)[:n]...)
		pool.Put(buf)
	}
	if string(got) != "0123456789abcdefXYZ" {
		t.Fatalf("read %q", got)
	}
	peer.CloseWrite()
	if buf, n, err := c.ReadPooled(pool); buf != nil || n != 0 || err != io.EOF {
		t.Fatalf("at EOF: %v, %d, %v; want nil, 0, EOF", buf, n, err)
	}
}

// TestFullDuplex runs Read and Write of one Conn on two goroutines at once,
// as the proxies do, under the race detector.
func TestFullDuplex(t *testing.T) {
	c, peer := pair(t)
	const total = 4 << 20
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // the peer echoes
		defer wg.Done()
		io.Copy(peer, peer)
		peer.CloseWrite()
	}()
	go func() {
		defer wg.Done()
		chunk := bytes.Repeat([]byte("abcdefgh"), 1024)
		for sent := 0; sent < total; sent += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				t.Error(err)
				return
			}
		}
		c.CloseWrite()
	}()
	n, err := io.Copy(io.Discard, struct{ io.Reader }{c})
	if err != nil || n != total {
		t.Fatalf("echoed %d bytes, %v; want %d", n, err, total)
	}
	wg.Wait()
}

// BenchmarkPingPong is one small message each way between a wrapped
// connection and a plain one: go test -bench . -benchmem ./internal/fastconn
func BenchmarkPingPong(b *testing.B) {
	c, peer := pair(b)
	msg, buf := []byte("ping"), make([]byte, 16)
	b.ReportAllocs()
	for b.Loop() {
		c.Write(msg)
		peer.Read(buf)
		peer.Write(msg)
		c.Read(buf)
	}
}

// ReadNow takes what the socket holds and never waits: nothing, bytes, a
// FIN left for the next read, or a reset, which it reports.
func TestReadNow(t *testing.T) {
	pool := NewPool(64)
	c, peer := pair(t)
	if buf, n, err := c.ReadNow(pool); buf != nil || n != 0 || err != nil {
		t.Fatalf("ReadNow with nothing sent: %v, %d, %v; want nil, 0, nil", buf, n, err)
	}
	if _, err := peer.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	// On loopback the bytes are in c's socket when the peer's write returns.
	buf, n, err := c.ReadNow(pool)
	if err != nil || n != 3 || string((*buf)[:n]) != "abc" {
		t.Fatalf("ReadNow after the peer wrote abc: %d, %v", n, err)
	}
	pool.Put(buf)
	if err := peer.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if buf, n, err := c.ReadNow(pool); buf != nil || n != 0 || err != nil {
		t.Fatalf("ReadNow after the peer's FIN: %v, %d, %v; want nil, 0, nil", buf, n, err)
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("Read after ReadNow saw the FIN: %d, %v; want EOF", n, err)
	}

	c, peer = pair(t)
	_ = peer.SetLinger(0)
	peer.Close()
	if _, _, err := c.ReadNow(pool); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("ReadNow after the peer's reset: %v; want ECONNRESET", err)
	}
}

// A Conn in the runtime's poller (New) does not read early.
func TestReadNowOutsideThePoller(t *testing.T) {
	ln, addr := listen(t, "tcp", "127.0.0.1:0")
	c, peer := dialPairWith(t, ln, addr, dialNew)
	if _, err := peer.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	if buf, n, err := c.ReadNow(NewPool(64)); buf != nil || n != 0 || err != nil {
		t.Fatalf("ReadNow on a New Conn: %v, %d, %v; want nil, 0, nil", buf, n, err)
	}
	got := make([]byte, 3)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "abc" {
		t.Fatalf("Read after ReadNow %q, %v", got, err)
	}
}

// Listen opens plain TCP, whatever Go's default (MPTCP since Go 1.24), and
// its connections get no keep-alive probes.
func TestListenPlainTCPWithoutKeepAlive(t *testing.T) {
	ln, err := Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if v := testnet.Sockopt(t, ln, syscall.SOL_SOCKET, syscall.SO_PROTOCOL); v != syscall.IPPROTO_TCP {
		t.Fatalf("listener protocol %d, want plain TCP (%d)", v, syscall.IPPROTO_TCP)
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if v := testnet.Sockopt(t, sc, syscall.SOL_SOCKET, syscall.SO_KEEPALIVE); v != 0 {
		t.Fatalf("accepted connection has SO_KEEPALIVE %d", v)
	}
}

// A Conn is allocated once per connection, from the 768-byte size class:
// eight bytes more and every connection takes 896. A field added must
// find room in the padding of others (or another go), as waited did
// beside rgot.
func TestConnFitsItsSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(Conn{}); n > 768 {
		t.Fatalf("a Conn is %d bytes; over 768, it is allocated from the 896-byte size class", n)
	}
}
