package proxy

import (
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// Handoff passes a service port's listening socket from the data plane that
// lets the port go to the one that takes it, when its service changes mode
// (TCP to HTTP or back): the socket never closes, so clients connecting
// meanwhile wait in its backlog instead of being refused. Without it the
// plane taking the port could bind only once the other had closed its
// listener, each on its own goroutine: a client connecting between the two
// was refused, and a bind that came first failed and waited a BindRetry.
//
// The plane letting the port go parks a duplicate of its socket here before
// it closes its own listener; the plane taking the port adopts what is
// parked before it tries to bind. A socket nobody adopts within
// handoffWait is closed. A nil *Handoff parks nothing. Safe for concurrent
// use.
type Handoff struct {
	mu     sync.Mutex
	parked map[int]*parkedSocket
	// parkedCh is closed, and replaced, whenever a socket is parked, so
	// that a plane whose bind failed tries again at once.
	parkedCh chan struct{}
}

type parkedSocket struct {
	f     *os.File // a duplicate of the listening socket
	timer *time.Timer
}

// handoffWait is how long a parked socket waits to be adopted. The plane
// taking the port adopts it as soon as it applies the same table change,
// in well under a millisecond unless the machine stalls.
const handoffWait = 5 * time.Second

// NewHandoff returns an empty Handoff.
func NewHandoff() *Handoff {
	return &Handoff{parked: map[int]*parkedSocket{}, parkedCh: make(chan struct{})}
}

// Park keeps the socket of ln, port's listener, listening for the other
// plane, which claims the port now; the caller then closes ln as usual.
func (h *Handoff) Park(port int, ln *net.TCPListener) error {
	if h == nil {
		return nil
	}
	f, err := ln.File() // a new descriptor of the same socket
	if err != nil {
		return fmt.Errorf("parking port %d's listener: %w", port, err)
	}
	ps := &parkedSocket{f: f}
	h.mu.Lock()
	defer h.mu.Unlock()
	if old := h.parked[port]; old != nil {
		old.timer.Stop()
		old.f.Close()
	}
	ps.timer = time.AfterFunc(handoffWait, func() { h.expire(port, ps) })
	h.parked[port] = ps
	close(h.parkedCh)
	h.parkedCh = make(chan struct{})
	return nil
}

// expire closes ps, parked for port, if it is still there.
func (h *Handoff) expire(port int, ps *parkedSocket) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.parked[port] == ps {
		delete(h.parked, port)
		ps.f.Close()
	}
}

// Adopt returns the socket parked for port as a listener of the caller's
// own, or nil when none is parked.
func (h *Handoff) Adopt(port int) (*net.TCPListener, error) {
	if h == nil {
		return nil, nil
	}
	h.mu.Lock()
	ps := h.parked[port]
	delete(h.parked, port)
	h.mu.Unlock()
	if ps == nil {
		return nil, nil
	}
	ps.timer.Stop()
	defer ps.f.Close()
	ln, err := net.FileListener(ps.f)
	if err != nil {
		return nil, fmt.Errorf("adopting port %d's listener: %w", port, err)
	}
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("adopting port %d's listener: not TCP but %T", port, ln)
	}
	return tl, nil
}

// Parked returns a channel that is closed the next time a socket is parked.
// A nil Handoff's never is.
func (h *Handoff) Parked() <-chan struct{} {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.parkedCh
}

// Close closes every socket still parked.
func (h *Handoff) Close() {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for port, ps := range h.parked {
		ps.timer.Stop()
		ps.f.Close()
		delete(h.parked, port)
	}
}
