package proxy

import (
	"sync"
	"testing"
	"time"
)

// runAndWait runs f on w and waits until the worker that ran it is idle again.
func runAndWait(t *testing.T, w *workers, f func()) {
	t.Helper()
	done := make(chan struct{})
	w.run(func() { f(); close(done) })
	<-done
	eventually(t, "the worker to go idle", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.idle) > 0
	})
}

func TestWorkersReuseAnIdleWorker(t *testing.T) {
	var w workers
	defer w.stop()
	ran := 0
	for range 5 {
		runAndWait(t, &w, func() { ran++ })
	}
	if ran != 5 || w.live.Load() != 1 {
		t.Fatalf("ran %d jobs on %d workers; want 5 on 1", ran, w.live.Load())
	}
}

func TestWorkersRunConcurrently(t *testing.T) {
	var w workers
	defer w.stop()
	// Three jobs that each wait for the next: they only finish if each
	// got a goroutine of its own.
	first := make(chan struct{})
	a, b := make(chan struct{}), make(chan struct{})
	w.run(func() { <-a; close(first) })
	w.run(func() { <-b; close(a) })
	w.run(func() { close(b) })
	select {
	case <-first:
	case <-time.After(10 * time.Second):
		t.Fatal("jobs did not run concurrently")
	}
}

func TestWorkersIdleLongerThanCutoffEnd(t *testing.T) {
	var w workers
	defer w.stop()
	runAndWait(t, &w, func() {})
	w.reap(time.Now().Add(-time.Hour)) // idle for less than an hour: kept
	if w.live.Load() != 1 {
		t.Fatalf("%d workers after reaping none; want 1", w.live.Load())
	}
	w.reap(time.Now().Add(time.Second))
	eventually(t, "the idle worker to end", func() bool { return w.live.Load() == 0 })
	runAndWait(t, &w, func() {}) // a new worker takes over
	if w.live.Load() != 1 {
		t.Fatalf("%d workers; want 1", w.live.Load())
	}
}

func TestWorkersStopEndsIdleAndBusyWorkers(t *testing.T) {
	var w workers
	runAndWait(t, &w, func() {})
	release := make(chan struct{})
	w.run(func() { <-release }) // takes the idle worker
	w.run(func() {})            // and one more
	w.stop()
	close(release)
	eventually(t, "every worker to end", func() bool { return w.live.Load() == 0 })
	ran := make(chan struct{})
	w.run(func() { close(ran) }) // a stopped pool still runs what it is given
	<-ran
	eventually(t, "that worker to end too", func() bool { return w.live.Load() == 0 })
}

// A burst leaves at most maxIdleWorkers behind; the rest end when done.
func TestWorkersKeepAtMostMaxIdle(t *testing.T) {
	var w workers
	defer w.stop()
	release := make(chan struct{})
	var started sync.WaitGroup
	const burst = maxIdleWorkers + 50
	started.Add(burst)
	for range burst {
		w.run(func() { started.Done(); <-release })
	}
	started.Wait() // all busy at once: one worker each
	close(release)
	eventually(t, "the burst's extra workers to end", func() bool { return w.live.Load() == maxIdleWorkers })
	w.mu.Lock()
	idle := len(w.idle)
	w.mu.Unlock()
	if idle != maxIdleWorkers {
		t.Fatalf("%d idle workers; want %d", idle, maxIdleWorkers)
	}
}
