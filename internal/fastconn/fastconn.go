// Package fastconn wraps a *net.TCPConn for a proxy's data path: reads and
// writes that keep the Go scheduler's P, and that let other connections'
// work batch up between a write and the read that waits for its answer.
//
// Both matter when the proxy shares its cores with the client and the
// backend, as a sidecar does, and both were measured against HAProxy with
// one thread (bench/http, GOMAXPROCS=1, three processes on two cores):
//
//   - Raw system calls. A plain Read or Write tells the scheduler it enters
//     a system call. Each write wakes a peer, the kernel often preempts the
//     proxy's thread on its way out, and after 20 µs "in a system call"
//     sysmon hands the P to another thread: two thread switches for nothing.
//     A read or write on a non-blocking socket never blocks, so
//     syscall.RawSyscall is enough and the P stays. TCP keep-alive through
//     the raw copy loop: 0.77x HAProxy with plain calls, 1.0x raw.
//
//   - Batching. After writing a request to a backend (or a response to a
//     client), the very next read on that connection almost always finds
//     nothing and parks. Reading it only after the other runnable
//     connections have had their turn lets them send their own requests
//     first: the backend then finds several requests per wakeup instead of
//     sleeping and being woken for each (nginx behind pacer slept 53k times
//     in 5 s, 25k with the yield, against HAProxy's 12k), and the read
//     usually finds its answer waiting. HTTP keep-alive went from 0.72x to
//     about 1.0x HAProxy. The yield happens at most once per connection
//     between two wakeups from the poller: the scheduler polls the network
//     only when nothing else is runnable, and connections that always yield
//     would keep something runnable and starve everyone still waiting in
//     the poller (p99 over 30 ms in that version).
//
//   - Waiting for an answer without a read. A backend answers only when
//     asked, so the write of a request can wait in the poller for the
//     answer itself (ExpectReply), and the read after it never finds
//     nothing: HTTP keep-alive made 2.05 reads per request instead of 2.55
//     (HAProxy 2.05), 0.96x to 1.0x HAProxy.
//
//   - A poller of its own. Connections that Dial opens and a Listener
//     accepts wait in fastconn's epoll instance (poll.go), whose one
//     descriptor waits in the runtime's poller, so that every call on them
//     from accept4 to close(2) is raw: through net and internal/poll, five
//     per connection were plain calls, each able to wake a sleeping sysmon,
//     and a one-request connection also paid an epoll_ctl that a socket
//     whose calls never wait does not need. HTTP with Connection: close
//     went from 0.80x to 0.95x HAProxy, 76 to 69 µs of CPU per connection
//     (HAProxy 62). It also wakes goroutines in about the order epoll
//     reports their sockets ready (the scheduler runs the last one woken
//     first), where the runtime's poller hands each batch to
//     the scheduler newest first (netpoll pushes onto a list): with the
//     HTTP plane's pooled backends in the runtime's poller, the answer that
//     came first was forwarded last, and keep-alive latency spread evenly
//     from half the mean to one and a half times it (p99 1.36x HAProxy's;
//     in fastconn's poller 1.12x, at the same CPU per request).
//
//   - Copying in the poller. While a TCP proxy's copy loop waits in
//     RelayTo, fastconn's poller goroutine forwards each small message
//     itself, as HAProxy's event loop does, instead of waking the loop for
//     it (relay.go): TCP keep-alive went from 1.07x to 0.93x HAProxy's CPU
//     per request. RelayBoth does it for both directions of a connection
//     while one goroutine waits, and the poller passes the first FIN on
//     itself (pair.go): a one-request connection wakes that goroutine
//     once, where a goroutine per direction made four handoffs.
//     RelayBothFunc does it with no goroutine waiting, and the poller ends
//     the connection itself: with one request per connection through the
//     TCP plane, 4% less CPU per connection and a 10% lower p99 than
//     RelayBoth on a goroutine of its own (bench/RESULTS.md).
//
//   - Serving in the poller. A Conn whose reader waits in Read may have an
//     Exchanger, which the poller offers what it reads before the reader
//     sees it (exchange.go): an HTTP server's request that can be served
//     without waiting is then forwarded, and its answer written back, by
//     the poller's goroutine, as HAProxy's event loop does, and the
//     reader, fasthttp's goroutine, never wakes. HTTP keep-alive through
//     pacer went from 1.05-1.10x to 1.13-1.19x HAProxy's rate, and its
//     p99 (pooled over six rounds) from 0.98-1.23x to 0.92-1.09x
//     HAProxy's, in five runs with both builds (bench/RESULTS.md).
//
//   - Batching system calls. Where the CPU has no PCID, page-table
//     isolation makes every system call flush the TLB on its way in and
//     out: 1.1 µs for a raw getpid on the benchmark machine, more than
//     many calls do. For the sockets one epoll_pwait reports, the poller
//     makes the relays' and exchanges' reads, and reads ahead for watched
//     answers (readahead.go), in one io_uring_enter, and the relays' writes
//     in another (uring.go, batch.go), each call still complete when the
//     enter returns. CPU per request, A/B against the build before it in
//     four runs: TCP keep-alive 0.71-0.82x, and 1.04-1.20x HAProxy's rate
//     where it had been 0.95x; one request per connection 0.86-0.91x (TCP)
//     and 0.96x (HTTP); HTTP keep-alive 0.81x and 1.02x, within the
//     scatter, since its two sends per request are still one call each
//     (bench/RESULTS.md).
//
//   - Fewer segments. A connection's last bytes go out with its FIN, in one
//     segment, as HAProxy sends them (MSG_MORE, then shutdown): the pair
//     relay does it when the FIN came behind the bytes it relays, and
//     LastWrites for a server that answers and closes. The peer is woken
//     once and acknowledges both at once; with one request per connection,
//     CPU per connection fell by 2% through the TCP plane and 7% through
//     the HTTP plane (bench/RESULTS.md). Listen opens plain TCP (not Go's
//     default MPTCP), whose accepted sockets take the listener's options.
//
// Splice moves bulk data between two Conns with raw splice(2) calls, for
// the same reason as the first point. Dial opens a connection with raw
// calls too, and without waiting in the poller for a connect that loopback
// finished already (see Dial). A *net.TCPConn wrapped by New stays in the
// runtime's poller. Deadlines reach either poller lazily (deadline.go),
// since a keep-alive server sets several per request that almost never
// fire.
package fastconn

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// pollWakeups counts reads that resumed after waiting in the poller, by any
// connection: the batching yield is allowed once per connection per change
// of this count.
var pollWakeups atomic.Uint64

// Conn is a TCP connection whose Read and Write use raw system calls: a
// *net.TCPConn wrapped by New, or a socket Dial or a Listener opened. As on any
// net.Conn, Read may run concurrently with Write; unlike it, two Reads (or
// two Writes) must not run concurrently: each direction keeps its state in
// the Conn so that a call allocates nothing. A Conn from Dial or a Listener
// must be closed: its descriptor has no finalizer to close it.
type Conn struct {
	// sock is what owns the descriptor and its place in a poller: the
	// *net.TCPConn given to New (also in tc), or the pollFD of a Conn that
	// Dial or a Listener made (also in rc).
	sock socket
	tc   *net.TCPConn
	rc   syscall.RawConn
	pd   *pollFD // sock, for a Conn in fastconn's poller; nil otherwise
	pfd  pollFD  // what pd points to, for a Conn that Dial or a Listener made
	// remote is the peer Dial connected to or a Listener accepted from;
	// New's conns ask tc. raddr is it as a net.Addr, made on first use.
	remote netip.AddrPort
	raddr  atomic.Pointer[net.TCPAddr]
	// laddr is the local address, once known.
	laddr atomic.Pointer[net.TCPAddr]
	// dialSA is the address of a connect DialStart left in flight, for
	// FinishDial.
	dialSA    unsafe.Pointer
	dialSALen uintptr
	// closed is set by Close, so that errors of calls cut short by it read
	// as net.ErrClosed whatever sock is (an *os.File says "use of closed
	// file" instead).
	closed atomic.Bool
	// rd and wd are the read and write deadlines, armed lazily (deadline.go).
	rd, wd deadline

	// The RawConn callbacks, one per direction, made once (a method value
	// made per call allocates), and only for a Conn outside fastconn's
	// poller: one in it waits with waitRead and waitWrite. Each does what
	// the call in progress set up in its direction's state (a read, a
	// pooled read, a splice).
	onRead, onWrite func(fd uintptr) bool

	// Read state.
	rbuf  []byte
	rbp   *[]byte // ReadPooled: the pooled buffer rbuf is, while held
	rpool *Pool
	rn    int
	rerr  syscall.Errno
	seen  uint64 // pollWakeups when this connection last yielded
	sp    *pipe  // Splice: the pipe being filled
	// RelayTo's state (relay.go): rdst is set while it runs; the poller
	// writes rmoved, and rbp, rn and rerr as its result, while rstate is
	// relayRunning; rgot says that the reader took a result.
	rstate atomic.Int32
	rdst   *Conn
	rmoved int64
	rgot   bool
	waited bool // this read returned to the poller at least once (beside rgot: no padding of its own)
	// rpend is readiness the poller saw while a pair's owner ran the relay
	// (pump): the run reads again before it arms the relay, since the
	// socket, edge-triggered, reports nothing more. It is to relays what
	// xpend is to exchanges (a Conn has an Exchanger or relays, not both).
	rpend atomic.Bool
	// The Exchanger of a Conn whose Reads serve in the poller
	// (exchange.go), set while no Read runs; xpend keeps readiness that
	// came while an exchange ran. xfin is set for good once the poller
	// saw the peer's FIN (or an error): a read that returns bytes does not
	// report a FIN behind them, and no edge comes for it again, so every
	// exchange's end must read until the read reports it. rwatch is
	// WatchReply's watcher.
	xch      Exchanger
	xpend    atomic.Bool
	xfin     atomic.Bool
	xcalling atomic.Bool // the poller is in a call of xch.Exchange
	rwatch   ReadWatcher
	// ahead is what the poller read for a ReadAheadWatcher's next TryRead
	// (readahead.go), until a TryRead or Read takes it.
	ahead *readAhead
	// RelayBoth's state (pair.go): rwake is the waiter a stopping relay
	// wakes (the owner's, for both directions); rpair marks a relay of a
	// pair, which passes the first FIN on itself; reof is set once this
	// socket's peer sent its FIN to a pair's relay, for the Conn's life.
	// ppeer, ppumped and perr are the owner's (the first Conn's) while it waits.
	rwake   *waiter
	rpair   bool
	reof    atomic.Bool
	ppeer   *Conn
	ppumped bool
	perr    error
	pdone   PairDone // RelayBothFunc's, while no goroutine waits

	// Write state.
	wbuf  []byte
	wn    int
	werr  syscall.Errno
	wp    *pipe       // Splice: the pipe being emptied
	wrote atomic.Bool // a write happened since the last read
	// splicedAt is when a Splice last moved bytes out to this Conn (Mono,
	// in ns): one Splice may take long to empty its pipe into a slow
	// reader, and its caller's idle check must see that bytes still move.
	splicedAt atomic.Int64
	// expect is ExpectReply's request for the next Write; await is that
	// Write's progress: 1 while its bytes go out, 2 once it waits.
	expect bool
	await  uint8
	// last is set by LastWrites: writes hold their bytes for the FIN
	// that Close sends. Atomic: Close may come from another goroutine.
	last atomic.Bool
}

// socket is the part of *net.TCPConn, *os.File and *pollFD that Conn
// delegates to.
type socket interface {
	Close() error
	SetDeadline(t time.Time) error
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
}

// New wraps tc. It fails only if tc has no file descriptor (closed).
func New(tc *net.TCPConn) (*Conn, error) {
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, err
	}
	return newConn(tc, tc, rc), nil
}

func newConn(sock socket, tc *net.TCPConn, rc syscall.RawConn) *Conn {
	c := &Conn{sock: sock, tc: tc, rc: rc}
	c.rd.sock, c.rd.read = sock, true
	c.wd.sock = sock
	c.onRead, c.onWrite = c.readReady, c.writeReady
	return c
}

// initPolled sets up a Conn on pd, a socket in fastconn's poller
// (newPolledConn).
func (c *Conn) initPolled(pd *pollFD) {
	c.sock, c.rc, c.pd = pd, pd, pd
	c.rd.sock, c.rd.read = pd, true
	c.wd.sock = pd
}

// connReader and connWriter are a Conn's directions as the readiness its
// poller's wait calls: a conversion, where a method value would allocate.
type (
	connReader Conn
	connWriter Conn
)

func (r *connReader) ready(fd uintptr) bool { return (*Conn)(r).readReady(fd) }
func (w *connWriter) ready(fd uintptr) bool { return (*Conn)(w).writeReady(fd) }

// waitRead runs readReady until it returns true, waiting for the socket to
// be readable each time it returns false.
func (c *Conn) waitRead() error {
	if c.pd != nil {
		return c.pd.wait(&c.pd.r, (*connReader)(c))
	}
	return c.rc.Read(c.onRead)
}

// waitWrite is waitRead for writeReady and writability.
func (c *Conn) waitWrite() error {
	if c.pd != nil {
		return c.pd.wait(&c.pd.w, (*connWriter)(c))
	}
	return c.rc.Write(c.onWrite)
}

// readReady is the read direction's RawConn callback: false sends the
// goroutine to the poller until the socket is readable.
func (c *Conn) readReady(fd uintptr) bool {
	switch {
	case c.await != 0:
		return c.awaitReply(fd)
	case c.sp != nil:
		return c.spliceInRaw(fd)
	case c.rdst != nil:
		return c.relayRead(fd)
	case c.rpool != nil:
		return c.readPooled(fd)
	case c.xch != nil:
		return c.exchangeRead(fd)
	}
	return c.read(fd)
}

// writeReady is the write direction's RawConn callback: false waits until
// the socket is writable.
func (c *Conn) writeReady(fd uintptr) bool {
	if c.wp != nil {
		return c.spliceOutRaw(fd)
	}
	return c.write(fd)
}

// SyscallConn returns the raw connection c made for its own calls, rather
// than a new one as the TCPConn's would.
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.rc, nil }

// Gone reports whether the peer closed or reset the connection, or sent
// bytes nobody asked for, with one non-blocking peek (MSG_PEEK): the check
// a pooled connection gets before it carries a request.
func (c *Conn) Gone() bool {
	data, closed := c.Pending()
	return data || closed
}

// Pending looks at c without waiting or consuming anything, with one
// non-blocking peek: data is set if bytes wait to be read, closed if the
// peer closed or reset the connection (or c is closed).
func (c *Conn) Pending() (data, closed bool) {
	c.rd.begin()
	defer c.rd.end()
	err := c.rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		data = n > 0
		closed = (n == 0 && err == nil) || (err != nil && !errors.Is(err, syscall.EAGAIN))
		return true
	})
	return data, closed || err != nil
}

// Close closes the connection; Reads and Writes in progress end with an
// error that matches net.ErrClosed.
func (c *Conn) Close() error {
	if c.last.Load() {
		_ = c.CloseWrite() // sends the held bytes and the FIN; see LastWrites
	}
	c.closed.Store(true)
	return c.mapClosed("close", c.sock.Close())
}

// LastWrites says that the writes from now on are c's last, and that Close
// follows them at once: a server answering a client that asked for the
// connection to be closed (HTTP's Connection: close). Each write then
// holds what would make a segment short of full (MSG_MORE), and Close
// passes the FIN on first (shutdown), which sends the held bytes with it:
// an answer and its FIN in one segment where they went as two, which the
// client took in and acknowledged one by one. The shutdown also means the
// answer is out before the close, which resets a connection that has
// bytes left unread, never instead of it.
//
// Never for writes that may wait on anything but c's own socket (a body
// streamed from elsewhere): held bytes go out only with the next write or
// the close.
func (c *Conn) LastWrites() { c.last.Store(true) }

// CloseWrite shuts down the writing side (a FIN to the peer).
func (c *Conn) CloseWrite() error {
	return c.control("shutdown", func(fd int) error {
		// Raw, as every per-connection call on the data path is (poll.go).
		if errno := shutdownWrite(fd); errno != 0 {
			return errno
		}
		return nil
	})
}

// shutdownWrite shuts fd down for writing with a raw call: the FIN.
func shutdownWrite(fd int) syscall.Errno {
	_, _, errno := syscall.RawSyscall(syscall.SYS_SHUTDOWN, uintptr(fd), syscall.SHUT_WR, 0)
	return errno
}

// SetLinger sets SO_LINGER as net.TCPConn.SetLinger does: 0 makes Close
// reset the connection instead of sending a FIN.
func (c *Conn) SetLinger(sec int) error {
	l := syscall.Linger{Onoff: 1, Linger: int32(sec)}
	if sec < 0 {
		l = syscall.Linger{}
	}
	return c.control("setsockopt", func(fd int) error { return syscall.SetsockoptLinger(fd, syscall.SOL_SOCKET, syscall.SO_LINGER, &l) })
}

// control runs op on c's descriptor, while the descriptor cannot be closed
// under it.
func (c *Conn) control(name string, op func(fd int) error) error {
	var opErr error
	if pd := c.pd; pd != nil {
		// Without a RawConn callback, which would allocate twice (itself
		// and opErr) on every CloseWrite.
		if !pd.incref() {
			return c.mapClosed(name, net.ErrClosed)
		}
		opErr = op(pd.fd)
		pd.decref()
	} else {
		var err error
		if opErr, err = c.controlRaw(op); err != nil {
			return c.mapClosed(name, err)
		}
	}
	if opErr != nil {
		return &net.OpError{Op: name, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError(name, opErr)}
	}
	return nil
}

// controlRaw is control through the RawConn: op's error, and Control's.
func (c *Conn) controlRaw(op func(fd int) error) (opErr, err error) {
	err = c.rc.Control(func(fd uintptr) { opErr = op(int(fd)) })
	return opErr, err
}

// SetDeadline sets the read and write deadlines, as on a net.Conn but
// lazily: see deadline.go for the (small) difference.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline, as on a net.Conn but lazily: see
// deadline.go.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if c.closed.Load() {
		return c.mapClosed("set read deadline", net.ErrClosed)
	}
	c.rd.store(t)
	return nil
}

// SetWriteDeadline sets the write deadline, as on a net.Conn but lazily: see
// deadline.go.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if c.closed.Load() {
		return c.mapClosed("set write deadline", net.ErrClosed)
	}
	c.wd.store(t)
	return nil
}

// LocalAddr returns the local address: for a Conn from a Listener bound to
// one address, the listener's; otherwise what the kernel says on the first
// call (a Conn from Dial asks only when logs or errors want it).
func (c *Conn) LocalAddr() net.Addr {
	if c.tc != nil {
		return c.tc.LocalAddr()
	}
	if a := c.laddr.Load(); a != nil {
		return a
	}
	var sa syscall.Sockaddr
	if c.rc.Control(func(fd uintptr) { sa, _ = syscall.Getsockname(int(fd)) }) != nil {
		return nil
	}
	a, ok := sockaddrToTCP(sa).(*net.TCPAddr)
	if !ok {
		return nil
	}
	c.laddr.Store(a)
	return a
}

// RemoteAddr returns the peer's address.
func (c *Conn) RemoteAddr() net.Addr {
	if c.tc != nil {
		return c.tc.RemoteAddr()
	}
	if a := c.raddr.Load(); a != nil {
		return a
	}
	a := net.TCPAddrFromAddrPort(c.remote)
	c.raddr.Store(a)
	return a
}

// ReadFrom lets io.Copy into a Conn from New use the TCPConn's own splice
// and sendfile. A Conn from Dial or a Listener splices from a Conn or a
// *net.TCPConn (Splice) and copies from anything else.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	if c.tc != nil {
		c.wd.flush()
		c.wd.busy.Store(true)
		defer c.wd.end()
		return c.tc.ReadFrom(r)
	}
	if src := asConn(r); src != nil {
		return Splice(c, src)
	}
	return io.Copy(writerOnly{c}, r)
}

// WriteTo is ReadFrom's counterpart for io.Copy out of a Conn.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	if c.tc != nil {
		c.rd.flush()
		c.rd.busy.Store(true)
		defer c.rd.end()
		return c.tc.WriteTo(w)
	}
	if dst := asConn(w); dst != nil {
		return Splice(dst, c)
	}
	return io.Copy(w, readerOnly{c})
}

// asConn returns v as a Conn to splice with, or nil.
func asConn(v any) *Conn {
	switch v := v.(type) {
	case *Conn:
		return v
	case *net.TCPConn:
		if c, err := New(v); err == nil {
			return c
		}
	}
	return nil
}

// writerOnly and readerOnly hide ReadFrom and WriteTo from io.Copy.
type (
	writerOnly struct{ io.Writer }
	readerOnly struct{ io.Reader }
)

// mapClosed turns an error of a call that Close cut short into one that
// matches net.ErrClosed, as a TCPConn's would.
func (c *Conn) mapClosed(op string, err error) error {
	if err == nil || !c.closed.Load() || errors.Is(err, net.ErrClosed) {
		return err
	}
	return &net.OpError{Op: op, Net: "tcp", Addr: c.RemoteAddr(), Err: net.ErrClosed}
}

// Read reads like net.Conn's Read, deadlines included.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if n, errno, ok := c.takeAhead(p); ok {
		return c.aheadResult(n, errno)
	}
	c.beforeRead()
	c.rbuf, c.rn, c.rerr = p, 0, 0
	// With an Exchanger the poller reads for this Read (exchange.go), so a
	// reference keeps the descriptor open until disarm has taken the read
	// back, as RelayTo's does: the wait's own ends with the wait, and a
	// Close then could free the number for another socket under the
	// poller's read.
	held := c.xch != nil && c.pd != nil && c.pd.incref()
	err := c.waitRead()
	if c.xch != nil {
		c.disarm() // from the poller and any exchange (exchange.go)
		if c.rgot {
			c.rgot = false
			err = nil // the result came first
		}
	}
	if held {
		c.pd.decref()
	}
	c.rd.end()
	c.rbuf = nil
	return c.readResult(err)
}

// ReadNow is ReadPooled without the wait: one read of whatever c holds
// now. With nothing there, or only the peer's FIN (which a later read still
// finds), it returns n == 0 and no error. A TCP proxy reads its client so
// before it dials the backend, to send the bytes with the connect
// (DialSend). Conns outside fastconn's poller never read early: 0, nil.
func (c *Conn) ReadNow(pool *Pool) (buf *[]byte, n int, err error) {
	pd := c.pd
	if pd == nil || !pd.incref() {
		return nil, 0, nil
	}
	buf = pool.Get()
	for {
		r, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(pd.fd), uintptr(unsafe.Pointer(&(*buf)[0])), uintptr(len(*buf)), 0, 0, 0)
		switch {
		case errno == syscall.EINTR:
			continue
		case errno == 0 && r > 0:
			pd.decref()
			return buf, int(r), nil
		case errno != 0 && errno != syscall.EAGAIN:
			err = c.opError("read", errno)
		}
		pd.decref()
		pool.Put(buf)
		return nil, 0, err
	}
}

// ReadPooled waits until c has bytes or an error and reads into a buffer
// from pool, which it returns with the count: the caller gives the buffer
// back with pool.Put. While it waits it holds no buffer, so an idle
// connection costs no buffer memory. The buffer is nil when n is 0.
func (c *Conn) ReadPooled(pool *Pool) (buf *[]byte, n int, err error) {
	c.beforeRead()
	c.rpool, c.rbp, c.rn, c.rerr = pool, nil, 0, 0
	rerr := c.waitRead()
	c.rd.end()
	buf, c.rbp, c.rbuf, c.rpool = c.rbp, nil, nil, nil
	n, err = c.readResult(rerr)
	if n == 0 && buf != nil {
		pool.Put(buf)
		buf = nil
	}
	return buf, n, err
}

// beforeRead is the batching yield (see the package comment), and arms the
// read deadline if it must be before the read starts.
func (c *Conn) beforeRead() {
	c.rd.begin()
	c.waited = false
	c.batchYield()
}

// batchYield yields once if c was written to since its last read, and the
// poller woke a reader since c last yielded (see the package comment).
func (c *Conn) batchYield() {
	if !c.wrote.Load() {
		return
	}
	c.wrote.Store(false)
	if w := pollWakeups.Load(); w != c.seen {
		c.seen = w
		runtime.Gosched()
	}
}

func (c *Conn) readResult(err error) (int, error) {
	switch {
	case err != nil:
		return 0, c.mapClosed("read", err)
	case c.rerr != 0:
		return 0, c.opError("read", c.rerr)
	case c.rn == 0:
		return 0, io.EOF
	}
	return c.rn, nil
}

// read reads into rbuf for Read. recvfrom and sendto (in send) rather than
// read and write: they go to the socket directly, where read and write pass
// through the VFS layer first (fdget_pos, rw_verify_area, read_iter), which
// was 6.5% of pacer's CPU in TCP keep-alive (perf; HAProxy's recv and send
// paths 2.4%).
func (c *Conn) read(fd uintptr) bool {
	return c.rawRead(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)), 0, 0, 0)
}

// rawRead makes one reading system call on c's socket (recvfrom, or splice
// into a pipe) the way a RawConn callback must: its count in rn or its error
// in rerr and true, or false to wait for the poller. It counts the wakeups
// the batching yield goes by.
func (c *Conn) rawRead(trap, a1, a2, a3, a4, a5, a6 uintptr) bool {
	if c.waited {
		pollWakeups.Add(1)
		c.waited = false
	}
	for {
		n, _, errno := syscall.RawSyscall6(trap, a1, a2, a3, a4, a5, a6)
		switch errno {
		case 0:
			c.rn = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			c.waited = true
			c.rd.beforeWait()
			return false
		}
		c.rerr = errno
		return true
	}
}

// readPooled is read with a buffer taken just before the system call and
// given back if there was nothing to read.
func (c *Conn) readPooled(fd uintptr) bool {
	c.rbp = c.rpool.Get()
	c.rbuf = *c.rbp
	if c.read(fd) {
		return true
	}
	c.rpool.Put(c.rbp)
	c.rbp, c.rbuf = nil, nil
	return false
}

// Write writes all of p like net.Conn's Write, deadlines included.
func (c *Conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wbuf, c.wn, c.werr = p, 0, 0
	if c.expect {
		c.expect = false
		if c.writeAwait() {
			c.wbuf = nil
			return len(p), nil
		}
	}
	c.wd.begin()
	err := c.waitWrite()
	c.wd.end()
	n, errno := c.wn, c.werr
	c.wbuf = nil
	c.wrote.Store(true)
	switch {
	case err != nil:
		return n, c.mapClosed("write", err)
	case errno != 0:
		return n, c.opError("write", errno)
	}
	return n, nil
}

func (c *Conn) write(fd uintptr) bool {
	switch errno := c.send(fd); errno {
	case 0:
		return true
	case syscall.EAGAIN:
		c.wd.beforeWait()
		return false // the socket buffer is full: wait for the poller
	default:
		c.werr = errno
		return true
	}
}

// send writes wbuf from wn on. It returns 0 once every byte is out, or the
// error that stopped it: EAGAIN when the socket's buffer is full. With
// MSG_NOSIGNAL a write to a reset connection is only EPIPE, with no SIGPIPE
// for the runtime to field.
func (c *Conn) send(fd uintptr) syscall.Errno {
	flags := 0
	if c.last.Load() {
		flags = syscall.MSG_MORE
	}
	n, errno := sendAll(fd, c.wbuf[c.wn:], flags)
	c.wn += n
	return errno
}

// sendAll writes p with raw sendto calls until it is all out or a call
// fails (EAGAIN when the socket's buffer is full), and returns the count.
// flags are sendto's besides MSG_NOSIGNAL (MSG_MORE, or 0).
func sendAll(fd uintptr, p []byte, flags int) (int, syscall.Errno) {
	sent := 0
	for sent < len(p) {
		n, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&p[sent])), uintptr(len(p)-sent), uintptr(syscall.MSG_NOSIGNAL|flags), 0, 0)
		switch errno {
		case 0:
			sent += int(n)
		case syscall.EINTR:
		default:
			return sent, errno
		}
	}
	return sent, 0
}

// ExpectReply says that the next Write is the last one before the peer
// answers, as a request to a backend is: that Write, once all its bytes are
// out, waits until c is readable (or its read deadline passes, or c is
// closed) before it returns. The Read that follows then finds the answer,
// where it would otherwise find nothing, wait and read again: one read
// system call per answer instead of two. The wait cannot simply be left to
// the Read, because the runtime's poller forgets a socket's readiness when a
// read begins, and on loopback the answer can arrive before the write has
// returned; so the write is made from inside the read (writeAwait).
//
// Only for a protocol where the peer sends nothing unasked: bytes that
// arrive before that Write are not seen until more arrive. That Write must
// not run concurrently with a Read, and if the wait ends in an error, Write
// still reports the bytes as written: the Read that follows meets the error.
func (c *Conn) ExpectReply() { c.expect = true }

// writeAwait sends wbuf from inside a read of c, then waits there for c to
// be readable. It reports whether every byte went out; if not (the socket's
// buffer is full, or the write failed), Write carries on from wn as usual
// and the answer is read the usual way.
func (c *Conn) writeAwait() bool {
	c.rd.begin()
	c.await = 1
	_ = c.waitRead() // an error here is the next Read's
	c.rd.end()
	sent := c.await == 2
	c.await = 0
	if sent {
		// The wait in the poller did what the batching yield is for.
		c.wrote.Store(false)
	}
	return sent
}

// awaitReply is writeAwait's RawConn callback: the write, then false to wait
// for the poller, then true once c is readable.
func (c *Conn) awaitReply(fd uintptr) bool {
	if c.await == 2 {
		pollWakeups.Add(1)
		return true
	}
	if c.send(fd) != 0 {
		return true // the buffer is full, or an error: Write goes on as usual
	}
	c.await = 2
	c.rd.beforeWait()
	return false
}

// opError shapes a failed call like the net package's own errors, so that
// errors.Is(err, syscall.ECONNRESET) and net.Error work as on a TCPConn.
func (c *Conn) opError(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
}

// Pool is a pool of equal-sized buffers, for ReadPooled and other copies.
type Pool struct {
	p    sync.Pool
	size int
}

// NewPool returns a pool of buffers of size bytes.
func NewPool(size int) *Pool {
	p := &Pool{size: size}
	p.p.New = func() any { b := make([]byte, size); return &b }
	return p
}

// Get returns a buffer of the pool's size.
func (p *Pool) Get() *[]byte { return p.p.Get().(*[]byte) }

// Put gives a buffer back.
func (p *Pool) Put(b *[]byte) { p.p.Put(b) }
