package proxy

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/pacer-lb/pacer/internal/fastconn"
)

// workers runs connection goroutines on goroutines that outlive one
// connection, as fasthttp's worker pool does for its server.
//
// A new goroutine starts on a 2 KiB stack, and the dial path (net.Dialer
// down to connect, when this was measured) runs deeper than that: every
// fresh goroutine grew its stack two or three times, each a copy, and
// dropped the grown stack again when it ended. With one request per connection that was a cost per
// request: runtime.morestack was 3.3% of the TCP plane's CPU (perf, wrk with
// Connection: close through bench/http). A worker keeps the stack its last
// connection grew, until the garbage collector shrinks it.
//
// Idle workers are kept last-in first-out, so the warmest one is reused.
// Any idle for longer than workerIdle end, and at most maxIdleWorkers wait
// at once (each holds its stack, 8-16 KiB after a dial), so a burst of
// connections does not pin its goroutines' memory.
type workers struct {
	mu      sync.Mutex
	idle    []*worker // idle workers, the most recently idle last
	stopped bool
	live    atomic.Int32 // workers running, busy or idle
}

type worker struct {
	job       chan func()   // buffered: run never waits on a worker
	idleSince time.Duration // fastconn.Mono
}

const (
	// workerIdle is how long a worker waits for another connection before
	// it ends.
	workerIdle = 10 * time.Second
	// maxIdleWorkers bounds the idle workers; one finishing a job when that
	// many wait ends instead.
	maxIdleWorkers = 1024
)

// run runs f on an idle worker, or on a new one.
func (w *workers) run(f func()) {
	w.mu.Lock()
	if n := len(w.idle); n > 0 {
		wk := w.idle[n-1]
		w.idle[n-1] = nil
		w.idle = w.idle[:n-1]
		w.mu.Unlock()
		wk.job <- f
		return
	}
	w.mu.Unlock()
	w.live.Add(1)
	go w.work(&worker{job: make(chan func(), 1)}, f)
}

// work runs f, then whatever run hands it, until it is reaped or stopped.
func (w *workers) work(wk *worker, f func()) {
	defer w.live.Add(-1)
	for f != nil {
		f()
		if !w.park(wk) {
			return
		}
		f = <-wk.job
	}
}

// park puts wk on the idle stack, unless the pool was stopped or enough
// workers wait already.
func (w *workers) park(wk *worker) bool {
	now := fastconn.Mono()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped || len(w.idle) >= maxIdleWorkers {
		return false
	}
	wk.idleSince = now
	w.idle = append(w.idle, wk)
	return true
}

// reap ends the workers that have been idle since before cutoff. They are
// at the bottom of the stack.
func (w *workers) reap(cutoff time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	c := fastconn.MonoOf(cutoff)
	for n < len(w.idle) && w.idle[n].idleSince < c {
		w.idle[n].job <- nil
		n++
	}
	w.idle = append(w.idle[:0], w.idle[n:]...)
	clear(w.idle[len(w.idle):cap(w.idle)])
}

// stop ends every idle worker, and every busy one when its job returns.
func (w *workers) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	for _, wk := range w.idle {
		wk.job <- nil
	}
	clear(w.idle)
	w.idle = nil
}

// reapEvery reaps idle workers each period until quit is closed, then stops
// the pool.
func (w *workers) reapEvery(period time.Duration, quit <-chan struct{}) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			w.reap(now.Add(-workerIdle))
		case <-quit:
			w.stop()
			return
		}
	}
}
