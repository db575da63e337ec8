package fastconn

import (
	"sync"
	"sync/atomic"
	"time"
)

// Deadlines, set lazily.
//
// A server sets a connection's deadlines several times per request:
// fasthttp, for each keep-alive request, moves the read deadline to the
// idle timeout, then to the read timeout once the request starts, and the
// write deadline before the response. Each is a timer update in the
// runtime's poller, and in HTTP keep-alive through pacer they were 3% of the
// CPU (perf), for deadlines that almost never fire: the request is usually
// in the socket already, and the response fits in its buffer.
//
// So a Conn records the deadline asked for and gives it to the poller only
// when it matters: before a call has to wait for the poller, when a
// deadline moves later than the one armed (an armed deadline that passed
// would fail the next call at once), when it is cleared, and at once when
// a call is already waiting (another goroutine moves the deadline of a
// parked Read) or when it lies in the past (it must fail calls now). When
// it arms a deadline, it arms it a sixteenth of its timeout late, so that
// the next few requests, asking for nearly the same time, find it armed
// already. The contract that differs from a net.Conn's: a deadline ends a
// wait up to 1/16 of its timeout after the time asked for, never before
// it; and a call that need not wait may still succeed after its deadline
// passed, as long as no wait is armed to have ended.
//
// Times are kept as nanoseconds on Mono's clock (monoTime, clock.go):
// converting a deadline made from time.Now reads no clock, and comparing
// with now reads it once.
type deadline struct {
	// want is the deadline asked for, in monoTime; 0 means none.
	want atomic.Int64
	// armed is what the poller has (0: none), armedFor the want it was
	// armed for. Written under mu only.
	armed, armedFor atomic.Int64
	// busy is set while a call in this direction runs.
	busy atomic.Bool
	mu   sync.Mutex
	// sock and read say whose deadline this is: sock's read deadline, or
	// its write deadline.
	sock socket
	read bool
	// applied counts the deadlines given to the poller, for tests.
	applied atomic.Int64
}

// monoTime converts t to nanoseconds on Mono's clock (MonoOf); 0 is kept
// for "none", so t == monoBase reads as a nanosecond before it.
func monoTime(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	if m := int64(MonoOf(t)); m != 0 {
		return m
	}
	return -1
}

// monoNow is the monotonic clock in monoTime's terms: one vDSO call. It
// also moves seenNow forward (two calls racing may leave the earlier
// reading there, which is still a time that has passed).
func monoNow() int64 {
	n := int64(Mono())
	if n > seenNow.Load() {
		seenNow.Store(n)
	}
	return n
}

// seenNow is a recent monoNow reading: a time that has surely passed,
// for store's check of a deadline in the past, without reading the clock.
var seenNow atomic.Int64

// set gives the poller the deadline m (monoTime; 0 for none).
func (d *deadline) set(m int64) error {
	if pd, ok := d.sock.(*pollFD); ok {
		w := &pd.w
		if d.read {
			w = &pd.r
		}
		return pd.setDue(w, m)
	}
	t := time.Time{}
	if m != 0 {
		t = monoBase.Add(time.Duration(m))
	}
	if d.read {
		return d.sock.SetReadDeadline(t)
	}
	return d.sock.SetWriteDeadline(t)
}

// store records t as the deadline asked for, and arms it at once if a call
// is waiting, or if t is earlier than the one armed (or none is) and has
// surely passed: before a recent clock reading (seenNow). A deadline in
// the past that the check misses (one set for a moment after that reading)
// is armed when a call first waits, which the contract above allows; the
// check is for deadlines such as time.Unix(1, 0), set to stop a copy before
// its next read. Reading the clock here was 13% of the HTTP plane's clock
// readings in keep-alive, where fasthttp moves the read deadline between
// its idle and read timeouts on every request.
func (d *deadline) store(t time.Time) {
	w := monoTime(t)
	d.want.Store(w)
	// Checked after the store: a call starting now either sees w, or was
	// running already and is seen here (both may apply it; the last apply
	// under mu reads the newest want).
	if d.busy.Load() || (w != 0 && d.earlier(w) && w <= seenNow.Load()) {
		d.apply()
	}
}

// earlier reports whether w would end a wait before the armed deadline
// does: true when none is armed.
func (d *deadline) earlier(w int64) bool {
	af := d.armedFor.Load()
	return af == 0 || w < af
}

// begin marks a call in this direction running and arms the deadline if
// the armed one could fail it wrongly: a cleared deadline, or one asked
// later than what is armed. With none armed, nothing can fail the call
// wrongly, and a deadline that has passed was armed by store: the call
// arms one only if it has to wait (beforeWait). A connection whose calls
// never wait, as a one-request connection's often do not, never arms a
// timer.
func (d *deadline) begin() {
	d.busy.Store(true)
	w, a := d.want.Load(), d.armed.Load()
	if a != 0 && (w == 0 || w > a) {
		d.apply()
	}
}

// end marks the call finished.
func (d *deadline) end() { d.busy.Store(false) }

// beforeWait arms a deadline asked earlier than the one armed, or any if
// none is, before the call waits in the poller.
func (d *deadline) beforeWait() {
	if w := d.want.Load(); w != 0 && d.earlier(w) {
		d.apply()
	}
}

// apply gives the poller the newest deadline asked for, late by a
// sixteenth of its timeout.
func (d *deadline) apply() { d.give(true) }

// flush gives the poller exactly the deadline asked for, for calls that
// bypass the Conn's own (ReadFrom and WriteTo through the TCPConn).
func (d *deadline) flush() { d.give(false) }

func (d *deadline) give(late bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	w := d.want.Load()
	arm := w
	if late && w != 0 {
		if left := w - monoNow(); left > 0 {
			arm += left / 16
		}
	}
	if arm == d.armed.Load() && w == d.armedFor.Load() {
		return
	}
	_ = d.set(arm) // fails only on a closed socket, whose calls fail anyway
	d.armed.Store(arm)
	d.armedFor.Store(w)
	d.applied.Add(1)
}
