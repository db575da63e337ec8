package fastconn

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// Dial connects to addr with raw system calls and returns the connection in
// fastconn's poller (poll.go), as net.Dialer would return one in the
// runtime's, with fewer than half its allocations (BenchmarkDial: 14
// against 32) and no plain system call: a proxy that opens one backend
// connection per client connection pays it on every request of a
// one-request-per-connection protocol.
//
// What net.Dialer does that Dial does not: resolve a name, bind a local
// address, read the local and peer address back (two system calls, kept
// for logs Dial's callers rarely write), and, because a non-blocking
// connect returns EINPROGRESS even to a listener on the same host, park the
// goroutine until the poller says the socket is writable, then ask SO_ERROR.
// Dial asks connect(2) again instead: on Linux a second call returns 0 once
// the handshake is done, which on loopback it already is, the error of a
// failed handshake, or EALREADY while it is in flight; only then does Dial
// wait for the poller, until timeout or ctx ends. TCP keep-alive probes are
// off, as with net.Dialer{KeepAlive: -1}; TCP_NODELAY is on, as Go sets it.
func Dial(ctx context.Context, addr netip.AddrPort, timeout time.Duration) (*Conn, error) {
	c, _, err := DialSend(ctx, addr, timeout, nil)
	return c, err
}

// DialSend is Dial for a connection whose first bytes are in hand already,
// as a TCP proxy's are when its client spoke before the backend was
// chosen. They go out right behind the connect, in place of Dial's second
// connect: a send succeeds once the handshake is done (on loopback, as soon
// as connect returns) and fails with the handshake's error, so it answers
// the same question. A backend that the connect woke then finds the bytes
// with its first read, where it would otherwise find nothing and sleep again
// until they came: behind pacer's TCP plane with one request per
// connection, nginx slept 0.24 times per connection instead of 0.34
// (HAProxy, which sends what it has read at connect time too: 0.26), and
// pacer served 1.02x the connections at the same CPU per connection
// (bench/RESULTS.md).
//
// It returns how many bytes of first went out: all of them, or fewer when
// the handshake was still in flight or the socket's buffer filled, and the
// caller writes the rest.
func DialSend(ctx context.Context, addr netip.AddrPort, timeout time.Duration, first []byte) (*Conn, int, error) {
	c, sent, pending, err := DialStart(ctx, addr, first)
	if err == nil && pending {
		if err = c.FinishDial(ctx, timeout); err != nil {
			c.Close()
			return nil, 0, err
		}
	}
	return c, sent, err
}

// DialStart is DialSend up to where it would wait: pending says that the
// handshake is still in flight, and FinishDial waits for it. A caller that
// must not wait (a loop accepting clients) can so hand only the dials that
// need it to a goroutine that may.
func DialStart(ctx context.Context, addr netip.AddrPort, first []byte) (c *Conn, sent int, pending bool, err error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, false, dialError(addr, "connect", err)
	}
	sa, salen, family := rawSockaddr(addr)
	fd, err := openSocket(family)
	if err != nil {
		return nil, 0, false, dialError(addr, "socket", err)
	}
	_ = setNoDelay(fd)
	errno := connect(fd, sa, salen)
	switch {
	case errno != 0 && errno != syscall.EINPROGRESS:
	case len(first) > 0:
		// Sent right behind the connect: see the doc comment.
		sent, errno = sendAll(uintptr(fd), first, 0)
		switch {
		case errno == syscall.EAGAIN && sent == 0:
			// The handshake is still in flight.
			errno = connectAgain(fd, sa, salen, &pending)
		case sent > 0:
			// Connected. A buffer that filled is the caller's to wait
			// on; an error after bytes went out is the caller's to meet
			// when it writes the rest, as a broken connection, not a
			// failed dial: the backend may have read them.
			errno = 0
		}
	case errno == syscall.EINPROGRESS:
		// Asked once more before the poller: see Dial's doc comment.
		errno = connectAgain(fd, sa, salen, &pending)
	}
	if errno != 0 {
		closeFD(fd)
		return nil, 0, false, dialError(addr, "connect", errno)
	}
	c, err = newPolledConn(fd)
	if err != nil {
		return nil, 0, false, dialError(addr, "connect", err)
	}
	c.remote = addr
	if pending {
		c.dialSA, c.dialSALen = sa, salen
	}
	if sent > 0 {
		c.wrote.Store(true) // for the batching yield, as Write would
	}
	return c, sent, pending, nil
}

// FinishDial waits, until timeout or ctx ends, for the handshake of a
// Conn that DialStart returned pending. The caller closes c if it fails.
func (c *Conn) FinishDial(ctx context.Context, timeout time.Duration) error {
	if c.dialSA == nil {
		return nil
	}
	if err := c.awaitConnect(ctx, c.dialSA, c.dialSALen, timeout); err != nil {
		return dialError(c.remote, "connect", err)
	}
	c.dialSA = nil
	return nil
}

// connectAgain asks connect(2) about a connect that returned EINPROGRESS:
// 0 once the handshake is done, the handshake's error, or 0 with inFlight
// set while it is still going on.
func connectAgain(fd int, sa unsafe.Pointer, salen uintptr, inFlight *bool) syscall.Errno {
	switch errno := connect(fd, sa, salen); errno {
	case 0, syscall.EISCONN:
		return 0
	case syscall.EALREADY, syscall.EINPROGRESS, syscall.EINTR:
		*inFlight = true
		return 0
	default:
		return errno
	}
}

// awaitConnect waits for a connect in flight to finish, until timeout or
// ctx ends.
func (c *Conn) awaitConnect(ctx context.Context, sa unsafe.Pointer, salen uintptr, timeout time.Duration) error {
	if timeout > 0 {
		_ = c.sock.SetWriteDeadline(time.Now().Add(timeout))
	}
	var stop func() bool
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() { _ = c.sock.SetWriteDeadline(aLongTimeAgo) })
	}
	var result syscall.Errno
	err := c.rc.Write(func(fd uintptr) bool {
		switch result = connect(int(fd), sa, salen); result {
		case syscall.EALREADY, syscall.EINPROGRESS, syscall.EINTR:
			return false
		case syscall.EISCONN:
			result = 0
		}
		return true
	})
	if stop != nil && !stop() {
		// ctx ended as the connect did: its past deadline may land after
		// the clearing below, and leave every later write on the
		// connection failing at once. The dial counts as cancelled.
		return ctx.Err()
	}
	switch {
	case err != nil:
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err // os.ErrDeadlineExceeded: a timeout, as net.Error says
	case result != 0:
		return result
	}
	return c.sock.SetWriteDeadline(time.Time{})
}

// aLongTimeAgo is a deadline that has passed: it wakes a waiting call.
var aLongTimeAgo = time.Unix(1, 0)

// dialError shapes a failed Dial as net.Dialer's errors are shaped, so that
// callers can test errors.Is(err, syscall.ECONNREFUSED) and net.Error's
// Timeout.
func dialError(addr netip.AddrPort, call string, err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		err = os.NewSyscallError(call, errno)
	}
	return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(addr), Err: err}
}

// openSocket opens a non-blocking, close-on-exec TCP socket.
func openSocket(family int) (int, error) {
	for {
		fd, _, errno := syscall.RawSyscall(syscall.SYS_SOCKET, uintptr(family),
			syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, syscall.IPPROTO_TCP)
		switch errno {
		case 0:
			return int(fd), nil
		case syscall.EINTR:
			continue
		}
		return -1, errno
	}
}

// connect is connect(2) on a raw socket address. Raw for the reason
// Conn's reads are (see the package comment): on a non-blocking socket it
// never blocks, though on loopback it runs the whole handshake.
func connect(fd int, sa unsafe.Pointer, salen uintptr) syscall.Errno {
	_, _, errno := syscall.RawSyscall(syscall.SYS_CONNECT, uintptr(fd), uintptr(sa), salen)
	return errno
}

// rawSockaddr returns addr as a kernel socket address. It allocates one
// small object (the address must outlive a wait in the poller), where the
// syscall package's Sockaddr values cost two.
func rawSockaddr(addr netip.AddrPort) (unsafe.Pointer, uintptr, int) {
	port := addr.Port()
	if ip := addr.Addr().Unmap(); ip.Is4() {
		sa := &syscall.RawSockaddrInet4{Family: syscall.AF_INET, Addr: ip.As4()}
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		p[0], p[1] = byte(port>>8), byte(port)
		return unsafe.Pointer(sa), syscall.SizeofSockaddrInet4, syscall.AF_INET
	}
	ip := addr.Addr()
	sa := &syscall.RawSockaddrInet6{Family: syscall.AF_INET6, Addr: ip.As16()}
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(port>>8), byte(port)
	if z := ip.Zone(); z != "" {
		if ifi, err := net.InterfaceByName(z); err == nil {
			sa.Scope_id = uint32(ifi.Index)
		}
	}
	return unsafe.Pointer(sa), syscall.SizeofSockaddrInet6, syscall.AF_INET6
}

// sockaddrToTCP converts what getsockname returned.
func sockaddrToTCP(sa syscall.Sockaddr) net.Addr {
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		return &net.TCPAddr{IP: sa.Addr[:], Port: sa.Port}
	case *syscall.SockaddrInet6:
		return &net.TCPAddr{IP: sa.Addr[:], Port: sa.Port}
	}
	return nil
}
