package fastconn

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"unsafe"
)

// Listen opens a listener for a proxy's clients on addr, as HAProxy and
// nginx open theirs:
//
//   - Plain TCP. Since Go 1.24 a Linux listener is MPTCP unless told
//     otherwise; a client that does not speak MPTCP (nearly all of them)
//     then comes in through MPTCP's fallback, and TCP options set on the
//     listening socket for its connections to inherit never reach them:
//     with TCP_QUICKACK off on an MPTCP listener, an HTTP listener still
//     acknowledged each request on its own, one segment per request more
//     than HAProxy's (tcpdump, bench/RESULTS.md).
//   - No TCP keep-alive probes. Go turns them on by default for every
//     accepted socket, at four setsockopt calls each, which for a
//     one-request connection were more system calls than the bytes it
//     carries; HAProxy does not probe either unless told to (option
//     tcpka). The proxies close a client that went silent themselves.
func Listen(ctx context.Context, addr string) (*net.TCPListener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return ln.(*net.TCPListener), nil
}

// Listener accepts connections from a *net.TCPListener as Conns in
// fastconn's poller, with raw system calls from accept4 on (see poll.go):
// net's Accept makes three plain ones per connection (accept4, setsockopt of
// TCP_NODELAY, and close(2) in the end), each of which can wake sysmon.
//
// The listening socket stays the TCPListener's; the Listener waits for it
// in fastconn's poller, since a TCPListener's RawConn does not wait, and
// accepts under the TCPListener's Control, so that the descriptor cannot be
// closed under a call. Close the Listener, not the TCPListener: closing the
// TCPListener alone leaves an Accept in progress waiting until the next
// connection attempt.
type Listener struct {
	ln *net.TCPListener
	rc syscall.RawConn // ln's: Control only
	// local is every accepted Conn's local address when ln is bound to one
	// address (not 0.0.0.0 or ::), nil otherwise.
	local *net.TCPAddr
	pd    *pollFD // ln's descriptor in fastconn's poller, borrowed
	// noDelay says that ln has TCP_NODELAY, which accepted sockets inherit.
	noDelay bool

	mu sync.Mutex // one Accept at a time: the state below is its
	// The callbacks, made once (a method value made per call allocates).
	onReady   func(fd uintptr) bool
	onControl func(fd uintptr)
	fd        int
	errno     syscall.Errno
	err       error // from Control: ln is closed
	sa        syscall.RawSockaddrAny
	salen     uint32
}

// NewListener wraps ln. It fails if ln is closed or the poller cannot take
// its descriptor.
func NewListener(ln *net.TCPListener) (*Listener, error) {
	rc, err := ln.SyscallConn()
	if err != nil {
		return nil, err
	}
	l := &Listener{ln: ln, rc: rc}
	if a, ok := ln.Addr().(*net.TCPAddr); ok && !a.IP.IsUnspecified() {
		l.local = a
	}
	l.onReady, l.onControl = l.ready, l.accept
	var regErr error
	if err := rc.Control(func(fd uintptr) {
		// Accepted sockets inherit TCP_NODELAY from the listening one:
		// set once here, it saves a setsockopt per connection.
		l.noDelay = setNoDelay(int(fd)) == 0
		l.pd, regErr = registerBorrowed(int(fd))
	}); err != nil {
		return nil, err
	}
	if regErr != nil {
		return nil, &net.OpError{Op: "listen", Net: "tcp", Addr: ln.Addr(), Err: regErr}
	}
	return l, nil
}

// Accept is AcceptConn for net.Listener.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.AcceptConn()
	if err != nil {
		return nil, err
	}
	return c, nil
}

// AcceptConn waits for the next connection. Its errors are shaped as net's
// are: one that matches net.ErrClosed once the listener is closed, and the
// system call's errno otherwise (EMFILE when out of descriptors).
// ECONNABORTED, a connection reset before it was accepted, is skipped.
// TCP_NODELAY is on, as Dial sets it, and keep-alive probes are off.
func (l *Listener) AcceptConn() (*Conn, error) { return l.acceptConn(true) }

// AcceptNow is AcceptConn without the wait: nil and no error when no
// connection is pending, or when another AcceptConn is waiting for one. A
// loop that takes every pending connection before it serves any, as
// HAProxy's event loop does, calls it after AcceptConn.
func (l *Listener) AcceptNow() (*Conn, error) { return l.acceptConn(false) }

func (l *Listener) acceptConn(wait bool) (*Conn, error) {
	switch {
	case wait:
		l.mu.Lock()
	case !l.mu.TryLock():
		// Another AcceptConn waits in the poller holding the lock, and
		// takes what is pending; waiting for the lock could hold this
		// caller's connections until the next one comes.
		return nil, nil
	}
	defer l.mu.Unlock()
	l.fd, l.errno, l.err = -1, 0, nil
	var err error
	switch {
	case wait:
		err = l.pd.Read(l.onReady)
	case !l.pd.incref():
		err = net.ErrClosed
	default:
		accepted := l.ready(0)
		l.pd.decref()
		if !accepted {
			return nil, nil
		}
	}
	switch {
	case err == nil && l.err != nil:
		err = l.err
	case err == nil && l.errno != 0:
		err = os.NewSyscallError("accept4", l.errno)
	}
	if err != nil {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.ln.Addr(), Err: err}
	}
	fd := l.fd
	if !l.noDelay {
		_ = setNoDelay(fd)
	}
	remote := sockaddrToAddrPort(&l.sa)
	c, err := newPolledConn(fd)
	if err != nil {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.ln.Addr(), Err: err}
	}
	c.remote = remote
	if l.local != nil {
		c.laddr.Store(l.local)
	}
	return c, nil
}

// ready is AcceptConn's callback in the poller: one accept under ln's
// Control, and false (wait) if there was nothing to accept.
func (l *Listener) ready(uintptr) bool {
	l.errno = 0
	if err := l.rc.Control(l.onControl); err != nil {
		l.err = err
		return true
	}
	return l.errno != syscall.EAGAIN
}

// accept is accept4 on ln's descriptor.
func (l *Listener) accept(lfd uintptr) {
	for {
		l.salen = uint32(unsafe.Sizeof(l.sa))
		fd, _, errno := syscall.RawSyscall6(syscall.SYS_ACCEPT4, lfd, uintptr(unsafe.Pointer(&l.sa)),
			uintptr(unsafe.Pointer(&l.salen)), syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0, 0)
		switch errno {
		case 0:
			l.fd = int(fd)
		case syscall.EINTR, syscall.ECONNABORTED:
			continue
		}
		l.errno = errno
		return
	}
}

// Close closes the listening socket; an Accept in progress returns an error
// that matches net.ErrClosed. Accepted Conns stay open.
func (l *Listener) Close() error {
	_ = l.pd.Close() // wakes an Accept; the descriptor is ln's to close
	<-l.pd.gone      // out of the poller, the Accept gone: ln may close it
	return l.ln.Close()
}

// Addr returns the listening address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Socket returns the TCPListener l accepts from, which Close closes.
func (l *Listener) Socket() *net.TCPListener { return l.ln }

// SyscallConn returns the listening socket's raw connection, for socket
// options; its Read and Write do not wait.
func (l *Listener) SyscallConn() (syscall.RawConn, error) { return l.ln.SyscallConn() }

// setNoDelay turns on TCP_NODELAY, with a raw call. Failing to only costs
// latency, so callers on a connection ignore the error, as net does.
func setNoDelay(fd int) syscall.Errno {
	one := int32(1)
	_, _, errno := syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), syscall.IPPROTO_TCP, syscall.TCP_NODELAY,
		uintptr(unsafe.Pointer(&one)), 4, 0)
	return errno
}

// sockaddrToAddrPort converts a kernel socket address accept4 filled in.
func sockaddrToAddrPort(sa *syscall.RawSockaddrAny) netip.AddrPort {
	switch sa.Addr.Family {
	case syscall.AF_INET:
		sa4 := (*syscall.RawSockaddrInet4)(unsafe.Pointer(sa))
		p := (*[2]byte)(unsafe.Pointer(&sa4.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), uint16(p[0])<<8|uint16(p[1]))
	case syscall.AF_INET6:
		sa6 := (*syscall.RawSockaddrInet6)(unsafe.Pointer(sa))
		p := (*[2]byte)(unsafe.Pointer(&sa6.Port))
		ip := netip.AddrFrom16(sa6.Addr)
		if sa6.Scope_id != 0 {
			ip = ip.WithZone(zoneName(sa6.Scope_id))
		}
		return netip.AddrPortFrom(ip, uint16(p[0])<<8|uint16(p[1]))
	}
	return netip.AddrPort{}
}

// zoneName names an IPv6 scope as net does: the interface's name, or its
// index when it has none.
func zoneName(index uint32) string {
	if ifi, err := net.InterfaceByIndex(int(index)); err == nil {
		return ifi.Name
	}
	return strconv.FormatUint(uint64(index), 10)
}
