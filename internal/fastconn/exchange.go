package fastconn

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// Serving requests inside the poller.
//
// An HTTP server built on goroutines (fasthttp) parks one goroutine per
// keep-alive connection in Read, and every request then costs that
// goroutine a wakeup, a run, a park for the backend's answer and another
// wakeup: each a trip through the Go scheduler's queues, where connections
// overtake one another. Through pacer's HTTP plane that made the spread of
// keep-alive latency twice HAProxy's (p1 215 µs, p90 727 against HAProxy's
// 376 and 631; p99 1.0-1.27x HAProxy's over seven runs), while the TCP
// plane, whose small messages the poller forwards itself (relay.go), has
// HAProxy's latency to the microsecond. A diagnostic that did the HTTP
// plane's work per request (parse, rewrite; parse the answer) inside that
// relay gave 1.14x HAProxy's rate and 0.72x its pooled p99; serving the
// HTTP plane's requests this way gave 1.13-1.19x and 0.92-1.09x in five
// runs, where the goroutines gave 1.05-1.10x and 0.98-1.23x
// (bench/RESULTS.md).
//
// So a Conn whose reader waits in Read may have an Exchanger: when the
// socket has bytes, the poller reads them into the waiting Read's buffer
// and offers them to the Exchanger first. An Exchanger that takes them
// (a whole request it can serve without blocking) starts the exchange and
// ends it later, from whatever goroutine sees its answer, with
// ExchangeDone; the reader never wakes. One that cannot finish an exchange
// it took gives the bytes back with ExchangeFallback, and the reader gets
// them as if it had just read them, still in its buffer; so does a reader
// whose Exchanger declines them. The reader also offers what it reads
// itself. While an exchange runs the poller reads nothing more from the
// socket (a client's next request waits for the answer to the last, as
// HTTP/1.1 wants), and readiness that comes meanwhile is kept for when it
// ends.
//
// The state machine is RelayTo's (relay.go: idle, armed, running, done),
// with armed and running states of its own, plus relayBusy while an
// exchange runs.

const (
	// relayBusy: an Exchanger took a read's bytes and has not ended the
	// exchange.
	relayBusy int32 = 4
	// exchangeArmed and exchangeRunning are relayArmed and relayRunning
	// for a Conn with an Exchanger. The poller tells a Conn that exchanges
	// from one that relays by the state it loads, never by xch: the
	// reader may remove the Exchanger (an upgrade, SetExchanger(nil)) and
	// arm a relay while a poller that saw an older state has not yet acted
	// on it, and that poller must not then run an exchange, with no
	// Exchanger, on the relay's armed state.
	exchangeArmed   int32 = 5
	exchangeRunning int32 = 6
)

// An Exchanger serves requests read from a Conn inside fastconn's poller.
type Exchanger interface {
	// Exchange is offered the bytes of one read of c, in the buffer of the
	// Read that waits on c, on the poller's goroutine (or on the reader's,
	// for bytes it read itself, before it waits on). It reports whether it
	// took them; if it did, it must end the exchange with c.ExchangeDone or
	// c.ExchangeFallback, and must not touch b after that. It must not
	// block. cap(b) is the room the Read gave: a buffered reader that
	// holds part of a message already reads into less than its whole
	// buffer, so an Exchanger can tell a read that starts a message.
	Exchange(c *Conn, b []byte) bool
}

// ErrWouldBlock is TryRead's error when the socket has nothing to read.
var ErrWouldBlock = errors.New("fastconn: read would block")

// SetExchanger gives c's Reads an Exchanger (nil removes it). Only Conns in
// fastconn's poller (from Dial or a Listener) serve in the poller; for
// others it does nothing. It must be called while no Read runs, and the
// Exchanger must not be changed while an exchange runs.
func (c *Conn) SetExchanger(x Exchanger) {
	if c.pd != nil {
		c.xch = x
	}
}

// Exchanger returns what SetExchanger gave c, for the goroutine that reads
// c.
func (c *Conn) Exchanger() Exchanger { return c.xch }

// exchangeRead is a Read's RawConn callback on a Conn with an Exchanger,
// on the reader's goroutine: it takes a result the poller or an exchange
// left, or reads itself and offers the bytes, and arms the poller's side
// when there is nothing to read.
func (c *Conn) exchangeRead(fd uintptr) bool {
	for {
		switch c.rstate.Load() {
		case relayDone:
			c.rstate.Store(relayIdle)
			c.rgot = true
			return true
		case exchangeRunning, relayBusy:
			// The poller reads, or an exchange runs: wait on, with the
			// deadline armed (a read that found bytes did not arm it).
			c.rd.beforeWait()
			return false
		case exchangeArmed:
			// A token while armed: readiness from before the arming.
			if !c.rstate.CompareAndSwap(exchangeArmed, relayIdle) {
				continue
			}
		}
		if !c.read(fd) {
			c.rstate.Store(exchangeArmed)
			return false
		}
		n := c.rn
		if c.rerr != 0 || n == 0 {
			return true
		}
		if n == len(c.rbuf) {
			// The socket may hold more, with no edge to come for it: the
			// exchange's end reads again.
			c.xpend.Store(true)
		}
		c.rn = 0
		c.rstate.Store(relayBusy)
		if !c.xch.Exchange(c, c.rbuf[:n]) {
			c.rn = n
			c.rstate.Store(relayIdle)
			return true
		}
		// Taken: wait for the exchange's end, or for what the poller
		// reads after it. The exchange may have ended already.
	}
}

// exchangeClaim is the poller's side, for a readable socket with an
// Exchanger, as relayClaim is for a relay: it reports false if no Read
// waits (the reader, if any, is woken instead), and otherwise takes the
// read for the caller to run (exchangeRun, or the first read of a batch),
// or keeps the readiness for the end of the running exchange.
func (c *Conn) exchangeClaim(events uint32) (handled bool, run int) {
	if h := testHookExchangeReady.Load(); h != nil {
		(*h)(c)
	}
	for {
		switch c.rstate.Load() {
		case exchangeArmed:
			if c.pd.state.Load()&1 != 0 {
				return false, 0 // Close began: the reader is woken
			}
			if c.rstate.CompareAndSwap(exchangeArmed, exchangeRunning) {
				pollWakeups.Add(1)
				return true, runExchange
			}
		case relayBusy, exchangeRunning:
			c.xpend.Store(true)
			if s := c.rstate.Load(); s == relayBusy || s == exchangeRunning {
				return true, 0 // whoever ends the exchange or the read looks again
			}
		case relayIdle, relayDone:
			return c.wakeReader(), 0
		default:
			// A relay's state: the reader removed the Exchanger and
			// relays since this poller loaded the state.
			return c.relayClaim(events)
		}
	}
}

// testHookExchangeReady, if set, runs as the poller begins to act on a
// socket's readiness in an exchange's state (tests hold it there).
var testHookExchangeReady atomic.Pointer[func(*Conn)]

// wakeReader is relay's answer, false (wake the reader), for a socket
// whose reader does not wait in Read, or has a result to take. The reader
// may have read already, bytes that came before these, and be about to
// offer them: if an exchange takes them, what came now is its end's to
// read, as no edge comes for it again. So it is kept as for a running
// exchange (xpend; a FIN also in xfin, which relay sets). For a Conn
// without an Exchanger, or whose Exchanger is being removed, that is an
// extra read at most.
func (c *Conn) wakeReader() bool {
	if !c.xpend.Load() {
		c.xpend.Store(true)
	}
	return false
}

// exchangeRun reads for a waiting Read in state exchangeRunning, and offers
// what it reads.
func (c *Conn) exchangeRun() {
	fd := uintptr(c.pd.fd)
	for {
		c.xpend.Store(false)
		n, errno := recv(fd, c.rbuf)
		if !c.exchangeGot(n, errno) {
			return
		}
	}
}

// exchangeGot acts on one read of exchangeRun into rbuf: n bytes, or
// errno. It reports whether to read again.
func (c *Conn) exchangeGot(n int, errno syscall.Errno) bool {
	switch errno {
	case 0:
	case syscall.EINTR:
		return true
	case syscall.EAGAIN:
		c.rstate.Store(exchangeArmed)
		// Readiness kept while this read ran may predate the arming.
		return c.xpend.Load() && c.rstate.CompareAndSwap(exchangeArmed, exchangeRunning)
	default:
		c.rerr = errno
		c.exchangeStop()
		return false
	}
	if n == 0 { // the peer's FIN: Read returns io.EOF
		c.exchangeStop()
		return false
	}
	if n == len(c.rbuf) {
		// More bytes may follow with no new edge: the exchange's end
		// reads again (as it does after a FIN: xfin).
		c.xpend.Store(true)
	}
	// While Exchange runs the reader may stop waiting (its deadline), but
	// it does not leave Read (disarm) until Exchange returned: the bytes
	// are in its buffer.
	b := c.rbuf[:n]
	c.xcalling.Store(true)
	c.rstate.Store(relayBusy)
	took := c.xch.Exchange(c, b)
	c.xcalling.Store(false)
	if !took {
		c.ExchangeFallback(n) // the reader's, unless it is gone
	}
	return false
}

// exchangeStop ends the poller's read with a result for the reader.
func (c *Conn) exchangeStop() {
	c.rstate.Store(relayDone)
	c.pd.r.wake()
}

// ExchangeDone ends the exchange the Exchanger took: c's reader waits on,
// and the poller reads c again for it (at once, if readiness came
// meanwhile, on the caller's goroutine, which may then start the next
// exchange). If the reader stopped waiting meanwhile (a deadline, Close),
// it does nothing.
func (c *Conn) ExchangeDone() {
	if !c.rstate.CompareAndSwap(relayBusy, exchangeArmed) {
		return
	}
	if (c.xpend.Load() || c.xfin.Load()) && c.pd.state.Load()&1 == 0 && c.rstate.CompareAndSwap(exchangeArmed, exchangeRunning) {
		c.exchangeRun()
	}
}

// ExchangeFallback ends the exchange the Exchanger took by giving the
// reader the first n bytes of its buffer, which hold what Exchange was
// offered, as if it had just read them: for a request the Exchanger cannot
// finish, to be served the reader's way. It reports false if the reader
// stopped waiting meanwhile.
func (c *Conn) ExchangeFallback(n int) bool {
	if !c.rstate.CompareAndSwap(relayBusy, exchangeRunning) {
		return false
	}
	c.rn = n
	c.exchangeStop()
	return true
}

// TryRead reads what c holds now, without waiting: (0, ErrWouldBlock) when
// it holds nothing, (0, io.EOF) for the peer's FIN. For an Exchanger
// reading a backend's answer inside the poller, where nothing may wait. It
// must not run concurrently with a Read.
func (c *Conn) TryRead(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	pd := c.pd
	if pd == nil {
		return 0, errors.ErrUnsupported
	}
	if n, errno, ok := c.takeAhead(p); ok {
		return c.aheadResult(n, errno)
	}
	if !pd.incref() {
		return 0, c.mapClosed("read", net.ErrClosed)
	}
	n, errno := recv(uintptr(pd.fd), p)
	pd.decref()
	switch {
	case errno == syscall.EAGAIN:
		return 0, ErrWouldBlock
	case errno != 0:
		return 0, c.opError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// recv is one raw recvfrom of p from fd, retried on EINTR: the count, or
// the error (EAGAIN when there is nothing to read).
func recv(fd uintptr, p []byte) (int, syscall.Errno) {
	for {
		r, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), 0, 0, 0)
		if errno != syscall.EINTR {
			return int(r), errno
		}
	}
}

// WriteNow writes what of p c's socket takes now, without waiting, and
// returns the count: less than len(p) with a nil error when the socket's
// buffer is full. It must not run concurrently with a Write.
func (c *Conn) WriteNow(p []byte) (int, error) {
	pd := c.pd
	if pd == nil {
		return 0, errors.ErrUnsupported
	}
	if !pd.incref() {
		return 0, c.mapClosed("write", net.ErrClosed)
	}
	n, errno := sendAll(uintptr(pd.fd), p, 0)
	pd.decref()
	if errno != 0 && errno != syscall.EAGAIN {
		return n, c.opError("write", errno)
	}
	c.wrote.Store(true)
	return n, nil
}

// A ReadWatcher is told when a Conn may be readable, inside the poller.
type ReadWatcher interface {
	// Readable is called each time the Conn may have bytes, until it
	// returns true; it must not block (TryRead).
	Readable() bool
	// WatchOver ends the watch: with nil once Readable returned true, on
	// the goroutine that called it (the poller's, or WatchReply's caller);
	// with the read deadline's or Close's error on a goroutine of its own.
	WatchOver(err error)
}

// WatchReply watches for the answer to a request just written to c: it
// calls w.Readable on the poller's goroutine each time c may be readable,
// until it returns true or c's read deadline passes or c is closed, and
// then w.WatchOver once; no goroutine waits meanwhile. The first call comes
// only once the poller reported c readable, or at once if it did so since
// c was last read: the read that would find nothing right after the
// request is saved, and with it, measured, most of the times the backend,
// woken by the request onto the proxy's core, preempted it (HTTP
// keep-alive: 80k involuntary switches in 2 s with the read, 15k without;
// bench/RESULTS.md). A Conn outside fastconn's poller returns
// errors.ErrUnsupported and w is not called. Nothing else may read c until
// WatchOver.
func (c *Conn) WatchReply(w ReadWatcher) error {
	if c.pd == nil {
		return errors.ErrUnsupported
	}
	c.rwatch = w
	// A call in the read direction, as Read is: begin arms a deadline asked
	// later than the armed one (or none), which would otherwise end the
	// watch early, and beforeWait one asked earlier.
	c.rd.begin()
	c.rd.beforeWait()
	c.pd.aw.lazy = true
	c.pd.waitFunc((*connWatch)(c))
	return nil
}

// connWatch is a Conn's ReadWatcher as waitFunc's readiness: a conversion,
// where a method value would allocate.
type connWatch Conn

func (w *connWatch) ready(uintptr) bool { return w.rwatch.Readable() }

func (w *connWatch) waitOver(err error) {
	rw := w.rwatch
	w.rwatch = nil
	(*Conn)(w).rd.end() // before WatchOver, which may start the next call
	rw.WatchOver(err)
}
