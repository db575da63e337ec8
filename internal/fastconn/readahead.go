package fastconn

import (
	"bytes"
	"io"
	"syscall"
)

// Reading a watched answer ahead, in the poller's batch.
//
// A WatchReply's watcher reads the answer with TryRead when the poller
// reports the socket readable: one system call per answer, made alone. A
// watcher that says how much its next TryRead asks for (ReadRoom) lets the
// poller make that read itself, beside the other reads of its batch in one
// io_uring_enter (batch.go), into memory of the poller's; the watcher's
// TryRead then copies from there (a few hundred bytes, against a system
// call of over a microsecond where entering the kernel flushes the TLB:
// uring.go). The read asks for no more than ReadRoom, so the first TryRead
// takes it all. Whatever a test leaves (one that ended on a deadline or
// Close before it read) is copied to the heap before the poller lets the
// Conn go, and the next TryRead or Read returns it first.

// A ReadAheadWatcher is a ReadWatcher that tells the poller how many
// bytes its next TryRead will ask for.
type ReadAheadWatcher interface {
	ReadWatcher
	// ReadRoom is the length of the buffer the next TryRead is given, or
	// 0 when that is not known.
	ReadRoom() int
}

// readAhead is what the poller read for a Conn's next TryRead or Read.
type readAhead struct {
	b     []byte        // bytes not yet taken
	errno syscall.Errno // the read's error, once b is taken (never EAGAIN: nothing is kept then)
	eof   bool          // the read found the peer's FIN
	held  bool          // b is the poller's memory, valid only during its batch
}

// aheadMem is the memory a poller reads ahead into during one batch.
const aheadMem = 256 << 10

// takeAhead takes what the poller read ahead for c into p: ok is false if
// nothing is kept; otherwise a count, or the read's errno, or neither for
// the peer's FIN.
func (c *Conn) takeAhead(p []byte) (n int, errno syscall.Errno, ok bool) {
	a := c.ahead
	if a == nil {
		return 0, 0, false
	}
	if len(a.b) > 0 {
		n = copy(p, a.b)
		a.b = a.b[n:]
		if len(a.b) == 0 && a.errno == 0 && !a.eof {
			c.ahead = nil
		}
		return n, 0, true
	}
	c.ahead = nil
	return 0, a.errno, true
}

// aheadResult is Read's return for what takeAhead took.
func (c *Conn) aheadResult(n int, errno syscall.Errno) (int, error) {
	switch {
	case errno != 0:
		return 0, c.opError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// keepAhead moves what c's watcher left of a read ahead from the poller's
// memory to the heap, before the poller lets c go.
func (c *Conn) keepAhead() {
	if a := c.ahead; a != nil && a.held {
		c.ahead = &readAhead{b: bytes.Clone(a.b), errno: a.errno, eof: a.eof}
	}
}

// aheadRoom is how much to read ahead for pd's waitFunc, which the caller
// owns (claimAsync): 0 unless it is a WatchReply whose watcher tells.
func (pd *pollFD) aheadRoom() int {
	w, ok := pd.aw.f.(*connWatch)
	if !ok || pd.state.Load()&1 != 0 {
		return 0
	}
	if rw, ok := w.rwatch.(ReadAheadWatcher); ok {
		return rw.ReadRoom()
	}
	return 0
}
