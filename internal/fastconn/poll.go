package fastconn

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// fastconn's own poller, for the sockets Dial and Listener open.
//
// The runtime's poller would do, but only through internal/poll, whose
// registration (os.NewFile's fcntl) and whose close(2) are plain system
// calls, and so is net's accept4 and its setsockopt of TCP_NODELAY. A plain
// system call wakes sysmon when it sleeps, which it does whenever every P is
// idle: with one P (GOMAXPROCS=1) that is between most connections of a
// one-request-per-connection load. Woken by a system call, sysmon then
// polls every 20 µs for a millisecond: each wakeup a futex call and a thread
// switch on cores shared with the client and the backend. Measured with
// sysmon kept from its deep sleep (GODEBUG=schedtrace, for the measurement
// only), the HTTP plane with Connection: close went from 0.85x to 0.99x
// HAProxy's rate, 67.5 to 53.1 µs of CPU per connection (HAProxy 48).
//
// So the sockets fastconn opens live in an epoll instance of its own (one
// per P: getPoller), whose descriptor is the only one registered with the
// runtime's poller: when it is readable, one goroutine (poller.run) takes
// the ready sockets from it, with a raw epoll_pwait, and wakes the
// goroutines waiting on them, or copies for them (relay.go). Every
// call on those sockets, from accept4 to close, is a raw system call, and a
// socket joins the epoll instance only when a call first has to wait
// (watch). Measured (bench/RESULTS.md): Connection: close through the HTTP
// plane went from 0.80x to 0.95x HAProxy's rate, 76 to 69 µs of CPU per
// connection. A wakeup takes two epoll calls (the runtime's on the outer
// descriptor, then the drain) and a channel receive where the runtime parks
// on an atomic: 3-4% more CPU per keep-alive request on the machine of
// 2026-12-02, none measurable on that of 2026-12-04, where waking in
// readiness order (the runtime's poller wakes newest first) cut the HTTP
// plane's keep-alive p99 by a fifth.
//
// The nesting has a price that the peers pay: a socket's wakeup (a segment
// with data or a FIN) runs its entry's callback in this instance and then
// this instance's wakeup of its own watcher, the runtime's instance, in the
// softirq of whoever sent the segment: on loopback, the client's or the
// backend's own system call. 0.1-0.2 µs per wakeup (go run ./bench/nested),
// about 5% of what wrk and nginx spend per keep-alive request behind the
// TCP plane. Taking this instance out of the runtime's while run drains it
// removes that (measured), but adding an epoll instance to another checks
// every descriptor in it (the kernel's loop and wakeup-path checks), so the
// poller would pay O(connections) per sleep (2.8 µs with 100 sockets, 0.4
// ms with 10,000); a one-shot AIO poll of this instance instead (O(1), off
// its wait queue once it fires) took the peers' cost away but signals its
// eventfd from a kworker on the kernel of 2026-12-05, and the bench's rate
// did not move; changing the entry's event mask
// instead keeps the callback that costs; and a poller that sleeps in this
// instance, with a plain epoll_pwait (sysmon hands its P off) or a raw one
// (the P kept), cut the peers' cost but left the cores idle longer, and no
// version of it passed HAProxy's rate clearly, while timers and the runtime
// poller's descriptors would wait as it sleeps (bench/RESULTS.md).
//
// A wakeup is a token in a channel of capacity one per socket and direction
// (pollFD.r, pollFD.w), sent without blocking; a call takes any stale token
// before it tries the system call, so a token found after the call returned
// EAGAIN means readiness came after it (sockets are registered
// edge-triggered, as the runtime registers them). Deadlines are timers that
// mark the direction expired and send the token; Close marks the socket
// closing and sends both, and the descriptor is closed once no call is left
// in it, so a descriptor number is never reused under a call (the reference
// count internal/poll keeps for the same reason).

// pollEvents are the events a socket is registered for: readable,
// writable, the peer's FIN (EPOLLRDHUP), and edge-triggered (EPOLLET, bit
// 31, which package syscall declares as a negative int).
const pollEvents = syscall.EPOLLIN | syscall.EPOLLOUT | syscall.EPOLLRDHUP | 1<<31

// poller is the epoll instance and the goroutine that drains it.
type poller struct {
	epfd    int
	file    *os.File        // owns epfd in the runtime's poller
	rc      syscall.RawConn // file's
	events  [ringEntries]syscall.EpollEvent
	onReady func(fd uintptr) bool
	// ring makes the system calls of a batch (batch.go) as one
	// io_uring_enter (uring.go); nil where io_uring is unavailable, and
	// ringErr then says why: the calls are then made one by one.
	ring    *ring
	ringErr error
	res     [ringEntries]int32 // the batch's results: counts, or negated errnos
	relays  [ringEntries]batchedRelay
	calls   [ringEntries]batchCall
	later   []laterWake // wakes put off to the batch's end
	// aheads and aheadBuf are the reads ahead of a batch (readahead.go).
	aheads   [ringEntries]readAhead
	aheadBuf []byte
}

var (
	pollersOnce sync.Once
	pollers     []*poller
	pollerErr   error
)

// getPoller returns fd's poller, starting them the first time a socket
// needs one. There is one per P (GOMAXPROCS when first asked), each with
// its own goroutine, so that the copies their relays make (relay.go) spread
// over the Ps as the goroutines they replace would; a descriptor's number
// picks its poller.
func getPoller(fd int) (*poller, error) {
	pollersOnce.Do(func() {
		for range max(1, runtime.GOMAXPROCS(0)) {
			p, err := startPoller()
			if err != nil {
				pollerErr = err
				break
			}
			pollers = append(pollers, p)
		}
	})
	if len(pollers) == 0 {
		return nil, pollerErr
	}
	return pollers[fd%len(pollers)], nil
}

func startPoller() (*poller, error) {
	fd, _, errno := syscall.RawSyscall(syscall.SYS_EPOLL_CREATE1, syscall.EPOLL_CLOEXEC, 0, 0)
	if errno != 0 {
		return nil, os.NewSyscallError("epoll_create1", errno)
	}
	if err := syscall.SetNonblock(int(fd), true); err != nil {
		syscall.Close(int(fd))
		return nil, os.NewSyscallError("fcntl", err)
	}
	f := os.NewFile(fd, "fastconn-epoll") // registers epfd with the runtime's poller
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("fastconn: poller: %w", err)
	}
	p := &poller{epfd: int(fd), file: f, rc: rc}
	p.ring, p.ringErr = newRing()
	p.onReady = p.drain
	go p.run()
	return p, nil
}

// run waits for the epoll descriptor to be readable and drains it, for the
// life of the process.
func (p *poller) run() {
	for {
		if err := p.rc.Read(p.onReady); err != nil {
			panic(fmt.Sprintf("fastconn: poller: waiting on epoll: %v", err))
		}
	}
}

// drain is run's RawConn callback: it wakes the waiters of every ready
// socket (or runs its relay), and returns false (wait for the runtime's
// poller) once the epoll instance has no more.
func (p *poller) drain(epfd uintptr) bool {
	for {
		n, _, errno := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, epfd,
			uintptr(unsafe.Pointer(&p.events[0])), uintptr(len(p.events)), 0, 0, 0)
		switch errno {
		case 0:
		case syscall.EINTR:
			continue
		default:
			panic(fmt.Sprintf("fastconn: poller: epoll_pwait: %v", errno))
		}
		p.dispatch(int(n))
		// Fewer than asked for: the ready list is empty now, and whatever
		// is added to it makes epfd readable to the runtime's poller again.
		if int(n) < len(p.events) {
			return false
		}
	}
}

// readEvents and writeEvents are the epoll events that concern a socket's
// reader and its writer.
const (
	readEvents  = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLHUP | syscall.EPOLLERR
	writeEvents = syscall.EPOLLOUT | syscall.EPOLLHUP | syscall.EPOLLERR
)

// fdTable finds a socket's pollFD by descriptor number, without a lock:
// chunks of 1024 entries, made as descriptors need them, up to 4M.
type fdTable struct {
	mu     sync.Mutex // serialises making chunks
	chunks [4096]atomic.Pointer[[1024]atomic.Pointer[pollFD]]
}

var (
	fds     fdTable
	pollSeq atomic.Uint32
)

func (t *fdTable) slot(fd int, create bool) *atomic.Pointer[pollFD] {
	if fd < 0 || fd >= len(t.chunks)*1024 {
		return nil
	}
	c := &t.chunks[fd>>10]
	ch := c.Load()
	if ch == nil {
		if !create {
			return nil
		}
		t.mu.Lock()
		if ch = c.Load(); ch == nil {
			ch = new([1024]atomic.Pointer[pollFD])
			c.Store(ch)
		}
		t.mu.Unlock()
	}
	return &ch[fd&1023]
}

// get returns fd's pollFD if it is still the one registered as seq.
func (t *fdTable) get(fd int, seq uint32) *pollFD {
	s := t.slot(fd, false)
	if s == nil {
		return nil
	}
	if pd := s.Load(); pd != nil && pd.seq == seq {
		return pd
	}
	return nil
}

// pollFD is one socket in the poller: the syscall.RawConn and socket of a
// Conn that Dial or a Listener made.
type pollFD struct {
	fd   int
	seq  uint32
	epfd int32 // beside seq: pollFD, in a Conn, stays in its size class
	// gone is set for a descriptor another owner closes (a Listener's,
	// borrowed): destroy leaves it open, takes it out of the epoll instance
	// and closes gone, after which the owner may close it.
	gone chan struct{}
	// watched is set once the socket is in the epoll instance (watch).
	watched atomic.Bool
	// state is 1 once Close began, plus 2 for every call in progress.
	state atomic.Uint64
	r, w  waiter
	// conn is the Conn made on the socket, for its relay (relay.go); set
	// before the pollFD is published in the table, nil for a Listener's.
	conn *Conn
	// aw is the read direction's wait while waitFunc runs it.
	aw asyncWait
}

// newPolledConn makes a Conn on fd, a non-blocking socket, in the poller
// (in its epoll instance once a call must wait: watch), which closes fd
// when the Conn is closed. On failure fd is closed. The Conn and its pollFD
// are one allocation, and the pollFD is published in the descriptor table
// only once both are ready, so that pd.conn needs no atomic store: the two
// such stores per socket on fresh objects (each an XCHG, which waits for
// the object's zeroing to drain from the store buffer) were 0.85% of the
// TCP plane's CPU under perf.
func newPolledConn(fd int) (*Conn, error) {
	c := new(Conn)
	pd := &c.pfd
	s, err := pd.init(fd)
	if err != nil {
		closeFD(fd)
		return nil, err
	}
	c.initPolled(pd)
	pd.conn = c
	s.Store(pd)
	return c, nil
}

// registerBorrowed puts fd into the poller but leaves closing it to its
// owner, who must close the pollFD first.
func registerBorrowed(fd int) (*pollFD, error) {
	pd := &pollFD{gone: make(chan struct{})}
	s, err := pd.init(fd)
	if err != nil {
		return nil, err
	}
	s.Store(pd)
	return pd, nil
}

// init sets pd up for fd and returns the table slot to publish it in.
func (pd *pollFD) init(fd int) (*atomic.Pointer[pollFD], error) {
	p, err := getPoller(fd)
	if err != nil {
		return nil, err
	}
	s := fds.slot(fd, true)
	if s == nil {
		return nil, fmt.Errorf("fastconn: descriptor %d is beyond the poller's table", fd)
	}
	pd.fd, pd.seq, pd.epfd = fd, pollSeq.Add(1), int32(p.epfd)
	return s, nil
}

// watch adds the socket to the epoll instance, the first time a call must
// wait: like HAProxy, a connection whose calls never wait (a request
// already in the socket when it is accepted, a response that fits its
// buffer, then close) never costs an epoll_ctl, nor the epoll removal in
// its close. Adding reports the readiness the socket has at that moment,
// so readiness that came after the call's EAGAIN is not lost; if both
// directions get here at once, the one that adds reports it for both.
func (pd *pollFD) watch() error {
	if pd.watched.Load() || !pd.watched.CompareAndSwap(false, true) {
		return nil
	}
	ev := syscall.EpollEvent{Events: pollEvents, Fd: int32(pd.fd), Pad: int32(pd.seq)}
	_, _, errno := syscall.RawSyscall6(syscall.SYS_EPOLL_CTL, uintptr(pd.epfd), syscall.EPOLL_CTL_ADD,
		uintptr(pd.fd), uintptr(unsafe.Pointer(&ev)), 0, 0)
	if errno != 0 {
		pd.watched.Store(false)
		return os.NewSyscallError("epoll_ctl", errno)
	}
	return nil
}

// incref counts a call in progress; false once Close began.
func (pd *pollFD) incref() bool {
	for {
		s := pd.state.Load()
		if s&1 != 0 {
			return false
		}
		if pd.state.CompareAndSwap(s, s+2) {
			return true
		}
	}
}

// decref ends a call; the last one after Close closes the descriptor.
func (pd *pollFD) decref() {
	if pd.state.Add(^uint64(1)) == 1 {
		pd.destroy()
	}
}

// Close wakes every call in progress, which then fails with net.ErrClosed,
// and closes the descriptor when the last of them has returned.
func (pd *pollFD) Close() error {
	for {
		s := pd.state.Load()
		if s&1 != 0 {
			return net.ErrClosed
		}
		if pd.state.CompareAndSwap(s, s|1) {
			if s == 0 {
				pd.destroy()
			}
			break
		}
	}
	pd.r.wake()
	pd.w.wake()
	return nil
}

// destroy closes the descriptor. Closing it also takes it out of the epoll
// instance: nothing else holds a connection's socket (sockets are
// close-on-exec and never duplicated). A borrowed one is taken out here
// instead, before its owner closes it: a listening socket may be duplicated
// (proxy.Handoff passes it to another listener), and an epoll registration
// lives as long as its socket, not its descriptor. Left in, it would make
// the next registration of the same descriptor number fail (EEXIST).
func (pd *pollFD) destroy() {
	if s := fds.slot(pd.fd, false); s != nil {
		s.CompareAndSwap(pd, nil)
	}
	pd.r.stop()
	pd.w.stop()
	if pd.gone == nil {
		closeFD(pd.fd)
		return
	}
	if pd.watched.Load() {
		_, _, _ = syscall.RawSyscall6(syscall.SYS_EPOLL_CTL, uintptr(pd.epfd), syscall.EPOLL_CTL_DEL, uintptr(pd.fd), 0, 0, 0)
	}
	close(pd.gone)
}

// closeFD closes fd with a raw call: see the comment at the top of the file.
// Linux releases the descriptor even when close reports EINTR.
func closeFD(fd int) { _, _, _ = syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0) }

// Control runs f on the descriptor, which cannot be closed meanwhile.
func (pd *pollFD) Control(f func(fd uintptr)) error {
	if !pd.incref() {
		return net.ErrClosed
	}
	f(uintptr(pd.fd))
	pd.decref()
	return nil
}

// Read calls f until it returns true, waiting for the socket to be readable
// each time it returns false, as syscall.RawConn's Read does.
func (pd *pollFD) Read(f func(fd uintptr) bool) error { return pd.wait(&pd.r, readyFunc(f)) }

// Write is Read for writability.
func (pd *pollFD) Write(f func(fd uintptr) bool) error { return pd.wait(&pd.w, readyFunc(f)) }

// readiness is what wait calls each time the socket may be ready: a
// RawConn callback (readyFunc), or a Conn's own direction (connReader,
// connWriter), which a Conn passes without making a method value, which
// would be an allocation per Conn and direction.
type readiness interface {
	ready(fd uintptr) bool
}

type readyFunc func(fd uintptr) bool

func (f readyFunc) ready(fd uintptr) bool { return f(fd) }

func (pd *pollFD) wait(w *waiter, f readiness) error {
	if !pd.incref() {
		return net.ErrClosed
	}
	var err error
	for {
		w.take()
		// Checked after take (see turn): a token taken here never hides a
		// Close or a deadline.
		var done bool
		if err, done = pd.turn(w, f); done {
			break
		}
		<-w.tokens()
	}
	pd.decref()
	return err
}

// waitFunc is wait without a waiting goroutine: it tests f now and each
// time the direction is woken, on the waking goroutine (the poller, a
// deadline's timer, Close), and calls f.waitOver once, with what wait would
// have returned, as soon as a test ends the wait. When f's readiness ended
// it, waitOver runs where the test did, which may be before waitFunc
// returns; when a deadline or Close did (an error), on a goroutine of its
// own, except for a socket closed before the wait began, whose waitOver
// runs at once. Tests never run concurrently. Only the read direction
// (pd.r) waits so.
func (pd *pollFD) waitFunc(f asyncReadiness) {
	if !pd.incref() {
		f.waitOver(net.ErrClosed)
		return
	}
	pd.aw.f = f
	pd.aw.state.Store(asyncBusy)
	pd.r.async.Store(pd)
	pd.checkAsync()
}

// asyncReadiness is what waitFunc waits for, and what it calls at the end.
type asyncReadiness interface {
	readiness
	waitOver(err error)
}

// asyncWait is a waitFunc in progress. A wake while a test runs makes the
// tester test again, so no wake is lost and no two tests overlap.
type asyncWait struct {
	state atomic.Int32
	f     asyncReadiness
	// lazy makes the first test wait for a wake unless one came since a
	// wait last took its token: for a wait that starts right after a
	// request went out, whose answer cannot be there yet unless the poller
	// saw it come (WatchReply).
	lazy bool
}

const (
	asyncIdle  int32 = iota // waiting for a wake
	asyncBusy               // a test runs
	asyncAgain              // a test runs, and a wake came meanwhile
	asyncOver               // the wait ended
)

// wakeAsync runs a test on the caller's goroutine, or has the one running
// test again.
func (pd *pollFD) wakeAsync() {
	if pd.claimAsync() {
		pd.checkAsync()
	}
}

// claimAsync is wakeAsync's first half, which the poller's batch also
// uses: it reports true once the caller owns a test of pd's waitFunc
// (asyncBusy), to run with checkAsync, and false when there is nothing to
// test or a test running will test again.
func (pd *pollFD) claimAsync() bool {
	a := &pd.aw
	for {
		switch a.state.Load() {
		case asyncIdle:
			if a.state.CompareAndSwap(asyncIdle, asyncBusy) {
				return true
			}
		case asyncBusy:
			if a.state.CompareAndSwap(asyncBusy, asyncAgain) {
				return false
			}
		default:
			return false
		}
	}
}

// checkAsync tests until the wait ends or a test finds it should go on
// with no wake having come meanwhile.
func (pd *pollFD) checkAsync() {
	a := &pd.aw
	for {
		var (
			err  error
			done bool
		)
		if a.lazy && !pd.r.takeToken() {
			// Nothing reported: only make sure the poller reports what
			// comes. A wake from here on makes the loop test again.
			a.lazy = false
			err = pd.watch()
			done = err != nil
		} else {
			a.lazy = false
			err, done = pd.turn(&pd.r, a.f)
		}
		if c := pd.conn; c != nil && c.ahead != nil {
			c.keepAhead() // before the Conn goes to whoever runs next
		}
		if done {
			a.state.Store(asyncOver)
			pd.r.async.Store(nil)
			f := a.f
			a.f = nil
			pd.decref()
			if err != nil {
				// A deadline's timer or a Close ended the wait, on a
				// goroutine that may hold locks the end needs.
				go f.waitOver(err)
				return
			}
			f.waitOver(nil)
			return
		}
		if a.state.CompareAndSwap(asyncBusy, asyncIdle) {
			return
		}
		a.state.Store(asyncBusy)
	}
}

// turn is one turn of a wait in direction w: it reports whether the wait
// is over, and with what, or adds the socket to the epoll instance for the
// next readiness. Close and deadlines set their flag before they wake, so
// a turn taken after their wake sees them.
func (pd *pollFD) turn(w *waiter, f readiness) (error, bool) {
	switch {
	case pd.state.Load()&1 != 0:
		return net.ErrClosed, true
	case w.expired.Load():
		return os.ErrDeadlineExceeded, true
	case f.ready(uintptr(pd.fd)):
		return nil, true
	}
	if err := pd.watch(); err != nil {
		return err, true
	}
	return nil, false
}

// SetDeadline sets both directions' deadlines.
func (pd *pollFD) SetDeadline(t time.Time) error {
	if err := pd.SetReadDeadline(t); err != nil {
		return err
	}
	return pd.SetWriteDeadline(t)
}

// SetReadDeadline makes reads waiting or starting after t fail with
// os.ErrDeadlineExceeded; the zero time clears it.
func (pd *pollFD) SetReadDeadline(t time.Time) error { return pd.setDue(&pd.r, monoTime(t)) }

// SetWriteDeadline is SetReadDeadline for writes.
func (pd *pollFD) SetWriteDeadline(t time.Time) error { return pd.setDue(&pd.w, monoTime(t)) }

// setDue sets w's deadline to due, in monoTime's terms (0 clears it).
func (pd *pollFD) setDue(w *waiter, due int64) error {
	if pd.state.Load()&1 != 0 {
		return net.ErrClosed
	}
	w.setDue(time.Duration(due))
	return nil
}

// waiter is one direction of a pollFD: its wakeup token and its deadline.
type waiter struct {
	// ready holds the token's channel (capacity 1), ch, once a call first
	// has to wait: most directions of most connections never do (a
	// backend's reads while the poller relays them, writes the socket takes
	// whole), and a channel is an allocation, three per connection through
	// the TCP plane. Until then a wake sets pending, which the channel gets
	// as a token when it is made (see wake for why none is lost).
	ready atomic.Pointer[chan struct{}]
	ch    chan struct{}
	// async is the socket whose waitFunc waits in this direction: a wake
	// runs its test instead of sending a token.
	async   atomic.Pointer[pollFD]
	pending atomic.Bool
	expired atomic.Bool

	mu sync.Mutex // guards the deadline below
	// due is the deadline on Mono's clock; 0 for none.
	// Kept on the monotonic clock, as the timer is, so that the timer
	// never fires before due; the runtime's poller converts deadlines the
	// same way.
	due   time.Duration
	timer *time.Timer
}

// wake sends the token unless one is waiting already. Before the channel
// exists it sets pending and looks again; the waiter publishes the channel
// and then takes pending: of the two orders, either this sees the channel
// or the waiter sees pending.
func (w *waiter) wake() {
	if pd := w.async.Load(); pd != nil {
		pd.wakeAsync()
		return
	}
	if h := testHookWakeToken.Load(); h != nil {
		(*h)(w)
	}
	w.token()
	// A waitFunc that began meanwhile may have looked for a token before
	// this one came, and now waits for wakeAsync alone: without this, an
	// answer that came on another P's poller as a WatchReply began was
	// never seen (a churn test's GET waited out its client's 10 s). A test
	// too many is harmless.
	if pd := w.async.Load(); pd != nil {
		pd.wakeAsync()
	}
}

// testHookWakeToken, if set, runs in wake between finding no waitFunc and
// leaving the token: only a test sets it, to hold a wakeup there.
var testHookWakeToken atomic.Pointer[func(*waiter)]

// token leaves the wakeup as a token for the direction's next call.
func (w *waiter) token() {
	p := w.ready.Load()
	if p == nil {
		w.pending.Store(true)
		if p = w.ready.Load(); p == nil {
			return
		}
	}
	select {
	case *p <- struct{}{}:
	default:
	}
}

// takeToken takes a token readiness left, and reports whether there was
// one.
func (w *waiter) takeToken() bool {
	p := w.ready.Load()
	if p == nil {
		return w.pending.Swap(false)
	}
	select {
	case <-*p:
		return true
	default:
		return false
	}
}

// take drops a token that readiness before the coming attempt left.
func (w *waiter) take() {
	p := w.ready.Load()
	if p == nil {
		w.pending.Store(false)
		return
	}
	select {
	case <-*p:
	default:
	}
}

// tokens returns the token channel, making it the first time: only the
// direction's one waiting call does.
func (w *waiter) tokens() chan struct{} {
	if p := w.ready.Load(); p != nil {
		return *p
	}
	w.ch = make(chan struct{}, 1)
	w.ready.Store(&w.ch)
	if w.pending.Swap(false) {
		// Without blocking: a wake that saw the channel just now may have
		// filled it, and one token is all a waiter needs.
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
	return w.ch
}

// setDue sets the deadline to due on Mono's clock (0 clears it).
func (w *waiter) setDue(due time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if due == 0 {
		w.due = 0
		w.expired.Store(false)
		if w.timer != nil {
			w.timer.Stop()
		}
		return
	}
	d := due - time.Duration(monoNow())
	if d <= 0 {
		w.due = 0
		if w.timer != nil {
			w.timer.Stop()
		}
		w.expired.Store(true)
		w.wake()
		return
	}
	w.due = due
	w.expired.Store(false)
	if w.timer == nil {
		w.timer = time.AfterFunc(d, w.fire)
	} else {
		w.timer.Reset(d)
	}
}

// fire is the deadline timer's function. A timer that fired for an earlier
// deadline, while setDeadline moved it, finds due later than now (or
// cleared) and does nothing: the timer's new run will come.
func (w *waiter) fire() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.due != 0 && time.Duration(monoNow()) >= w.due {
		w.due = 0
		w.expired.Store(true)
		w.wake()
	}
}

// stop stops the deadline timer of a closed socket.
func (w *waiter) stop() {
	w.mu.Lock()
	if w.timer != nil {
		w.timer.Stop()
	}
	w.due = 0
	w.mu.Unlock()
}
