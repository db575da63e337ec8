package marathon

import "sync"

// maxQueued bounds the events waiting for the state goroutine. Past it the
// queue drops everything it holds and reports an overflow, which the state
// goroutine answers with a full resync: the stream reader never blocks.
const maxQueued = 1 << 16

// maxQueuedBytes bounds the bytes of the events waiting, which maxQueued
// alone does not: an event may be up to defaultMaxEvent (16 MiB, heavy
// deployment plans), and the reader takes them off the wire faster than the
// state goroutine decodes them. Past it the queue overflows as above. It is
// DefaultMaxBodyBytes, what a snapshot may hold at most.
const maxQueuedBytes = DefaultMaxBodyBytes

// eventQueue hands raw event data from the stream reader to the state
// goroutine. Push never blocks.
type eventQueue struct {
	mu       sync.Mutex
	items    [][]byte
	bytes    int // sum of len(items[i])
	overflow bool
	notify   chan struct{} // capacity 1: "something was pushed"
}

func newEventQueue() *eventQueue {
	return &eventQueue{notify: make(chan struct{}, 1)}
}

// Push appends one event's data (the queue takes ownership of it).
func (q *eventQueue) Push(data []byte) {
	q.mu.Lock()
	if len(q.items) >= maxQueued || q.bytes+len(data) > maxQueuedBytes {
		clear(q.items)
		q.items, q.bytes = q.items[:0], 0
		q.overflow = true
	}
	q.items = append(q.items, data)
	q.bytes += len(data)
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// Lost records that an event could not be delivered (it was too large), so
// the state goroutine resyncs as after an overflow.
func (q *eventQueue) Lost() {
	q.mu.Lock()
	q.overflow = true
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// Take removes and returns everything queued, and whether events were
// dropped since the last Take.
func (q *eventQueue) Take() (items [][]byte, overflow bool) {
	q.mu.Lock()
	items, overflow = q.items, q.overflow
	q.items, q.bytes, q.overflow = nil, 0, false
	q.mu.Unlock()
	return items, overflow
}

// Len is the number of queued events.
func (q *eventQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}
