package proxy

import (
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// The connection cap (--max-conns), as HAProxy's global maxconn: one
// budget of client connections shared by both data planes, the TCP
// plane's service ports and the HTTP plane's listeners (HTTP-mode service
// ports and --http). At the cap the accept loops of both stop accepting,
// so new connections wait in the listen backlog (the kernel completes
// their handshakes) rather than being accepted and closed, and accepting
// resumes as connections end, on whichever plane. Without it a flood on
// one port took every descriptor of the process, and then no other port,
// nor the admin and DNS-over-TCP listeners, could accept; with a cap per
// plane, a flood of HTTP clients could still take the descriptors the TCP
// plane's cap was derived to leave free.

// Deriving the default cap from RLIMIT_NOFILE, as HAProxy derives its global
// maxconn (compute_ideal_maxconn): each proxied connection holds two sockets
// (an HTTP client's, the backend connection its request is on) and, moving
// bulk data, a splice pipe (two descriptors) per direction; as HAProxy
// does (maxpipes = maxconn/4), count half a descriptor per connection for
// pipes. A pipe is only an optimisation: without one, fastconn.Splice
// copies. The reserve keeps descriptors for everything else: listeners,
// admin and DNS connections, health probes, Marathon and ZooKeeper, and
// the HTTP plane's pooled backend connections left idle between requests
// (closed after httpproxy.Config.PoolIdleTimeout).
const (
	// fdReserveMin is the smallest reserve, for small limits such as 1024.
	fdReserveMin = 256
	// fdReserveDiv: the reserve is at least 1/fdReserveDiv of the limit.
	fdReserveDiv = 8
	// fdLimitMax caps the limit the default is derived from, as HAProxy's
	// DEFAULT_MAXFD: some systems set the hard limit to a billion, and the
	// cap should still mean something.
	fdLimitMax = 1 << 20
	// minDefaultMaxConns is the default's floor, as HAProxy's
	// DEFAULT_MAXCONN: too few descriptors then fail accepts (EMFILE, with
	// a backoff) rather than pausing at an absurdly low cap.
	minDefaultMaxConns = 100
)

// DefaultMaxConns is the connection cap both data planes share when
// --max-conns (NewConnLimit's maxConns, TCPConfig.MaxConns) is 0: derived
// from the process's descriptor limit (RLIMIT_NOFILE, which the Go runtime
// raises to the hard limit at start), keeping a reserve of an eighth of it
// (at least 256) for everything else, and counting 2.5 descriptors per
// connection (two sockets and, on average, half a splice pipe). With a
// limit of 1024 that is 307; with 65536, 22937; with 1048576, 367001.
func DefaultMaxConns() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return minDefaultMaxConns
	}
	return maxConnsFor(lim.Cur)
}

// maxConnsFor is DefaultMaxConns for a descriptor limit of nofile.
func maxConnsFor(nofile uint64) int {
	n := int64(min(nofile, fdLimitMax))
	reserve := max(fdReserveMin, n/fdReserveDiv)
	return int(max(2*(n-reserve)/5, minDefaultMaxConns))
}

// ConnLimitStatus is the state of a connection cap (ConnLimit).
type ConnLimitStatus struct {
	// Max is the cap (--max-conns, or the derived default).
	Max int64 `json:"max_conns"`
	// Open is the client connections open now on every listener that
	// shares the cap (in pacer: every service port of both planes and the
	// --http listener), including those an accept loop is taking this
	// moment.
	Open int64 `json:"open"`
	// Limited is set from the moment the cap is reached (accepting paused)
	// until no accept loop waits for room and the open connections are
	// down to LowMark: during a flood accepting pauses and resumes with
	// every connection that ends, and this says "at the cap" for the whole
	// episode.
	Limited bool `json:"limited"`
	// LowMark is where a Limited episode may end: 90% of Max (at most
	// Max-1).
	LowMark int64 `json:"low_mark"`
	// Reached counts the episodes since start.
	Reached uint64 `json:"reached_total"`
}

// ConnLimit counts open client connections against a cap, for the accept
// loops of every listener that shares it: the TCP plane's (TCPConfig) and
// the HTTP plane's (httpproxy.Config). A loop waits for room before it
// accepts (WaitBelow), takes a slot for each connection it accepted
// (Acquire), and the connection gives it back when it ends (Release). The
// accept path takes a slot with a compare-and-swap and a connection
// gives it back with an add: no lock, no allocation. Only at the cap do
// loops wait, in two kinds: takers (Acquire), which hold a connection
// accepted before the cap was reached and will use a freed slot at once,
// and loops waiting for room before they accept at all (WaitBelow), which
// may find no connection pending on their port. A freed slot wakes one
// taker if there is any (a token); otherwise every loop waiting for room
// (a broadcast), since any of them may be the one whose port has a client
// waiting. Waking every loop of every port for each slot instead was a
// herd of ports times GOMAXPROCS, each then taking a connection it held
// unserved.
type ConnLimit struct {
	max, low int64
	log      *zap.Logger

	open atomic.Int64
	// waiters counts the accept loops in await, takers those of them in
	// Acquire's: whoever frees a slot while there are any must wake one.
	waiters, takers atomic.Int32
	// limited is set while an episode lasts (ConnLimitStatus.Limited);
	// changed under mu.
	limited atomic.Bool
	reached atomic.Uint64

	// token carries one token per slot freed while takers wait.
	token chan struct{}

	mu sync.Mutex
	// room is closed, and replaced, when a slot frees and no taker waits:
	// it wakes every loop waiting for room.
	room chan struct{}
	// since is when the episode began.
	since time.Time
}

// wakeTokens bounds the tokens waiting in ConnLimit.token: more slots freed
// at once than that wake takers that are already awake anyway.
const wakeTokens = 1024

// NewConnLimit returns a cap of maxConns connections; 0 or less means
// DefaultMaxConns. Episodes at the cap are logged to log (nil: not logged).
func NewConnLimit(maxConns int, log *zap.Logger) *ConnLimit {
	if maxConns <= 0 {
		maxConns = DefaultMaxConns()
	}
	if log == nil {
		log = zap.NewNop()
	}
	m := int64(maxConns)
	return &ConnLimit{max: m, low: max(m-max(m/10, 1), 0), log: log,
		token: make(chan struct{}, wakeTokens), room: make(chan struct{})}
}

// below reports whether the cap leaves room for another connection; an
// accept loop asks before it waits for one, so that a loop does not take a
// connection it may not serve.
func (l *ConnLimit) below() bool { return l.open.Load() < l.max }

// take counts a connection the accept batch took while below the cap, as
// it looked a moment before (below): unlike tryAcquire it never fails, so
// looking for more pending connections does not hold a slot, which another
// loop would take for the cap reached. The cap may so be passed by one
// connection per accept loop at most.
func (l *ConnLimit) take() { l.open.Add(1) }

// tryAcquire takes a slot if one is free.
func (l *ConnLimit) tryAcquire() bool {
	for {
		n := l.open.Load()
		if n >= l.max {
			return false
		}
		if l.open.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Acquire takes a slot for a connection the caller accepted, waiting for
// one at the cap until stop or quit is closed (false then: the caller
// closes the connection). Its fast path is a compare-and-swap.
func (l *ConnLimit) Acquire(stop, quit <-chan struct{}) bool {
	return l.tryAcquire() || l.awaitSlot(stop, quit)
}

// awaitSlot is Acquire's slow path. A taker that stops waiting (its
// listener closed) passes on the wakeup Release may have sent it as it
// left: Release wakes one taker rather than the loops waiting for room,
// which then waited, with room left, for the next slot freed.
func (l *ConnLimit) awaitSlot(stop, quit <-chan struct{}) bool {
	l.takers.Add(1)
	ok := l.await(true, stop, quit)
	// Uncounted first: a Release that frees a slot after the check below
	// sees no taker here, and wakes the others itself.
	l.takers.Add(-1)
	if !ok && l.below() {
		l.wake()
	}
	return ok
}

// WaitBelow waits until the cap leaves room, without taking it, or until
// stop or quit is closed (false then). An accept loop calls it before it
// accepts: at the cap new connections then wait in its listen backlog. It
// does not take the room, so that a loop with no client pending holds no
// slot another plane's waiting client needs. Its fast path is a load.
func (l *ConnLimit) WaitBelow(stop, quit <-chan struct{}) bool {
	return l.below() || l.await(false, stop, quit)
}

// await is the slow path of Acquire (take) and WaitBelow. It counts itself
// a waiter before it checks for room: release frees the slot before it
// looks for waiters, so either the check here sees the slot or release
// sees the waiter and wakes it. A token whose slot another loop took first
// only sends its taker back to wait. A taker that got its slot passes the
// wakeup on to the loops waiting for room if room is left: a token may
// have been meant for a slot it did not need.
func (l *ConnLimit) await(take bool, stop, quit <-chan struct{}) bool {
	ready := l.below
	if take {
		ready = l.tryAcquire // counted in takers by awaitSlot
	}
	l.waiters.Add(1)
	l.mu.Lock()
	l.startEpisode()
	room := l.room
	l.mu.Unlock()
	defer l.leave()
	for !ready() {
		var wake <-chan struct{} = room
		if take {
			wake = l.token
		}
		select {
		case <-wake:
		case <-stop:
			return false
		case <-quit:
			return false
		}
		if !take {
			l.mu.Lock()
			room = l.room
			l.mu.Unlock()
		}
	}
	if take && l.below() {
		l.broadcastRoom()
	}
	return true
}

// broadcastRoom wakes every loop waiting for room.
func (l *ConnLimit) broadcastRoom() {
	l.mu.Lock()
	close(l.room)
	l.room = make(chan struct{})
	l.mu.Unlock()
}

// leave ends a wait; the last waiter to leave ends the episode if the open
// connections are down to the low mark (release may have seen it still
// waiting, and left that to it).
func (l *ConnLimit) leave() {
	if l.waiters.Add(-1) == 0 && l.limited.Load() && l.open.Load() <= l.low {
		l.endEpisode()
	}
}

// Release gives a slot back and wakes the loops waiting for one. With none
// waiting the demand is below the cap again, and the episode ends once the
// open connections are down to the low mark too.
func (l *ConnLimit) Release() {
	n := l.open.Add(-1)
	if l.wake() {
		return
	}
	if n <= l.low && l.limited.Load() {
		l.endEpisode()
	}
}

// wake wakes the loops waiting for a slot just freed: one taker if there
// is any, otherwise every loop waiting for room. It reports whether any
// loop waits.
func (l *ConnLimit) wake() bool {
	if l.waiters.Load() == 0 {
		return false
	}
	if l.takers.Load() > 0 {
		select {
		case l.token <- struct{}{}:
		default: // wakeTokens takers are waking already
		}
		return true
	}
	l.broadcastRoom()
	return true
}

// startEpisode logs the first time of an episode that a loop waits: once,
// not per connection. Called with mu held.
func (l *ConnLimit) startEpisode() {
	if l.limited.Load() {
		return
	}
	l.limited.Store(true)
	l.reached.Add(1)
	l.since = time.Now()
	l.log.Warn("connection cap reached; new connections wait in the listen backlog until some close (raise --max-conns, and the descriptor limit with it, if this load is expected)",
		zap.Int64("max_conns", l.max))
}

// endEpisode ends the episode, unless a loop started waiting again.
func (l *ConnLimit) endEpisode() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.limited.Load() || l.waiters.Load() > 0 {
		return
	}
	l.limited.Store(false)
	l.log.Info("connections below the cap again", zap.Int64("max_conns", l.max), zap.Int64("open", l.open.Load()),
		zap.Duration("at_cap_for", time.Since(l.since).Round(time.Millisecond)))
}

// Status reports the cap and how close to it the connections are.
func (l *ConnLimit) Status() ConnLimitStatus {
	return ConnLimitStatus{Max: l.max, Open: l.open.Load(), Limited: l.limited.Load(), LowMark: l.low, Reached: l.reached.Load()}
}
