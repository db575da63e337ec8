package proxy

import (
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/discovery"
)

// The connection tracker: per port, the open connections grouped by backend
// address, so that a backend leaving the table can drain exactly its own
// connections, and Shutdown can close whatever is left.
//
// Cost, paid once when a connection is established and once when it closes,
// never per byte: the port's mutex (shared only by connections of that port),
// one map lookup, and an O(1) insert or unlink on an intrusive list. Nothing
// is allocated except by the first connection to a backend, which creates
// that backend's list (kept, empty, while the backend stays routable). The table-change path (sweep) walks a backend's list only
// when that backend's draining state flips.

// backendConns lists the open connections to one backend of one port.
type backendConns struct {
	head *tcpConn
	n    int
	// draining is set while the backend is absent from the current
	// snapshot; its connections then run on a DrainTimeout timer.
	draining bool
	// cut is set once the drain deadline began closing connections of
	// this drain, which is logged once (see drainExpired).
	cut bool
}

// track adds c to its port's tracker, and reports false (c must be closed)
// once Shutdown has started forcing connections closed. picked is the
// snapshot c's backend came from.
func (p *TCP) track(c *tcpConn, picked *discovery.Snapshot) bool {
	ps := c.port
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if p.killed.Load() {
		return false
	}
	bc := ps.backends[c.addr]
	if bc == nil {
		bc = &backendConns{}
		ps.backends[c.addr] = bc
	}
	c.next = bc.head
	if bc.head != nil {
		bc.head.prev = c
	}
	bc.head = c
	bc.n++
	if bc.draining {
		p.startDrain(c)
	} else if cur := p.table.Snapshot(); cur != picked && !hasBackend(p.service(cur, ps.port), c.addr) {
		// The backend left while c was dialling, and the sweep for that
		// change may have run before c was tracked: drain it here. (A sweep
		// after this point sees c in the list; one before it published the
		// snapshot this check reads.)
		p.setDraining(ps, c.addr, bc, true)
	}
	return true
}

// untrack removes c from its port's tracker and stops its drain timer.
func (p *TCP) untrack(c *tcpConn) {
	ps := c.port
	ps.mu.Lock()
	defer ps.mu.Unlock()
	p.stopDrain(c)
	bc := ps.backends[c.addr]
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		bc.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.prev, c.next = nil, nil
	// An empty list stays while its backend is routable, so the next
	// connection to it allocates nothing; sweep drops it once the backend
	// leaves.
	if bc.n--; bc.n == 0 && bc.draining {
		delete(ps.backends, c.addr)
	}
}

// sweep compares the connections open on ps with svc, the service now behind
// the port (nil if none): connections to a backend svc lacks start draining,
// and those to a backend that came back stop. It runs on the Run goroutine
// after every table change, and is cheap when ps's service did not change.
func (p *TCP) sweep(ps *tcpPort, svc *discovery.Service) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if svc == ps.swept {
		return // a published Service is immutable: same pointer, same backends
	}
	ps.swept = svc
	for addr, bc := range ps.backends {
		present := hasBackend(svc, addr)
		switch {
		case !present && bc.n == 0:
			delete(ps.backends, addr)
		case present == bc.draining:
			p.setDraining(ps, addr, bc, !present)
		}
	}
}

// setDraining flips bc's draining state and its connections' timers. Called
// with ps.mu held.
func (p *TCP) setDraining(ps *tcpPort, addr netip.AddrPort, bc *backendConns, on bool) {
	bc.draining, bc.cut = on, false
	for c := bc.head; c != nil; c = c.next {
		if on {
			p.startDrain(c)
		} else {
			p.stopDrain(c)
		}
	}
	if on {
		p.log.Info("backend left; draining its connections", zap.Int(keyPort, ps.port), zap.Stringer(keyBackend, addr),
			zap.Int("connections", bc.n), zap.Duration("drain_timeout", p.cfg.DrainTimeout))
	} else {
		p.log.Info("backend is back; its connections stop draining", zap.Int(keyPort, ps.port), zap.Stringer(keyBackend, addr),
			zap.Int("connections", bc.n))
	}
}

// startDrain gives c DrainTimeout to finish on its own. Called with the
// port's mu held.
func (p *TCP) startDrain(c *tcpConn) {
	if c.drain == nil {
		t := new(drainTimer)
		t.Timer = time.AfterFunc(p.cfg.DrainTimeout, func() { p.drainExpired(c, t) })
		c.drain = t
	}
}

// drainTimer is a connection's drain timer; its function knows it by its
// address, which is set before the timer starts.
type drainTimer struct{ *time.Timer }

// drainExpired closes c, whose backend's drain ran out of time (t, c's drain
// timer, fired): with a reset, not a FIN, so that its peers do not mistake a
// cut stream for a complete one. The first connection of a drain cut so
// logs it, with how many are being cut, so that an operator can tell a
// drain that ended on its own from one that cut clients off; the others say
// nothing, since their timers fire together.
//
// A timer stopped after it fired is no longer c's (stopDrain): the backend
// came back, or c ended, maybe handing its client to another backend
// (end), which must not be closed under it.
func (p *TCP) drainExpired(c *tcpConn, t *drainTimer) {
	if h := testHookDrainFired.Load(); h != nil {
		(*h)()
	}
	ps := c.port
	ps.mu.Lock()
	if c.drain != t {
		ps.mu.Unlock()
		return
	}
	if bc := ps.backends[c.addr]; bc != nil && bc.draining && !bc.cut {
		bc.cut = true
		p.log.Warn("drain timeout reached; closing the backend's connections still open", zap.Int(keyPort, ps.port),
			zap.Stringer(keyBackend, c.addr), zap.Int("connections", bc.n), zap.Duration("drain_timeout", p.cfg.DrainTimeout))
	}
	ps.mu.Unlock()
	c.close(true)
}

// testHookDrainFired, if set, runs as a drain timer fires, before it looks
// whether it is still its connection's.
var testHookDrainFired atomic.Pointer[func()]

// stopDrain cancels c's drain timer. Called with the port's mu held.
func (p *TCP) stopDrain(c *tcpConn) {
	if c.drain != nil {
		c.drain.Stop()
		c.drain = nil
	}
}

// closeAll force-closes every tracked connection, aborts dials in flight, and
// makes connections that finish dialling close at once. It returns how many
// connections it closed.
func (p *TCP) closeAll() int {
	p.killed.Store(true)
	p.kill()
	p.mu.Lock()
	ports := slices.Collect(p.ports.All())
	p.mu.Unlock()
	n := 0
	for _, ps := range ports {
		ps.mu.Lock()
		for _, bc := range ps.backends {
			for c := bc.head; c != nil; c = c.next {
				c.close(true)
				n++
			}
		}
		ps.mu.Unlock()
	}
	return n
}

// hasBackend says whether svc routes to addr.
func hasBackend(svc *discovery.Service, addr netip.AddrPort) bool {
	if svc == nil {
		return false
	}
	for _, b := range svc.Backends {
		if b.Addr == addr {
			return true
		}
	}
	return false
}
