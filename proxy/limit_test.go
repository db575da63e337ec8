package proxy

import (
	"runtime"
	"testing"
	"time"
)

// A loop holding an accepted connection at the cap (a taker) whose
// listener closes just as a slot frees must pass the slot's wakeup on:
// Release wakes one taker only, and a loop of another port (or the other
// plane) waiting for room would otherwise wait, with room left, until the
// next connection ends.
func TestConnLimitStoppedTakerPassesTheWakeupOn(t *testing.T) {
	// One P: the stopped taker cannot run, and leave, between its stop
	// and the Release below, which so finds it still counted.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	l := NewConnLimit(1, nil)
	if !l.Acquire(nil, nil) {
		t.Fatal("the first slot was not taken")
	}
	stopTaker, stopRoom := make(chan struct{}), make(chan struct{})
	defer close(stopRoom)
	took, room := make(chan bool, 1), make(chan bool, 1)
	go func() { took <- l.Acquire(stopTaker, nil) }()
	go func() { room <- l.WaitBelow(stopRoom, nil) }()
	for l.waiters.Load() != 2 || l.takers.Load() != 1 {
		runtime.Gosched()
	}

	close(stopTaker) // its listener closed
	l.Release()
	if <-took {
		t.Fatal("the stopped taker took the slot")
	}
	select {
	case ok := <-room:
		if !ok {
			t.Fatal("the loop waiting for room stopped")
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("the loop waiting for room was never woken, with room left: %+v", l.Status())
	}
	// No loop waits and none is open: the episode (the reached gauge an
	// operator alerts on) is over.
	if st := l.Status(); st.Limited {
		t.Fatalf("still at the cap with no loop waiting: %+v", st)
	}
}
