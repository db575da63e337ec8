package fastconn

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/pacer-lb/pacer/internal/testnet"
)

// listen returns a loopback listener and its address, closed at cleanup.
func listen(t testing.TB, network, addr string) (net.Listener, netip.AddrPort) {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, ln.Addr().(*net.TCPAddr).AddrPort()
}

// dialers are the two ways to a dialled Conn: Dial, into fastconn's
// poller, or net's dial wrapped with New, in the runtime's.
var dialers = map[string]func(context.Context, netip.AddrPort, time.Duration) (*Conn, error){
	"Dial": Dial,
	"New":  dialNew,
}

// dialNew dials with net and wraps the TCPConn with New: the runtime's
// poller through the net package.
func dialNew(ctx context.Context, addr netip.AddrPort, timeout time.Duration) (*Conn, error) {
	nc, err := (&net.Dialer{Timeout: timeout}).DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return nil, err
	}
	return New(nc.(*net.TCPConn))
}

// dialPair dials ln with Dial and returns the Conn and the accepted peer.
func dialPair(t *testing.T, ln net.Listener, addr netip.AddrPort) (*Conn, net.Conn) {
	t.Helper()
	return dialPairWith(t, ln, addr, Dial)
}

// dialPairWith is dialPair with the given dial function.
func dialPairWith(t *testing.T, ln net.Listener, addr netip.AddrPort, dial func(context.Context, netip.AddrPort, time.Duration) (*Conn, error)) (*Conn, net.Conn) {
	t.Helper()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := dial(context.Background(), addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); peer.Close() })
	return c, peer
}

func TestDialCarriesBytesBothWays(t *testing.T) {
	for _, tc := range []struct{ network, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		for name, dial := range dialers {
			t.Run(tc.network+"/"+name, func(t *testing.T) {
				// Both loopbacks are part of the machines this runs on;
				// Dial's IPv6 socket address must be tested, not skipped.
				ln, addr := listen(t, tc.network, tc.addr)
				c, peer := dialPairWith(t, ln, addr, dial)

				if got := c.RemoteAddr().(*net.TCPAddr).AddrPort(); got != addr {
					t.Errorf("RemoteAddr %v, want %v", got, addr)
				}
				if got, want := c.LocalAddr().String(), peer.RemoteAddr().String(); got != want {
					t.Errorf("LocalAddr %v, want the peer's view of it, %v", got, want)
				}
				pingPong(t, c, peer)
				got := make([]byte, 4)
				// CloseWrite sends a FIN: the peer sees EOF and can still answer.
				if err := c.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				if n, err := peer.Read(got); n != 0 || err != io.EOF {
					t.Fatalf("peer after CloseWrite: %d, %v; want EOF", n, err)
				}
				if _, err := peer.Write([]byte("late")); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(c, got); err != nil || string(got) != "late" {
					t.Fatalf("read after CloseWrite %q, %v", got, err)
				}
			})
		}
	}
}

func TestDialRefused(t *testing.T) {
	ln, addr := listen(t, "tcp", "127.0.0.1:0")
	ln.Close() // nothing listens there now

	c, err := Dial(context.Background(), addr, time.Second)
	if err == nil {
		c.Close()
		t.Fatal("Dial to a closed port succeeded")
	}
	var op *net.OpError
	if !errors.Is(err, syscall.ECONNREFUSED) || !errors.As(err, &op) || op.Op != "dial" {
		t.Fatalf("Dial to a closed port: %v; want a dial *net.OpError matching ECONNREFUSED", err)
	}

	// With bytes to send, the send behind the connect meets the refusal.
	c, sent, err := DialSend(context.Background(), addr, time.Second, []byte("hello"))
	if err == nil {
		c.Close()
		t.Fatal("DialSend to a closed port succeeded")
	}
	if !errors.Is(err, syscall.ECONNREFUSED) || !errors.As(err, &op) || op.Op != "dial" || sent != 0 {
		t.Fatalf("DialSend to a closed port: %d sent, %v; want 0 and a dial *net.OpError matching ECONNREFUSED", sent, err)
	}
}

// DialSend's bytes reach the peer ahead of anything written after, and the
// connection then works as Dial's does.
func TestDialSendSendsFirstBytes(t *testing.T) {
	ln, addr := listen(t, "tcp", "127.0.0.1:0")
	var sent int
	c, peer := dialPairWith(t, ln, addr, func(ctx context.Context, addr netip.AddrPort, timeout time.Duration) (*Conn, error) {
		c, n, err := DialSend(ctx, addr, timeout, []byte("hello"))
		sent = n
		return c, err
	})
	// On loopback the handshake is done when connect returns, so the
	// bytes went out with it.
	if sent != 5 {
		t.Fatalf("DialSend sent %d bytes of 5 to a listener on loopback", sent)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(peer, got); err != nil || string(got) != "hello" {
		t.Fatalf("peer's first read %q, %v; want hello", got, err)
	}
	pingPong(t, c, peer)
}

// A silent backend times DialSend out as it does Dial, with nothing sent.
func TestDialSendTimeout(t *testing.T) {
	c, sent, err := DialSend(context.Background(), testnet.SilentAddr(t), 150*time.Millisecond, []byte("hello"))
	var ne net.Error
	if err == nil {
		c.Close()
	}
	if !errors.As(err, &ne) || !ne.Timeout() || sent != 0 {
		t.Fatalf("DialSend to a silent address: %d sent, %v; want 0 and a timeout", sent, err)
	}
}

// DialStart never waits: on loopback the handshake is done and the first
// bytes went out when it returns; to an address that never answers it
// reports the handshake pending, and FinishDial waits for it, up to its
// timeout.
func TestDialStartLeavesTheWaitToFinishDial(t *testing.T) {
	ln, addr := listen(t, "tcp", "127.0.0.1:0")
	c, sent, pending, err := DialStart(context.Background(), addr, []byte("hello"))
	if err != nil || pending || sent != 5 {
		t.Fatalf("DialStart on loopback: %d sent, pending %v, %v; want 5 sent, done", sent, pending, err)
	}
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if err := c.FinishDial(context.Background(), time.Second); err != nil {
		t.Fatalf("FinishDial of a finished dial: %v", err)
	}
	if got := readFull(t, peer, 5); string(got) != "hello" {
		t.Fatalf("the backend got %q", got)
	}
	c.Close()

	start := time.Now()
	c, sent, pending, err = DialStart(context.Background(), testnet.SilentAddr(t), []byte("hello"))
	if err != nil || !pending || sent != 0 {
		t.Fatalf("DialStart to a silent address: %d sent, pending %v, %v; want nothing sent, pending", sent, pending, err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("DialStart waited %v", took)
	}
	defer c.Close()
	var ne net.Error
	if err := c.FinishDial(context.Background(), 150*time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("FinishDial to a silent address: %v; want a timeout", err)
	}
}

func TestDialTimeoutAndCancel(t *testing.T) {
	silent := testnet.SilentAddr(t)

	start := time.Now()
	_, err := Dial(context.Background(), silent, 150*time.Millisecond)
	took := time.Since(start)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Dial to a silent address: %v; want a timeout", err)
	}
	if took < 150*time.Millisecond || took > 5*time.Second {
		t.Errorf("the timeout ended the dial after %v; want about 150ms", took)
	}

	// A cancelled context ends a dial in flight long before its timeout.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start = time.Now()
	_, err = Dial(ctx, silent, time.Minute)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial with a cancelled context: %v; want context.Canceled", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("cancel ended the dial after %v", took)
	}

	if _, err := Dial(ctx, silent, time.Minute); !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial with a context already done: %v; want context.Canceled", err)
	}
}

// A Read or Write cut short by Close, and any call after it, fails with an
// error matching net.ErrClosed, whether the Conn came from Dial or a
// Listener (fastconn's poller) or from New (the runtime's).
func TestClosedConnErrors(t *testing.T) {
	ln, addr := listen(t, "tcp", "127.0.0.1:0")
	dialed, _ := dialPair(t, ln, addr)
	accepted, _ := pair(t)
	wrapped, _ := dialPairWith(t, ln, addr, dialNew)
	for name, c := range map[string]*Conn{"Dial": dialed, "Listener": accepted, "New": wrapped} {
		t.Run(name, func(t *testing.T) {
			readErr := make(chan error, 1)
			go func() {
				_, _, err := c.ReadPooled(NewPool(64))
				readErr <- err
			}()
			// Give the read time to park in the poller, the case that matters;
			// if it has not, it starts after Close, and must fail the same way.
			time.Sleep(20 * time.Millisecond)
			c.Close()
			if err := <-readErr; !errors.Is(err, net.ErrClosed) {
				t.Errorf("read cut short by Close: %v; want net.ErrClosed", err)
			}
			if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
				t.Errorf("write after Close: %v; want net.ErrClosed", err)
			}
			if err := c.SetReadDeadline(time.Now()); !errors.Is(err, net.ErrClosed) {
				t.Errorf("SetReadDeadline after Close: %v; want net.ErrClosed", err)
			}
			if err := c.CloseWrite(); !errors.Is(err, net.ErrClosed) {
				t.Errorf("CloseWrite after Close: %v; want net.ErrClosed", err)
			}
		})
	}
}

// SetLinger(0) then Close resets the connection: the peer's read fails
// with ECONNRESET instead of seeing a clean EOF.
func TestDialLingerZeroResets(t *testing.T) {
	ln, addr := listen(t, "tcp", "127.0.0.1:0")
	c, peer := dialPair(t, ln, addr)
	if err := c.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	c.Close()
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := peer.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("peer read after SetLinger(0) and Close: %v; want ECONNRESET", err)
	}
}

// Splice works between Conns of both pollers: what the peer of a dialled
// Conn sends arrives at the peer of a wrapped one, then EOF.
func TestSpliceFromDialed(t *testing.T) {
	ln, addr := listen(t, "tcp", "127.0.0.1:0")
	src, srcPeer := dialPair(t, ln, addr)
	dst, dstPeer := dialPairWith(t, ln, addr, dialNew)
	want := make([]byte, 3<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	go func() {
		srcPeer.Write(want)
		srcPeer.(*net.TCPConn).CloseWrite()
	}()
	done := make(chan error, 1)
	go func() {
		_, err := Splice(dst, src)
		dst.CloseWrite()
		done <- err
	}()
	got, err := io.ReadAll(dstPeer)
	if err != nil || len(got) != len(want) || string(got) != string(want) {
		t.Fatalf("read %d bytes (%v); want the %d sent, in order", len(got), err, len(want))
	}
	if err := within(t, done, "the relay's end"); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkDial compares connects to a loopback listener through Dial and
// through net.Dialer, as the TCP plane's dial was before. The listener
// closes each connection first, as a backend answering one request does:
// the side that closes first keeps the TIME_WAIT, and a client keeping tens
// of thousands of them on its ephemeral ports makes every later connect
// search for a free one, which would measure the kernel's port search
// instead of the dial.
func BenchmarkDial(b *testing.B) {
	ln, addr := listen(b, "tcp", "127.0.0.1:0")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	b.Run("fastconn", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c, err := Dial(context.Background(), addr, time.Second)
			if err != nil {
				b.Fatal(err)
			}
			readEOF(b, c)
			c.Close()
		}
	})
	b.Run("net.Dialer", func(b *testing.B) {
		b.ReportAllocs()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		d := net.Dialer{Timeout: time.Second, KeepAlive: -1}
		s := addr.String()
		for b.Loop() {
			c, err := d.DialContext(ctx, "tcp", s)
			if err != nil {
				b.Fatal(err)
			}
			readEOF(b, c)
			c.Close()
		}
	})
}

// readEOF reads c until the peer's FIN.
func readEOF(b *testing.B, c net.Conn) {
	var buf [16]byte
	if n, err := c.Read(buf[:]); n != 0 || err != io.EOF {
		b.Fatalf("read %d, %v; want the listener's EOF", n, err)
	}
}
