package fastconn

import (
	"fmt"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// batchedRelay is a relay, an exchange or a watch that one epoll_pwait
// found readable, while the poller makes its read (and a relay's write)
// with those of the others (dispatch).
type batchedRelay struct {
	c        *Conn
	exchange bool    // an exchange's read, into c.rbuf (exchange.go)
	ahead    bool    // a read ahead for c's watcher (readahead.go)
	b        *[]byte // a relay's read
	n        int     // bytes read, to write
	more     bool    // relayRun's more and fin
	fin      bool
	last     bool  // the write carries MSG_MORE before the FIN
	wrote    bool  // the write is a call of the batch (the destination's reference taken)
	call     int   // and its index
	res      int32 // the read's result: a count, or a negated errno
}

// batchCall is one system call of a batch: a send or a receive.
type batchCall struct {
	op    uint8
	fd    int
	p     []byte
	flags int
}

// dispatch acts on the n events epoll_pwait returned, as one batch: it
// wakes the waiters of the ready sockets, and makes every relay's and
// exchange's first read, and a read ahead for every watch whose watcher
// says how much it reads (readahead.go), at once (call: one
// io_uring_enter where the ring works, uring.go), then the writes that
// forward what the relays read, at once too. What follows in a relay (a
// write the destination did not take whole, a FIN to pass on, reading on
// after a FIN) is relayRun's usual way, with plain system calls; so is an
// exchange's (exchangeGot: the Exchanger writes the request), and a
// watcher's.
//
// The relays a batch took stay running until it comes to them, so nothing
// may wait for one meanwhile on the poller's goroutine; and ending a pair
// relay's wait does (endPair's disarm). So the readers a batch wakes are
// woken once it is over (wakeLater): those of the sockets it has no call
// for, and those of the relays it stopped.
func (p *poller) dispatch(n int) {
	if h := testHookBatch.Load(); h != nil {
		(*h)(p.events[:n])
	}
	k, used := 0, 0
	for i := range n {
		ev := &p.events[i]
		pd := fds.get(int(ev.Fd), uint32(ev.Pad))
		if pd == nil {
			continue // closed since: the number may already be another socket's
		}
		if ev.Events&writeEvents != 0 {
			pd.w.wake() // writers wait in a goroutine, never in waitFunc
		}
		if ev.Events&readEvents == 0 {
			continue
		}
		c := pd.conn
		if c == nil {
			p.wakeLater(&pd.r)
			continue
		}
		handled, run := c.relayClaim(ev.Events)
		switch {
		case run == runRelay:
			r := &p.relays[k]
			*r = batchedRelay{c: c, b: c.rpool.Get(), more: ev.Events&finEvents != 0,
				fin: ev.Events&(syscall.EPOLLRDHUP|syscall.EPOLLERR) == syscall.EPOLLRDHUP}
			p.calls[k] = batchCall{op: opRecv, fd: pd.fd, p: *r.b}
			k++
		case run == runExchange:
			c.xpend.Store(false)
			p.relays[k] = batchedRelay{c: c, exchange: true}
			p.calls[k] = batchCall{op: opRecv, fd: pd.fd, p: c.rbuf}
			k++
		case handled:
		case pd.r.async.Load() != nil && pd.claimAsync():
			// A waitFunc's test is this goroutine's now: read ahead for
			// it if it says how much, or test once the batch is over.
			room := min(pd.aheadRoom(), aheadMem-used)
			if room <= 0 {
				p.checkLater(pd)
				continue
			}
			if p.aheadBuf == nil {
				p.aheadBuf = make([]byte, aheadMem)
			}
			p.relays[k] = batchedRelay{c: c, ahead: true}
			p.aheads[k] = readAhead{b: p.aheadBuf[used : used+room], held: true}
			p.calls[k] = batchCall{op: opRecv, fd: pd.fd, p: p.aheads[k].b}
			used += room
			k++
		default:
			p.wakeLater(&pd.r)
		}
	}
	if k > 0 {
		p.runBatch(k)
	}
	p.wakeAll()
}

// runBatch makes the reads of the batch's k relays, exchanges and watches,
// then the relays' writes, and acts on each result.
func (p *poller) runBatch(k int) {
	p.call(k)
	for i := range k {
		p.relays[i].res = p.res[i] // the writes' results come next
	}
	m := 0
	for i := range k {
		r := &p.relays[i]
		if r.ahead || r.exchange {
			continue // once the relays are done (below)
		}
		n, errno := ringResult(r.res)
		send, flags, again := r.c.relayGot(p, r.b, n, errno, r.fin)
		if !send {
			if again {
				r.c.relayRun(p, r.more, r.fin)
			}
			r.c, r.b = nil, nil
			continue
		}
		r.n, r.last = n, flags != 0
		if dst := r.c.rdst; dst.pd.incref() {
			p.calls[m] = batchCall{op: opSend, fd: dst.pd.fd, p: (*r.b)[:n], flags: syscall.MSG_NOSIGNAL | flags}
			r.call, r.wrote = m, true
			m++
		}
	}
	if m > 0 {
		p.call(m)
	}
	for i := range k {
		r := &p.relays[i]
		if r.c == nil || r.ahead || r.exchange {
			continue
		}
		sent := 0
		if r.wrote {
			dst := r.c.rdst
			if res, _ := ringResult(p.res[r.call]); res > 0 {
				sent = res
				if sent < r.n {
					// The rest, as sendNow would have tried: a short
					// write with room left is rare (a signal).
					flags := 0
					if r.last {
						flags = syscall.MSG_MORE
					}
					more, _ := sendAll(uintptr(dst.pd.fd), (*r.b)[sent:r.n], flags)
					sent += more
				}
			}
			dst.pd.decref()
		}
		if r.c.relaySent(p, r.b, r.n, sent, r.last, r.more) {
			r.c.relayRun(p, r.more, r.fin)
		}
		*r = batchedRelay{}
	}
	// The exchanges and watches, whose Exchangers and watchers run
	// arbitrary code, now that no relay is held.
	for i := range k {
		r := &p.relays[i]
		if r.c == nil {
			continue
		}
		n, errno := ringResult(r.res)
		if r.exchange {
			if r.c.exchangeGot(n, errno) {
				r.c.exchangeRun()
			}
		} else {
			p.ahead(r.c, i, n, errno)
		}
		*r = batchedRelay{}
	}
	clear(p.calls[:k]) // no buffer kept from the collector
}

// ahead hands the read ahead of call i, n bytes or errno, to c's watcher,
// and tests its wait, which the batch owns (claimAsync).
func (p *poller) ahead(c *Conn, i, n int, errno syscall.Errno) {
	// With nothing read (a stale edge), the watcher's own TryRead finds
	// out.
	if errno != syscall.EAGAIN && errno != syscall.EINTR {
		a := &p.aheads[i]
		a.b, a.errno, a.eof = a.b[:n], errno, n == 0 && errno == 0
		c.ahead = a
		if h := testHookReadAhead.Load(); h != nil {
			(*h)(c)
		}
	}
	c.pd.checkAsync() // keeps what the watcher left (keepAhead)
	p.aheads[i] = readAhead{}
}

// wakeLater wakes w once the batch is over.
func (p *poller) wakeLater(w *waiter) {
	p.later = append(p.later, laterWake{w: w})
}

// checkLater tests pd's waitFunc, whose test the batch owns (claimAsync),
// once the batch is over.
func (p *poller) checkLater(pd *pollFD) {
	p.later = append(p.later, laterWake{pd: pd})
}

// laterWake is a wake, or a waitFunc's test, put off to the batch's end.
type laterWake struct {
	w  *waiter
	pd *pollFD
}

// wakeAll makes the wakes and tests the batch put off.
func (p *poller) wakeAll() {
	for i := range p.later {
		l := &p.later[i]
		if l.pd != nil {
			l.pd.checkAsync()
		} else {
			l.w.wake()
		}
		*l = laterWake{}
	}
	p.later = p.later[:0]
}

// call makes the batch's first n calls and leaves their results in p.res:
// through the ring for two or more, where one io_uring_enter replaces
// their system calls; one by one without a ring, and for a single call,
// which costs less as the plain system call than as the ring's entry.
func (p *poller) call(n int) {
	if p.ring == nil || n == 1 {
		for i := range n {
			c := &p.calls[i]
			trap := uintptr(syscall.SYS_RECVFROM)
			if c.op == opSend {
				trap = syscall.SYS_SENDTO
			}
			r, _, errno := syscall.RawSyscall6(trap, uintptr(c.fd), uintptr(unsafe.Pointer(unsafe.SliceData(c.p))), uintptr(len(c.p)), uintptr(c.flags), 0, 0)
			p.res[i] = int32(r)
			if errno != 0 {
				p.res[i] = -int32(errno)
			}
		}
		return
	}
	for i := range n {
		c := &p.calls[i]
		p.ring.add(c.op, c.fd, c.p, c.flags, uint64(i))
	}
	if err := p.ring.submit(); err != nil {
		panic(fmt.Sprintf("fastconn: poller: %v", err))
	}
	copy(p.res[:n], p.ring.res[:n])
}

// testHookBatch, if set, runs as a batch begins, with its events (tests
// hold the poller there).
var testHookBatch atomic.Pointer[func([]syscall.EpollEvent)]

// testHookReadAhead, if set, runs as the poller hands a read ahead to a
// Conn's watcher (tests count them).
var testHookReadAhead atomic.Pointer[func(*Conn)]

// ringResult splits an operation's result into a count and an errno.
func ringResult(res int32) (int, syscall.Errno) {
	if res < 0 {
		return 0, syscall.Errno(-res)
	}
	return int(res), 0
}
