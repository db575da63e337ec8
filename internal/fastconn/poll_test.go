package fastconn

import (
	"errors"
	"io"
	"net"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pacer-lb/pacer/internal/testnet"
)

// fastListener returns a Listener on a loopback port, closed at cleanup.
func fastListener(t *testing.T, addr string) *Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fl, err := NewListener(ln.(*net.TCPListener))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fl.Close() })
	return fl
}

// untilWatched waits until a call on pd has had to wait in the poller
// (watch adds the socket to the epoll instance just before the call waits).
func untilWatched(t *testing.T, pd *pollFD) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !pd.watched.Load(); {
		if time.Now().After(deadline) {
			t.Fatal("the call never waited in the poller")
		}
		runtime.Gosched()
	}
}

// Close ends an AcceptConn that waits, with an error matching
// net.ErrClosed, and so is every Accept after it.
func TestListenerCloseEndsAccept(t *testing.T) {
	fl := fastListener(t, "127.0.0.1:0")
	done := make(chan error, 1)
	go func() {
		_, err := fl.AcceptConn()
		done <- err
	}()
	untilWatched(t, fl.pd) // Close must end an Accept that waits
	if err := fl.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept cut short by Close: %v; want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still waits after Close")
	}
	if _, err := fl.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v; want net.ErrClosed", err)
	}
	// The port is free again: the listening socket is closed, not only
	// forgotten.
	ln, err := net.Listen("tcp", fl.Addr().String())
	if err != nil {
		t.Fatalf("listening again on %s after Close: %v", fl.Addr(), err)
	}
	ln.Close()
}

// An accepted Conn's addresses are the peer's, swapped: from the Listener's
// address when it is bound to one, from the kernel when it is bound to all.
func TestAcceptedAddrs(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "0.0.0.0:0"} {
		t.Run(addr, func(t *testing.T) {
			fl := fastListener(t, addr)
			port := fl.Addr().(*net.TCPAddr).Port
			dialed := make(chan net.Conn, 1)
			go func() {
				c, _ := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
				dialed <- c
			}()
			c, err := fl.AcceptConn()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			peer := <-dialed
			if peer == nil {
				t.Fatal("dial failed")
			}
			defer peer.Close()
			if got, want := c.RemoteAddr().String(), peer.LocalAddr().String(); got != want {
				t.Errorf("RemoteAddr %s; want the peer's local address %s", got, want)
			}
			if got, want := c.LocalAddr().String(), peer.RemoteAddr().String(); got != want {
				t.Errorf("LocalAddr %s; want the peer's remote address %s", got, want)
			}
		})
	}
}

// Many connections exchanging small messages at once, in both directions,
// each wait a wakeup from the poller for nearly every message: a wakeup the
// poller lost would leave a connection waiting until its deadline.
func TestManyConnsLoseNoWakeup(t *testing.T) {
	const conns, rounds = 64, 300
	fl := fastListener(t, "127.0.0.1:0")
	var wg sync.WaitGroup
	errs := make(chan error, 2*conns)
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			peer, err := net.Dial("tcp", fl.Addr().String())
			if err != nil {
				errs <- err
				return
			}
			defer peer.Close()
			_ = peer.SetDeadline(time.Now().Add(20 * time.Second))
			b := make([]byte, 8)
			for i := range rounds {
				b[0] = byte(i)
				if _, err := peer.Write(b); err != nil {
					errs <- err
					return
				}
				if _, err := io.ReadFull(peer, b); err != nil || b[0] != byte(i)+1 {
					errs <- errors.Join(errors.New("peer: wrong or no echo"), err)
					return
				}
			}
		}()
	}
	for range conns {
		c, err := fl.AcceptConn()
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			b := make([]byte, 8)
			for range rounds {
				if _, err := io.ReadFull(c, b); err != nil {
					errs <- err
					return
				}
				b[0]++
				if _, err := c.Write(b); err != nil {
					errs <- err
					return
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

// Close ends a Write that waits for the peer to read (its socket buffer
// full), with an error matching net.ErrClosed.
func TestCloseEndsWaitingWrite(t *testing.T) {
	c, _ := pair(t) // the peer never reads
	done := make(chan error, 1)
	go func() {
		big := make([]byte, 64<<20)
		_, err := c.Write(big)
		done <- err
	}()
	untilWatched(t, c.sock.(*pollFD)) // the buffers are full and the Write waits
	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("write cut short by Close: %v; want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Write still waits after Close")
	}
}

// A connection whose calls never wait is never added to the epoll instance
// (no epoll_ctl, as HAProxy spares it too); the first call that must wait
// adds it, and is woken.
func TestSocketWatchedOnlyOnceACallWaits(t *testing.T) {
	c, peer := pair(t)
	pd := c.sock.(*pollFD)
	if _, err := peer.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 7)
	// Wait for the bytes with peeks, which never wait in the poller, so
	// that the read finds them.
	for deadline := time.Now().Add(5 * time.Second); !c.Gone(); {
		if time.Now().After(deadline) {
			t.Fatal("the peer's bytes never arrived")
		}
		runtime.Gosched()
	}
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("response")); err != nil {
		t.Fatal(err)
	}
	if pd.watched.Load() {
		t.Fatal("socket added to epoll although no call waited")
	}
	go func() {
		// Only once the read waits: sent earlier, it could be read at once.
		for deadline := time.Now().Add(5 * time.Second); !pd.watched.Load() && time.Now().Before(deadline); {
			runtime.Gosched()
		}
		peer.Write([]byte("x"))
	}()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(b); err != nil {
		t.Fatalf("read that waits: %v", err)
	}
	if !pd.watched.Load() {
		t.Fatal("a read waited, but the socket is not in the epoll instance")
	}
}

// A direction's token channel is made only when a call first waits; a wake
// before that is kept for the channel, and a take before it drops it, as
// they would with the channel there.
func TestWaiterTokenBeforeItsChannel(t *testing.T) {
	var w waiter
	w.wake()
	select {
	case <-w.tokens():
	default:
		t.Fatal("a wake that came before the channel was made is lost")
	}
	select {
	case <-w.tokens():
		t.Fatal("one wake gave two tokens")
	default:
	}

	var stale waiter
	stale.wake()
	stale.take() // readiness before the attempt: the attempt sees it itself
	select {
	case <-stale.tokens():
		t.Fatal("a token taken before the channel was made is still there")
	default:
	}
}

// Accepted Conns have TCP_NODELAY, as Go's own do: the Listener sets it
// once on the listening socket, which accepted sockets inherit, instead of
// once per connection.
func TestAcceptedConnsHaveNoDelay(t *testing.T) {
	fl := fastListener(t, "127.0.0.1:0")
	for range 3 {
		c, err := net.Dial("tcp", fl.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		sc, err := fl.AcceptConn()
		if err != nil {
			t.Fatal(err)
		}
		defer sc.Close()
		if v := testnet.Sockopt(t, sc, syscall.IPPROTO_TCP, syscall.TCP_NODELAY); v == 0 {
			t.Fatal("accepted connection without TCP_NODELAY")
		}
	}
	if !fl.noDelay {
		t.Fatal("the listening socket did not take TCP_NODELAY: every accept pays a setsockopt")
	}
}

// AcceptNow takes a pending connection without waiting, reports none
// pending as nil and no error, and fails as AcceptConn does once closed.
func TestAcceptNow(t *testing.T) {
	fl := fastListener(t, "127.0.0.1:0")
	if c, err := fl.AcceptNow(); c != nil || err != nil {
		t.Fatalf("AcceptNow with nothing pending: %v, %v; want nil, nil", c, err)
	}
	for range 3 {
		c, err := net.Dial("tcp", fl.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	// A loopback connect returns once the connection is in the accept
	// queue: all three are pending.
	for i := range 3 {
		c, err := fl.AcceptNow()
		if c == nil || err != nil {
			t.Fatalf("AcceptNow of pending connection %d: %v, %v", i, c, err)
		}
		c.Close()
	}
	if c, err := fl.AcceptNow(); c != nil || err != nil {
		t.Fatalf("AcceptNow after taking every pending connection: %v, %v; want nil, nil", c, err)
	}

	// Another accept loop waits in AcceptConn, holding the Listener: a
	// caller of AcceptNow must not wait behind it with the connections it
	// holds already.
	waiting := make(chan error, 1)
	go func() {
		c, err := fl.AcceptConn()
		if err == nil {
			c.Close()
		}
		waiting <- err
	}()
	untilWatched(t, fl.pd)
	now := make(chan *Conn, 1)
	go func() {
		c, _ := fl.AcceptNow()
		now <- c
	}()
	select {
	case c := <-now:
		if c != nil {
			t.Fatal("AcceptNow took a connection with none pending")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("AcceptNow waited while another AcceptConn waited for a connection")
	}
	c, err := net.Dial("tcp", fl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := <-waiting; err != nil {
		t.Fatalf("the waiting AcceptConn: %v", err)
	}

	fl.Close()
	if _, err := fl.AcceptNow(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("AcceptNow after Close: %v; want net.ErrClosed", err)
	}
}

// A wake from before the token channel existed and another that lands
// while the waiter makes it are one token, never a waiter stuck sending
// its own: Close of a Listener whose AcceptConn had just begun to wait
// left the Accept hanging about once in a thousand runs.
func TestWaiterWakesRacingItsChannel(t *testing.T) {
	for range 20000 {
		var w waiter
		w.wake() // before the channel: pending
		go w.wake()
		made := make(chan struct{})
		go func() {
			<-w.tokens()
			close(made)
		}()
		select {
		case <-made:
		case <-time.After(5 * time.Second):
			t.Fatal("the waiter never got its token: stuck making its channel")
		}
	}
}

// A Listener whose socket was duplicated before it closed (proxy.Handoff
// passes a listening socket from one data plane to the other) leaves no
// registration behind in the epoll instance. Left in, it outlived the
// descriptor (a registration lives as long as its socket), and the socket
// taken over, once it got the same descriptor number, could not be
// registered again: "epoll_ctl: file exists".
func TestListenerClosedAfterADupLeavesThePollerClean(t *testing.T) {
	fl := fastListener(t, "127.0.0.1:0")
	go func() { _, _ = fl.AcceptConn() }()
	untilWatched(t, fl.pd) // in the epoll instance
	dup, err := fl.Socket().File()
	if err != nil {
		t.Fatal(err)
	}
	defer dup.Close()
	fd, epfd := fl.pd.fd, int(fl.pd.epfd)
	if err := fl.Close(); err != nil {
		t.Fatal(err)
	}
	// The socket again under the number the closed descriptor freed, as
	// the next descriptor of a busy process gets it.
	if err := syscall.Dup3(int(dup.Fd()), fd, syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		t.Fatalf("registering the socket taken over: %v; the closed Listener's registration is still there", err)
	}
	_ = syscall.EpollCtl(epfd, syscall.EPOLL_CTL_DEL, fd, nil)
}
