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
// Splice moves bulk data between two Conns with raw splice(2) calls, for
// the same reason as the first point. Everything else (deadlines, the
// poller, Close, CloseWrite, and the net package's own splice through
// ReadFrom and WriteTo) is the embedded *net.TCPConn's.
package fastconn

import (
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// pollWakeups counts reads that resumed after waiting in the poller, by any
// connection: the batching yield is allowed once per connection per change
// of this count.
var pollWakeups atomic.Uint64

// Conn is a *net.TCPConn whose Read and Write use raw system calls. As on
// any net.Conn, Read may run concurrently with Write; unlike it, two Reads
// (or two Writes) must not run concurrently: each direction keeps its state
// in the Conn so that a call allocates nothing.
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn

	// The RawConn callbacks, one per direction, made once: a method value
	// made per call allocates. Each does what the call in progress set up
	// in its direction's state (a read, a pooled read, a splice).
	onRead, onWrite func(fd uintptr) bool

	// Read state.
	rbuf   []byte
	rbp    *[]byte // ReadPooled: the pooled buffer rbuf is, while held
	rpool  *Pool
	rn     int
	rerr   syscall.Errno
	waited bool   // this read returned to the poller at least once
	seen   uint64 // pollWakeups when this connection last yielded
	sp     *pipe  // Splice: the pipe being filled

	// Write state.
	wbuf  []byte
	wn    int
	werr  syscall.Errno
	wp    *pipe       // Splice: the pipe being emptied
	wrote atomic.Bool // a write happened since the last read
}

// New wraps tc. It fails only if tc has no file descriptor (closed).
func New(tc *net.TCPConn) (*Conn, error) {
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, err
	}
	c := &Conn{TCPConn: tc, rc: rc}
	c.onRead, c.onWrite = c.readReady, c.writeReady
	return c, nil
}

// readReady is the read direction's RawConn callback: false sends the
// goroutine to the poller until the socket is readable.
func (c *Conn) readReady(fd uintptr) bool {
	switch {
	case c.sp != nil:
		return c.spliceInRaw(fd)
	case c.rpool != nil:
		return c.readPooled(fd)
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

// Read reads like net.Conn's Read, deadlines included.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.beforeRead()
	c.rbuf, c.rn, c.rerr = p, 0, 0
	err := c.rc.Read(c.onRead)
	c.rbuf = nil
	return c.readResult(err)
}

// ReadPooled waits until c has bytes or an error and reads into a buffer
// from pool, which it returns with the count: the caller gives the buffer
// back with pool.Put. While it waits it holds no buffer, so an idle
// connection costs no buffer memory. The buffer is nil when n is 0.
func (c *Conn) ReadPooled(pool *Pool) (buf *[]byte, n int, err error) {
	c.beforeRead()
	c.rpool, c.rbp, c.rn, c.rerr = pool, nil, 0, 0
	rerr := c.rc.Read(c.onRead)
	buf, c.rbp, c.rbuf, c.rpool = c.rbp, nil, nil, nil
	n, err = c.readResult(rerr)
	if n == 0 && buf != nil {
		pool.Put(buf)
		buf = nil
	}
	return buf, n, err
}

// beforeRead is the batching yield; see the package comment.
func (c *Conn) beforeRead() {
	c.waited = false
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
		return 0, err
	case c.rerr != 0:
		return 0, c.opError("read", c.rerr)
	case c.rn == 0:
		return 0, io.EOF
	}
	return c.rn, nil
}

// read reads into rbuf for Read.
func (c *Conn) read(fd uintptr) bool {
	return c.rawRead(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)), 0, 0, 0)
}

// rawRead makes one reading system call on c's socket (read, or splice
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
	err := c.rc.Write(c.onWrite)
	n, errno := c.wn, c.werr
	c.wbuf = nil
	c.wrote.Store(true)
	switch {
	case err != nil:
		return n, err
	case errno != 0:
		return n, c.opError("write", errno)
	}
	return n, nil
}

func (c *Conn) write(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&c.wbuf[c.wn])), uintptr(len(c.wbuf)-c.wn))
		switch errno {
		case 0:
			c.wn += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // the socket buffer is full: wait for the poller
		default:
			c.werr = errno
			return true
		}
	}
	return true
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
