package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"hash/fnv"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/internal/fastconn"
)

// Buffer sizes of a backend connection. The read buffer also bounds a
// response header.
const (
	backendReadBuf  = 16 << 10
	backendWriteBuf = 8 << 10
	// peekAfter: a pooled connection idle longer than this is checked for a
	// FIN or RST from the backend (one non-blocking recv) before it carries a
	// request. Busy connections are not checked, so the hot path pays
	// nothing; a connection that sat idle is the one a backend may have
	// closed. (One whose last answer was a 204 or 304 is checked however
	// busy: see releaseBodiless.)
	peekAfter = 200 * time.Millisecond
)

// backend is one backend address and its pool of keep-alive connections. It
// outlives snapshots (the route index keys pools by address) and is closed
// when no service routes to the address any more.
type backend struct {
	p      *Proxy
	addr   netip.AddrPort
	dialTo string
	// sticky is the value of the STICKY cookie that pins clients here: a
	// hash of the address, so every pacer instance agrees on it.
	sticky string

	// inflight counts requests sent, or on fasthttp's path waiting for
	// their connection, and not yet answered in full: for
	// least-outstanding balancing, and for busy.
	inflight atomic.Int64
	open     atomic.Int64 // connections open, idle or busy

	// strays is set once the backend was caught sending bytes after an
	// answer (releaseBodiless).
	strays atomic.Bool

	mu     sync.Mutex
	idle   []*bconn // LIFO: the most recently used on top
	closed bool
	// streams lists the connections whose answers stream to clients now
	// (startBody to Close). When no service routes to the backend any more
	// (leave), each gets DrainTimeout from then to finish, as the TCP
	// plane drains its connections, unless the address is routed again
	// first (back); left is when it left, zero while it is routed.
	streams *bconn
	left    time.Time
}

func newBackend(p *Proxy, addr netip.AddrPort) *backend {
	h := fnv.New64a()
	h.Write([]byte(addr.String()))
	return &backend{p: p, addr: addr, dialTo: addr.String(), sticky: strconv.FormatUint(h.Sum64(), 16)}
}

// errDial wraps a failure to connect: nothing was sent, so any request may be
// retried elsewhere.
type errDial struct{ err error }

func (e *errDial) Error() string { return "connect: " + e.err.Error() }
func (e *errDial) Unwrap() error { return e.err }

// get returns a connection to the backend: a pooled one that is fresh enough,
// or a new one. now is the time the attempt started.
func (b *backend) get(now time.Time) (*bconn, error) {
	idleMax := b.p.cfg.PoolIdleTimeout
	b.mu.Lock()
	for n := len(b.idle); n > 0; n = len(b.idle) {
		c := b.idle[n-1]
		b.idle[n-1] = nil
		b.idle = b.idle[:n-1]
		if idle := fastconn.MonoOf(now) - c.lastUse; idle < idleMax {
			b.mu.Unlock()
			if idle < peekAfter && !c.peekFirst {
				return c, nil
			}
			c.peekFirst = false
			c.armDeadline(now) // a deadline that passed in the pool fails the peek
			ok, stray := c.alive()
			if ok {
				return c, nil
			}
			b.caught(stray)
			c.close()
			b.mu.Lock()
			continue
		}
		// The top is the freshest; everything under it is older still.
		stale := append([]*bconn(nil), b.idle...)
		clear(b.idle)
		b.idle = b.idle[:0]
		b.mu.Unlock()
		c.close()
		for _, s := range stale {
			s.close()
		}
		b.mu.Lock()
	}
	b.mu.Unlock()
	return b.dial()
}

// caught notes, when stray, that the backend sent bytes after an answer
// that were not part of it (a body to a HEAD, 204 or 304, or more than its
// length): from then on its connections close after a HEAD. A backend that
// merely closed an idle connection is not caught. The first time is
// logged.
func (b *backend) caught(stray bool) {
	if stray && !b.strays.Swap(true) {
		b.p.log.Info("backend sends bytes after its answers (a body to a HEAD, 204 or 304?): its connections now close after a HEAD",
			zap.Stringer("backend", b.addr))
	}
}

// dial opens a new connection to the backend: fastconn's, whose dial and
// reads and writes are raw calls and batch (see fastconn), in fastconn's
// poller, which wakes the requests waiting for answers in the order the
// answers came (the runtime's poller wakes them newest first: keep-alive
// p99 0.82x of that, same CPU; bench/RESULTS.md). It gets no TCP keep-alive
// probes: an idle pooled connection is closed after PoolIdleTimeout and
// peeked at before reuse, and a busy one is bounded by the response and
// body timeouts.
func (b *backend) dial() (*bconn, error) {
	fc, err := fastconn.Dial(context.Background(), b.addr, b.p.cfg.DialTimeout)
	if err != nil {
		return nil, &errDial{err}
	}
	c := &bconn{b: b, nc: fc}
	c.src.nc = fc
	c.br = bufio.NewReaderSize(&c.src, backendReadBuf)
	c.bw = bufio.NewWriterSize(fc, backendWriteBuf)
	b.open.Add(1)
	return c, nil
}

// getIdle returns a pooled connection used less than peekAfter ago, at
// now on fastconn's Mono clock, or nil: what an exchange served in the
// poller may take, where no dial may wait. A connection whose last answer
// had no body by its status is peeked at first, as get does (the peek
// does not wait either).
func (b *backend) getIdle(now time.Duration) *bconn {
	b.mu.Lock()
	n := len(b.idle)
	if n == 0 || now-b.idle[n-1].lastUse >= peekAfter {
		b.mu.Unlock()
		return nil // the slow path dials, or peeks at the top, or drops the stale
	}
	c := b.idle[n-1]
	b.idle[n-1] = nil
	b.idle = b.idle[:n-1]
	b.mu.Unlock()
	if c.peekFirst {
		c.peekFirst = false
		c.armDeadline(time.Now()) // a deadline that passed in the pool fails the peek
		if ok, stray := c.alive(); !ok {
			b.caught(stray)
			c.close()
			return nil
		}
	}
	return c
}

// put returns c to the pool, or closes it if the pool is closed or full,
// or if the backend sent more than its answer: bytes nobody asked for would
// be read as the next request's answer.
func (b *backend) put(c *bconn) {
	if c.br.Buffered() > 0 {
		b.caught(true)
		c.close()
		return
	}
	c.lastUse = fastconn.Mono()
	b.mu.Lock()
	if b.closed || len(b.idle) >= b.p.cfg.MaxIdlePerBackend {
		b.mu.Unlock()
		c.close()
		return
	}
	b.idle = append(b.idle, c)
	b.mu.Unlock()
}

// dropIdle closes every idle connection: after a connection error the others
// are likely dead too (the task died), and retrying into them is wasted.
func (b *backend) dropIdle() {
	b.mu.Lock()
	idle := append([]*bconn(nil), b.idle...)
	clear(b.idle)
	b.idle = b.idle[:0]
	b.mu.Unlock()
	for _, c := range idle {
		c.close()
	}
}

// reap closes idle connections older than the pool idle timeout, so the
// backend does not see them linger.
func (b *backend) reap(now time.Time) {
	b.mu.Lock()
	var stale []*bconn
	keep := b.idle[:0]
	for _, c := range b.idle {
		if fastconn.MonoOf(now)-c.lastUse >= b.p.cfg.PoolIdleTimeout {
			stale = append(stale, c)
		} else {
			keep = append(keep, c)
		}
	}
	clear(b.idle[len(keep):])
	b.idle = keep
	b.mu.Unlock()
	for _, c := range stale {
		c.close()
	}
}

// close closes the pool: idle connections now, busy ones when their request
// ends (put closes them).
func (b *backend) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.dropIdle()
}

// leave closes the pool of a backend no service routes to any more, and
// starts the drain of the answers streaming from it.
// Called again on each table change while its address stays unrouted, it
// changes nothing.
func (b *backend) leave() {
	b.mu.Lock()
	b.closed = true
	now := b.left.IsZero()
	if now {
		b.left = time.Now()
	}
	n := 0
	for c := b.streams; c != nil; c = c.snext {
		c.startDrain(b.left)
		n++
	}
	b.mu.Unlock()
	b.dropIdle()
	if now && n > 0 {
		b.p.log.Info("backend left; draining its streaming answers", zap.Stringer("backend", b.addr),
			zap.Int("answers", n), zap.Duration("drain_timeout", b.p.cfg.DrainTimeout))
	}
}

// back stops the drain leave started: the address is routed again. The
// pool stays closed (a new backend has the address's pool now); the
// answers streaming from this one finish unbounded by the drain.
func (b *backend) back() {
	b.mu.Lock()
	was := !b.left.IsZero()
	b.left = time.Time{}
	n := 0
	for c := b.streams; c != nil; c = c.snext {
		c.stopDrain()
		n++
	}
	b.mu.Unlock()
	if was && n > 0 {
		b.p.log.Info("backend is back; its streaming answers stop draining", zap.Stringer("backend", b.addr), zap.Int("answers", n))
	}
}

// busy reports whether requests to b wait for their answers, or answers
// stream from it: what a drain must still follow.
func (b *backend) busy() bool {
	if b.inflight.Load() > 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.streams != nil
}

// bconn is one keep-alive connection to a backend. While a response body
// streams to the client, the bconn is also that body's reader (fasthttp
// reads it and closes it when the body is written), so streaming allocates
// nothing.
type bconn struct {
	b       *backend
	nc      *fastconn.Conn
	src     bsrc // what br reads
	br      *bufio.Reader
	bw      *bufio.Writer
	lastUse time.Duration // fastconn.Mono: one clock reading, where time.Now is two
	closed  bool
	// peekFirst: the connection is peeked at before its next request,
	// however briefly it idled; its last answer had no body by its status
	// (releaseBodiless).
	peekFirst bool
	// afterBodiless: the last answer on the connection had no body by its
	// status or request; garbage read as the next answer is then likely
	// that body, late (see receive).
	afterBodiless bool
	// halfSent: the backend answered before the request was all sent
	// (receiveEarly), so the connection cannot carry another.
	halfSent bool
	// deadline is the read and write deadline armDeadline last set on nc;
	// zero when something else moved either deadline since.
	deadline time.Time

	// Body-streaming state, valid between startBody and Close.
	remain     int64 // bytes left of a sized body or of the current chunk
	chunked    bool
	untilEOF   bool // HTTP/1.0 style body delimited by the connection close
	done       bool // body read in full
	keep       bool // the connection may be pooled after the body
	client     net.Conn
	deadlineAt time.Time // when the deadlines were last pushed forward
	st         *svcState

	// The exchange served in the poller that waits for this connection's
	// answer (exchange.go), and the answer's header as it parses it.
	x     *exchanger
	rh    fasthttp.ResponseHeader
	rhSet bool // rh has the server's settings

	// The backend's list of streaming connections, and this one's drain
	// timer (see backend.streams); guarded by b.mu.
	sprev, snext *bconn
	streaming    bool
	drain        *time.Timer
}

// bsrc is what a bconn's reader reads: nc, or while the poller looks at
// an answer (nowait), only what nc holds already.
type bsrc struct {
	nc     *fastconn.Conn
	nowait bool
}

func (s *bsrc) Read(p []byte) (int, error) {
	if s.nowait {
		return s.nc.TryRead(p)
	}
	return s.nc.Read(p)
}

// alive reports whether the backend has not closed c (no FIN, RST or stray
// bytes waiting), with one non-blocking peek; stray says bytes were waiting.
func (c *bconn) alive() (ok, stray bool) {
	if c.br.Buffered() > 0 {
		return false, true
	}
	data, closed := c.nc.Pending()
	return !data && !closed, data
}

func (c *bconn) close() {
	if c.closed {
		return
	}
	c.closed = true
	c.nc.Close()
	c.b.open.Add(-1)
}

// startBody makes c the reader of a response body of length cl (-1 chunked,
// -2 until the connection closes).
func (c *bconn) startBody(cl int, keep bool, client net.Conn, st *svcState) {
	c.chunked, c.untilEOF, c.done = cl == -1, cl == -2, false
	c.remain = int64(cl)
	if cl < 0 {
		c.remain = 0
	}
	c.keep = keep && !c.untilEOF
	c.client = client
	c.st = st
	c.deadlineAt = time.Time{}
	c.deadline = time.Time{} // Read moves the read deadline
	b := c.b
	b.mu.Lock()
	c.streaming, c.sprev, c.snext = true, nil, b.streams
	if b.streams != nil {
		b.streams.sprev = c
	}
	b.streams = c
	if !b.left.IsZero() {
		c.startDrain(b.left) // the backend left while the request was out
	}
	b.mu.Unlock()
}

// unstream takes c off its backend's list of streaming connections, and
// stops its drain.
func (c *bconn) unstream() {
	b := c.b
	b.mu.Lock()
	if c.streaming {
		c.streaming = false
		c.stopDrain()
		if c.sprev != nil {
			c.sprev.snext = c.snext
		} else {
			b.streams = c.snext
		}
		if c.snext != nil {
			c.snext.sprev = c.sprev
		}
		c.sprev, c.snext = nil, nil
	}
	b.mu.Unlock()
}

// startDrain bounds c's answer by DrainTimeout from left, when its
// backend left: the body's silence timer alone would let a stream that
// keeps moving run for good. A reset, as the TCP plane's drain cuts a
// connection: the client gets a body cut short, never one that looks
// whole. Called with b.mu held.
func (c *bconn) startDrain(left time.Time) {
	if c.drain == nil {
		nc := c.nc
		c.drain = time.AfterFunc(time.Until(left.Add(c.b.p.cfg.DrainTimeout)), func() {
			_ = nc.SetLinger(0)
			nc.Close()
		})
	}
}

// stopDrain cancels c's drain. Called with b.mu held.
func (c *bconn) stopDrain() {
	if c.drain != nil {
		c.drain.Stop()
		c.drain = nil
	}
}

// flushRequest sends what is left of the request in bw, with the socket
// told that the backend answers next (fastconn's ExpectReply): the write
// returns once the answer is readable, and reading the response header
// takes one read instead of one that finds nothing and a second. Flush
// makes exactly one Write when anything is buffered (fastconn's Write
// writes all or fails), so the request cannot land on a write before the
// last.
func (c *bconn) flushRequest() error {
	if c.bw.Buffered() == 0 {
		return nil
	}
	c.nc.ExpectReply()
	return c.bw.Flush()
}

// armDeadline makes sure nc's read and write deadlines are at least
// ResponseHeaderTimeout away, for sending a request and waiting for the
// response header. It pushes them only when less than that is left, to
// ResponseHeaderTimeout and an eighth, as Read does for bodies: a
// connection busy with small requests then updates its deadline timers once
// every few seconds rather than twice per request (set, then clear): about
// 4% off BenchmarkProxyKeepAlive. The price is that a response header may
// take up to an eighth longer than ResponseHeaderTimeout.
func (c *bconn) armDeadline(now time.Time) {
	rht := c.b.p.cfg.ResponseHeaderTimeout
	if c.deadline.Sub(now) >= rht {
		return
	}
	c.deadline = now.Add(rht + rht/8)
	_ = c.nc.SetDeadline(c.deadline)
}

// Read reads the response body. It pushes the backend's read deadline and
// the client's write deadline forward as the body moves, so only silence
// longer than BodyTimeout ends a stream.
func (c *bconn) Read(p []byte) (int, error) {
	if c.done {
		return 0, io.EOF
	}
	if now := time.Now(); now.Sub(c.deadlineAt) > c.b.p.cfg.BodyTimeout/8 {
		c.deadlineAt = now
		d := now.Add(c.b.p.cfg.BodyTimeout)
		_ = c.nc.SetReadDeadline(d)
		if c.client != nil {
			_ = c.client.SetWriteDeadline(d)
		}
	}
	switch {
	case c.chunked:
		return c.readChunk(p)
	case c.untilEOF:
		n, err := c.br.Read(p)
		if err == io.EOF {
			c.done = true
		}
		return n, err
	}
	if c.remain == 0 {
		c.done = true
		return 0, io.EOF
	}
	if int64(len(p)) > c.remain {
		p = p[:c.remain]
	}
	n, err := c.br.Read(p)
	c.remain -= int64(n)
	if c.remain == 0 {
		c.done = true
		if err == nil {
			err = io.EOF
		}
	} else if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

var errBadChunk = errors.New("malformed chunked body from backend")

// readChunk decodes the chunked encoding; fasthttp encodes again towards the
// client. Trailers are read and dropped.
func (c *bconn) readChunk(p []byte) (int, error) {
	for c.remain == 0 {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return 0, eofToUnexpected(err)
		}
		size, ok := parseChunkSize(line)
		if !ok {
			return 0, errBadChunk
		}
		if size == 0 {
			return 0, c.readTrailers()
		}
		c.remain = size
	}
	if int64(len(p)) > c.remain {
		p = p[:c.remain]
	}
	n, err := c.br.Read(p)
	c.remain -= int64(n)
	if c.remain == 0 && err == nil {
		// The CRLF after the chunk data.
		var crlf [2]byte
		if _, err = io.ReadFull(c.br, crlf[:]); err == nil && (crlf[0] != '\r' || crlf[1] != '\n') {
			err = errBadChunk
		}
	}
	if err != nil {
		return n, eofToUnexpected(err)
	}
	return n, nil
}

// readTrailers reads the trailer fields after the last chunk, and drops
// them, up to the empty line that ends the body; it returns io.EOF then.
// A line that is neither is a broken body, not its end: whatever follows
// it would be left for the next request's answer.
func (c *bconn) readTrailers() error {
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return eofToUnexpected(err)
		}
		if string(line) == "\r\n" || string(line) == "\n" {
			c.done = true
			return io.EOF
		}
		if !isFieldLine(line) {
			return errBadChunk
		}
	}
}

// isFieldLine reports whether line looks like a header field: a name,
// with no whitespace before it or its colon, and the colon.
func isFieldLine(line []byte) bool {
	for i, ch := range line {
		switch ch {
		case ':':
			return i > 0
		case ' ', '\t', '\r', '\n':
			return false
		}
	}
	return false
}

func eofToUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// parseChunkSize parses a chunk-size line ("1a;ext=1\r\n"): hex digits,
// then optional whitespace (RFC 9112 7.1.1's BWS before an extension),
// then an extension, which is dropped, or the line's end. Anything else
// after the digits makes the line malformed, not a size: a backend and
// pacer that read different sizes read different answers.
func parseChunkSize(line []byte) (int64, bool) {
	var n int64
	digits := 0
	for ; digits < len(line); digits++ {
		d, ok := unhex(line[digits])
		if !ok {
			break
		}
		if digits == 15 {
			return 0, false
		}
		n = n<<4 | int64(d)
	}
	if digits == 0 {
		return 0, false
	}
	rest := line[digits:]
	for len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
		rest = rest[1:]
	}
	if (len(rest) > 0 && rest[0] == ';') || string(rest) == "\r\n" || string(rest) == "\n" {
		return n, true
	}
	return 0, false
}

func unhex(ch byte) (byte, bool) {
	switch {
	case ch >= '0' && ch <= '9':
		return ch - '0', true
	case ch >= 'a' && ch <= 'f':
		return ch - 'a' + 10, true
	case ch >= 'A' && ch <= 'F':
		return ch - 'A' + 10, true
	}
	return 0, false
}

// Close ends a streamed response body: c goes back to its pool if the body
// was read in full and the backend keeps the connection alive, and is closed
// otherwise (the client went away mid-body, or the backend closes).
func (c *bconn) Close() error {
	c.unstream()
	c.client = nil
	if c.st != nil {
		c.st.active.Add(-1)
		c.st = nil
	}
	c.b.inflight.Add(-1)
	_ = c.nc.SetReadDeadline(time.Time{})
	c.deadline = time.Time{}
	if c.done && c.keep {
		c.b.put(c)
	} else {
		c.close()
	}
	return nil
}
