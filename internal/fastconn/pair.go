package fastconn

import (
	"errors"
	"net"
)

// Relaying both directions of a connection for one waiting goroutine.
//
// RelayTo lets the poller copy one direction while its goroutine waits; a
// TCP proxy running one such goroutine per direction still pays for the
// second goroutine (its start, and a wakeup per FIN: the backend's FIN
// woke one goroutine to pass it on, the client's the other to close). A
// one-request connection through the TCP plane made four goroutine
// handoffs where HAProxy's event loop makes none, and the plane's CPU per
// connection was 1.09x HAProxy's (bench/RESULTS.md).
//
// RelayBoth arms both directions' relays at once, for one goroutine, and
// the poller passes the first FIN on itself (shutdown(2) of the other
// socket, as the goroutine would have): the goroutine wakes once, when the
// second FIN came, or when something else needs it (an error, a read that
// fills the buffer, a destination that cannot take a message whole, its
// deadline, Close).
//
// RelayBothFunc does the same with no goroutine at all: the wait's end is
// a call (PairDone), made by the poller when the relays end it, so that a
// proxy can close a one-request connection right there, as HAProxy's event
// loop does, and start it from the loop that accepted it.

// RelayResult is where one direction of RelayBoth stands when it returns.
type RelayResult struct {
	// Moved counts the bytes the relay wrote to the destination.
	Moved int64
	// EOF is set once the source sent its FIN: the destination was shut down
	// for writing, unless the other direction had ended first (then both
	// sockets are read to their FIN and the caller closes them).
	EOF bool
	// Buf[:N] are bytes read but not written: a read that filled the buffer
	// (perhaps the start of bulk data), or the part of a message the
	// destination could not take at once. The caller writes them and gives
	// Buf back to the pool.
	Buf *[]byte
	N   int
	// Err is the error that stopped the direction: the source's read, or
	// passing its FIN on.
	Err error
}

// RelayBoth relays a to b and b to a inside the poller, as two RelayTo
// calls would, while the calling goroutine waits once for both. It returns
// when both directions have sent their FIN, when one stopped with bytes or
// an error (its result says which), or when the wait ends on a's read
// deadline or Close (err; the results then say what moved meanwhile). A
// direction whose EOF an earlier call reported is not relayed again. Both
// Conns must be in fastconn's poller (from Dial or a Listener) and nobody
// else may read or write them meanwhile; for others it returns
// errors.ErrUnsupported at once.
func RelayBoth(a, b *Conn, pool *Pool) (ab, ba RelayResult, err error) {
	if err := a.startPair(b, pool, false); err != nil {
		return ab, ba, err
	}
	return a.endPair(a.pd.wait(&a.pd.r, (*pairWaiter)(a)))
}

// PairDone receives what RelayBothFunc's relays ended with, as RelayBoth
// returns it.
type PairDone interface {
	PairDone(ab, ba RelayResult, err error)
}

// RelayBothFunc is RelayBoth without a waiting goroutine: it returns at
// once, and done gets the results when RelayBoth would have returned
// them. When the relays ended the wait (err is nil), done runs on the
// goroutine that saw them end: the caller's, before RelayBothFunc returns,
// or the poller's, which must not block and stops while done runs. When
// a's read deadline or Close ended it, done runs on a goroutine of its own.
// If the relays cannot start (a Conn outside the poller, or closed), done
// runs before RelayBothFunc returns, with the error RelayBoth would
// return. A connection that takes one message each way and ends with both FINs
// then never needs a goroutine of its own while it waits, and the
// goroutine that started it can go on to the next one.
func RelayBothFunc(a, b *Conn, pool *Pool, done PairDone) {
	if err := a.startPair(b, pool, true); err != nil {
		done.PairDone(RelayResult{}, RelayResult{}, err)
		return
	}
	a.pdone = done
	a.pd.waitFunc((*pairWaiter)(a))
}

// startPair takes both descriptors' references and arms both relays, for
// the owner a; async says that no goroutine will wait (RelayBothFunc).
func (a *Conn) startPair(b *Conn, pool *Pool, async bool) error {
	if a.pd == nil || b.pd == nil {
		return errors.ErrUnsupported
	}
	if !a.pd.incref() {
		return a.mapClosed("read", net.ErrClosed)
	}
	if !b.pd.incref() {
		a.pd.decref()
		return a.mapClosed("read", net.ErrClosed)
	}
	// The references keep both descriptors open until the poller has let go
	// of the relays (disarm).
	a.armPair(b, pool, &a.pd.r)
	b.armPair(a, pool, &a.pd.r)
	a.ppeer, a.ppumped, a.perr = b, false, nil
	// b's answer to what was just written to it is likelier to be there
	// after the other runnable connections had their turn. Not when nobody
	// waits: the caller may be the loop accepting clients, which would go
	// to the back of the run queue (Gosched) once per connection.
	if !async {
		b.batchYield()
	}
	a.rd.begin()
	return nil
}

// endPair disarms both relays once the owner's wait ended with err, and
// collects their results.
func (a *Conn) endPair(err error) (ab, ba RelayResult, _ error) {
	b := a.ppeer
	a.rd.end()
	if a.perr != nil {
		err = a.perr
	}
	a.ppeer, a.perr = nil, nil
	a.disarm()
	b.disarm()
	b.pd.decref()
	a.pd.decref()
	ab, ba = a.pairResult(), b.pairResult()
	if ab.Buf != nil || ab.Err != nil || ba.Buf != nil || ba.Err != nil {
		err = nil // the poller's result comes first, as in RelayTo
	}
	return ab, ba, a.mapClosed("read", err)
}

// waitOver ends RelayBothFunc's wait.
func (w *pairWaiter) waitOver(err error) {
	a := (*Conn)(w)
	done := a.pdone
	a.pdone = nil
	done.PairDone(a.endPair(err))
}

// armPair arms c's relay to dst for RelayBoth, unless c's FIN came
// already; wake is the owner's waiter.
func (c *Conn) armPair(dst *Conn, pool *Pool, wake *waiter) {
	c.rpool, c.rbp, c.rbuf, c.rn, c.rerr = pool, nil, nil, 0, 0
	c.rdst, c.rmoved, c.rgot, c.rwake, c.rpair = dst, 0, false, wake, true
	c.rpend.Store(false)
	if !c.reof.Load() {
		c.rstate.Store(relayArmed)
	}
}

// pairWaiter is RelayBoth's readiness: a conversion of the owner, a.
type pairWaiter Conn

// ready, on the owner's goroutine, says whether RelayBoth is done waiting.
// The first time, it relays whatever b holds already, and a too if a is in
// the epoll instance: the sockets are edge-triggered, so bytes (or a FIN)
// that came before the relays were armed would mark neither ready again.
// A socket not yet in it needs no such read, since adding it reports the
// readiness it has; a client whose request was just read (ReadNow) has
// nothing more to say until it has the answer, and that read, which found
// nothing, was a system call per connection more than HAProxy makes.
func (w *pairWaiter) ready(uintptr) bool {
	a := (*Conn)(w)
	b := a.ppeer
	if !a.ppumped {
		a.ppumped = true
		if a.pd.watched.Load() {
			a.pump()
		}
		// With no goroutine waiting (RelayBothFunc) there was no yield, and
		// a b just dialled rarely has its answer yet: adding it to the epoll
		// instance (below) reports it when it comes, where a read now would
		// most often find nothing.
		if a.pdone == nil || b.pd.watched.Load() {
			b.pump()
		}
	}
	if (a.reof.Load() && b.reof.Load()) || a.rstate.Load() == relayDone || b.rstate.Load() == relayDone {
		return true
	}
	// The wait adds a to the epoll instance; b joins it here, only once its
	// relay has found nothing to read (the add reports readiness that came
	// since), so a connection whose backend answered at once never needs it.
	if b.rstate.Load() == relayArmed {
		if err := b.pd.watch(); err != nil {
			a.perr = err
			return true
		}
	}
	a.rd.beforeWait()
	return false
}

// pump runs c's armed relay on the caller's goroutine, reading until the
// socket has nothing more.
func (c *Conn) pump() {
	if c.pd.state.Load()&1 == 0 && c.rstate.CompareAndSwap(relayArmed, relayRunning) {
		c.relayRun(nil, true, false)
	}
}

// passFIN passes a pair relay's FIN on to dst (shutdown), and reports true,
// unless dst's own FIN came first: then both directions are done, and the
// relay stops to wake the owner (false), who closes both sockets without a
// shutdown. A failed shutdown stops the relay with its error.
func (c *Conn) passFIN(dst *Conn) bool {
	c.reof.Store(true)
	if dst.reof.Load() {
		return false
	}
	if !dst.pd.incref() {
		return false // closing: the owner is woken by the Close
	}
	errno := shutdownWrite(dst.pd.fd)
	dst.pd.decref()
	if errno != 0 {
		c.rerr = errno
		return false
	}
	c.rstate.Store(relayIdle)
	return true
}

// pairResult collects c's direction once RelayBoth's wait is over and the
// relay disarmed.
func (c *Conn) pairResult() RelayResult {
	r := RelayResult{Moved: c.rmoved, EOF: c.reof.Load()}
	if c.rgot {
		if c.rn > 0 {
			r.Buf, r.N = c.rbp, c.rn
		} else if c.rbp != nil {
			c.rpool.Put(c.rbp)
		}
		switch {
		case c.rerr == 0:
		case r.EOF: // passing the FIN on failed
			r.Err = c.rdst.opError("shutdown", c.rerr)
		default:
			r.Err = c.opError("read", c.rerr)
		}
	}
	c.rpool, c.rbp, c.rbuf, c.rn, c.rerr = nil, nil, nil, 0, 0
	c.rdst, c.rgot, c.rwake, c.rpair = nil, false, nil, false
	return r
}
