package fastconn

import (
	"runtime"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// Relaying small messages inside the poller.
//
// A TCP proxy's copy loop spends most of its life waiting for the next
// small message: a read that finds it, a write that takes it whole, and a
// read that finds nothing and parks. Each message then costs a wakeup of
// the poller's goroutine, a token to the copying goroutine, and that
// goroutine's run and park: TCP keep-alive through the TCP plane spent 3.35
// µs of user time per request where HAProxy, whose event loop reads and
// writes from the poller itself, spends 1.97 (bench/RESULTS.md), and the
// gap was that handoff (perf: chanrecv, gopark, schedule, findRunnable).
//
// So while RelayTo waits, the poller's goroutine does the copy itself, as
// HAProxy does: when the socket is readable it reads into a pooled buffer
// and writes the bytes to the destination at once, and the waiting
// goroutine never wakes for a message that went through whole. Anything
// else (the peer's FIN or an error, a read that fills the buffer, which may
// be the start of bulk data, bytes the destination cannot take at once)
// ends the relay, and the goroutine handles it the usual way. Neither call
// can block: both sockets are non-blocking. Interleaved A/B, TCP
// keep-alive: user time 3.21 -> 1.18 µs per request, all CPU 19.5 -> 16.9
// µs (HAProxy 18.25); one request per connection within 1% either way.
//
// A read shorter than the buffer took everything the socket had when the
// poller collected its readiness, and whatever comes after that collection
// marks the socket ready again, since it is registered edge-triggered; so
// after a short read the relay skips the read that would find nothing,
// unless the readiness included the peer's FIN (EPOLLRDHUP), a hangup or an
// error, which a short read can leave behind without a new edge.
//
// The relay's state moves idle -> armed (by the reader, after a read that
// found nothing) -> running (by the poller, while it copies) -> armed again,
// or done (the poller stopped, with a result for the reader) -> idle (by
// the reader). The reader that stops waiting for another reason (a
// deadline, Close) disarms first, and lets a running relay finish: the
// poller's copy is a few system calls that never block.

const (
	relayIdle    int32 = iota // no relay: readiness wakes the reader
	relayArmed                // the poller copies what arrives
	relayRunning              // the poller is copying
	relayDone                 // the poller stopped; the result waits for the reader
)

// RelayTo is ReadPooled for a loop that copies c to dst, which nobody else
// writes to meanwhile. It returns, as ReadPooled does, a read's bytes for
// the caller to write, or the read's error (io.EOF for the peer's FIN); and
// moved, the bytes that the poller's goroutine already wrote to dst while
// RelayTo waited (see above). Bytes it returns in buf are ones that
// filled the buffer, or that dst could not take whole at once. A deadline or
// Close that ends the wait returns its error with moved, unless the poller
// stopped with bytes or an error first: then those are returned, and the
// deadline or Close ends the next call. Only Conns in fastconn's poller
// relay (from Dial or a Listener, both c and dst); for others RelayTo is
// ReadPooled.
func (c *Conn) RelayTo(dst *Conn, pool *Pool) (moved int64, buf *[]byte, n int, err error) {
	pd := c.pd
	if pd == nil || dst.pd == nil || !pd.incref() {
		buf, n, err = c.ReadPooled(pool)
		return 0, buf, n, err
	}
	// The reference taken above keeps the descriptor open after the wait
	// ends, until the poller has let go of the relay (disarm).
	c.beforeRead()
	c.rpool, c.rbp, c.rn, c.rerr = pool, nil, 0, 0
	c.rdst, c.rmoved, c.rgot, c.rwake = dst, 0, false, &pd.r
	rerr := c.waitRead()
	c.disarm()
	pd.decref()
	c.rd.end()
	moved = c.rmoved
	if c.rgot {
		rerr = nil // the poller's result comes first
	}
	buf, c.rbp, c.rbuf, c.rpool, c.rdst, c.rwake = c.rbp, nil, nil, nil, nil, nil
	n, err = c.readResult(rerr)
	if n == 0 && buf != nil {
		pool.Put(buf)
		buf = nil
	}
	return moved, buf, n, err
}

// relayRead is RelayTo's RawConn callback, on the reader's goroutine: it
// takes the poller's result, or reads itself and arms the relay when there
// is nothing to read.
func (c *Conn) relayRead(fd uintptr) bool {
	for {
		switch c.rstate.Load() {
		case relayDone:
			c.rstate.Store(relayIdle)
			c.rgot = true
			return true
		case relayRunning:
			return false // a stale token: the poller is on it
		case relayArmed:
			// A token while armed: readiness the poller saw before the
			// relay was armed. Read it here.
			if !c.rstate.CompareAndSwap(relayArmed, relayIdle) {
				continue
			}
		}
		if c.readPooled(fd) {
			return true
		}
		c.rstate.Store(relayArmed)
		return false
	}
}

// disarm takes the relay back from the poller once the reader's wait ended,
// waiting out a copy in progress.
func (c *Conn) disarm() {
	for {
		switch s := c.rstate.Load(); s {
		case relayIdle:
			return
		case relayArmed, exchangeArmed, relayBusy:
			// An exchange still running (exchange.go) is left to end on
			// its own: its end then finds the reader gone. But an
			// Exchange call still reads the buffer: wait it out.
			if s == relayBusy && c.xcalling.Load() {
				runtime.Gosched()
				continue
			}
			if c.rstate.CompareAndSwap(s, relayIdle) {
				return
			}
		case relayRunning, exchangeRunning:
			runtime.Gosched()
		case relayDone:
			c.rstate.Store(relayIdle)
			c.rgot = true
			return
		}
	}
}

// finEvents are the poller's events for a peer's FIN or a socket's error.
const finEvents = syscall.EPOLLRDHUP | syscall.EPOLLHUP | syscall.EPOLLERR

// What relayClaim and exchangeClaim leave the caller to run.
const (
	runRelay    = 1 // relayRun
	runExchange = 2 // exchangeRun
)

// relayClaim is the poller's side, for a readable socket: it reports false
// if no relay is armed (the reader is woken instead), and in run what the
// poller is to run for a relay or an exchange it took: a batched first
// read (dispatch, batch.go), then relayRun's or exchangeRun's way.
func (c *Conn) relayClaim(events uint32) (handled bool, run int) {
	if events&finEvents != 0 && !c.xfin.Load() {
		c.xfin.Store(true) // for good, for an exchange's end (exchange.go)
	}
	s := c.rstate.Load()
	switch s {
	case relayIdle, relayDone:
		return c.wakeReader(), 0
	case exchangeArmed, exchangeRunning, relayBusy:
		return c.exchangeClaim(events)
	}
	if s == relayRunning && c.pd.state.Load()&1 == 0 {
		// Running while this poller is not: a pair's owner runs the relay
		// (pump; a socket is in one poller only, and the others run only
		// here). Have it read again before it arms the relay, or take the
		// relay if it armed it meanwhile. Woken instead, this socket's
		// waiter has nobody: the owner waits on its own socket's.
		c.rpend.Store(true)
		if !c.rstate.CompareAndSwap(relayArmed, relayRunning) {
			return true, 0
		}
		c.rpend.Store(false)
	} else if s != relayArmed || c.pd.state.Load()&1 != 0 || !c.rstate.CompareAndSwap(relayArmed, relayRunning) {
		return false, 0 // no relay, or Close began: the reader is woken
	}
	// A wakeup from the poller, as a reader's would be, for the batching
	// yield (see the package comment): without it a connection's first
	// read after a write stops yielding, finds nothing, and waits.
	pollWakeups.Add(1)
	return true, runRelay
}

// relayRun copies for a relay in state relayRunning, until the socket has
// nothing more (more: read until a read finds nothing, even after a short
// one) or the relay has to stop. fin says that the peer's FIN had come when
// the poller collected the socket's readiness (EPOLLRDHUP without an
// error): a pair relay then passes it on with the last bytes. batch is the
// poller whose batch runs the relay (batch.go), nil for any other caller.
func (c *Conn) relayRun(batch *poller, more, fin bool) {
	fd, dst, pool := uintptr(c.pd.fd), c.rdst, c.rpool
	for {
		b := pool.Get()
		r, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&(*b)[0])), uintptr(len(*b)), 0, 0, 0)
		n := int(r)
		send, flags, again := c.relayGot(batch, b, n, errno, fin)
		if !send {
			if again {
				continue
			}
			return
		}
		if !c.relaySent(batch, b, n, dst.sendNow((*b)[:n], flags), flags != 0, more) {
			return
		}
	}
}

// relayGot acts on one read of a running relay into b: n bytes, or errno.
// It reports send, with the flags to send them with, when the bytes are
// to be written to the destination (then relaySent); otherwise the relay
// took b back, and again says whether to read again.
func (c *Conn) relayGot(batch *poller, b *[]byte, n int, errno syscall.Errno, fin bool) (send bool, flags int, again bool) {
	switch {
	case errno == syscall.EINTR:
		c.rpool.Put(b)
		return false, 0, true
	case errno == syscall.EAGAIN:
		c.rpool.Put(b)
		return false, 0, c.rearm()
	case errno != 0:
		c.rpool.Put(b)
		c.rerr = errno
		c.relayStop(batch)
		return false, 0, false
	case n == 0: // the peer's FIN
		c.rpool.Put(b)
		if !c.rpair || !c.passFIN(c.rdst) {
			c.relayStop(batch)
		}
		return false, 0, false
	case n == len(*b):
		c.rbp, c.rn = b, n
		c.relayStop(batch)
		return false, 0, false
	}
	// With the FIN in (fin) and a read shorter than its buffer, these are
	// the last bytes before it: a short read takes all there is, and no
	// byte comes after a FIN. A pair relay then holds them in dst's socket
	// (MSG_MORE) and passes the FIN on at once: the shutdown sends bytes
	// and FIN in one segment, as HAProxy's send with MSG_MORE before its
	// shutdown does, so the peer is woken once and acknowledges both at
	// once, and the read that would find the FIN is saved. Bytes dst does
	// not take go to the owner, whose write sends what waits; if dst's own
	// FIN came first, the owner's close does.
	if fin && c.rpair && !c.rdst.reof.Load() {
		flags = syscall.MSG_MORE
	}
	return true, flags, false
}

// relaySent acts on the write of b's n bytes to the destination, sent of
// which went out; last says they were the bytes before the source's FIN
// (relayGot's MSG_MORE). It reports whether to read again.
func (c *Conn) relaySent(batch *poller, b *[]byte, n, sent int, last, more bool) bool {
	if sent < n {
		c.rn = copy(*b, (*b)[sent:n])
		c.rbp = b
		c.rmoved += int64(sent)
		c.relayStop(batch)
		return false
	}
	c.rpool.Put(b)
	c.rmoved += int64(n)
	if last {
		if !c.passFIN(c.rdst) {
			c.relayStop(batch)
		}
		return false
	}
	if !more {
		return c.rearm()
	}
	return true
}

// rearm arms the relay again once a read took all there was. It reports
// true, with the relay running again, when the poller saw readiness
// meanwhile (rpend): the caller reads again. Either this sees the
// poller's rpend, or the poller's CAS in relay sees the relay armed.
func (c *Conn) rearm() bool {
	if h := testHookRearm.Load(); h != nil {
		(*h)(c)
	}
	c.rstate.Store(relayArmed)
	if c.rpend.Load() && c.rstate.CompareAndSwap(relayArmed, relayRunning) {
		c.rpend.Store(false)
		return true
	}
	return false
}

// testHookRearm, if set, runs as a relay is about to be armed again after
// a read found nothing (tests hold it there).
var testHookRearm atomic.Pointer[func(*Conn)]

// relayStop ends the relay with its result and wakes the reader: at the
// end of batch's batch, if a batch runs the relay (see poller.wakeLater).
// The waiter is read first: once the state says done, the reader may take
// the result and reset the relay.
func (c *Conn) relayStop(batch *poller) {
	w := c.rwake
	c.rstate.Store(relayDone)
	if batch != nil {
		batch.wakeLater(w)
		return
	}
	w.wake()
}

// sendNow writes what of p the socket takes without waiting, for the
// poller's relay; a closed Conn takes nothing. An error stops it as a full
// buffer does: the reader's own Write meets the error again and reports
// it.
func (c *Conn) sendNow(p []byte, flags int) int {
	if !c.pd.incref() {
		return 0
	}
	sent, _ := sendAll(uintptr(c.pd.fd), p, flags)
	c.pd.decref()
	return sent
}
