package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/internal/fastconn"
)

// Accept-error backoff, as net/http's Server does: EMFILE and friends are
// usually transient, and spinning on them only burns the CPU that closing
// connections would need.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// acceptBatch bounds the connections an accept loop takes before it sets
// them up (see acceptLoop).
const acceptBatch = 64

// tcpPort is one service port: its listener, counters and the tracker of
// the connections open on it.
type tcpPort struct {
	p    *TCP
	port int

	// Guarded by TCP.mu.
	ln *fastconn.Listener // nil while not listening
	// closed is closed with ln: its accept loops stop waiting for room
	// under the connection cap.
	closed chan struct{}

	// rr is the round-robin cursor; see balance.go.
	rr atomic.Uint64

	// Counters; see PortStatus.
	accepted, failed, dialErrors, bytesIn, bytesOut atomic.Uint64
	active                                          atomic.Int64

	// The tracker (drain.go), guarded by mu.
	mu       sync.Mutex
	backends map[netip.AddrPort]*backendConns
	// swept is the service the last sweep saw; an unchanged pointer means
	// unchanged backends (a published Service is immutable).
	swept *discovery.Service
}

// Status reads the counters. Called with TCP.mu held (for ln).
func (ps *tcpPort) Status() PortStatus {
	return PortStatus{
		Port:       ps.port,
		Plane:      "tcp",
		Listening:  ps.ln != nil,
		Active:     ps.active.Load(),
		Total:      ps.accepted.Load(),
		Failed:     ps.failed.Load(),
		DialErrors: ps.dialErrors.Load(),
		BytesIn:    ps.bytesIn.Load(),
		BytesOut:   ps.bytesOut.Load(),
	}
}

// apply brings the listeners in line with snap and drains connections on
// backends snap no longer has. It runs on the Run goroutine only.
func (p *TCP) apply(snap *discovery.Snapshot) {
	claimed, elsewhere := map[int]bool{}, map[int]bool{}
	for _, port := range snap.Ports() {
		if p.service(snap, port) != nil {
			claimed[port] = true
		} else if snap.Service(port) != nil {
			elsewhere[port] = true // the HTTP plane's, or nobody's (UDP)
		}
	}
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		return
	}
	opened := p.ports.Sync(claimed, elsewhere)
	ports := slices.Collect(p.ports.All())
	p.mu.Unlock()

	// Outside the lock, so a hook may call Ports.
	if hook := p.cfg.OnListening; hook != nil {
		for _, o := range opened {
			hook(o.Port, o.Addr)
		}
	}
	for _, ps := range ports {
		p.sweep(ps, p.service(snap, ps.port))
	}
}

// Listen opens ps's listener, or takes adopt, the socket the HTTP plane
// let go, and starts its accept loops. Called with p.mu held, by
// PortSet.Sync.
func (ps *tcpPort) Listen(adopt *net.TCPListener) (net.Addr, error) {
	p := ps.p
	ln := adopt
	if ln == nil {
		var err error
		if ln, err = fastconn.Listen(context.Background(), net.JoinHostPort(p.bind, strconv.Itoa(ps.port))); err != nil {
			return nil, err
		}
	} else if err := TuneListener(ln, false); err != nil {
		// TCP_DEFER_ACCEPT, set by the HTTP plane, would hold a client of
		// a protocol where the server speaks first (SMTP, MySQL) until it
		// spoke.
		return nil, fmt.Errorf("resetting the HTTP plane's listener options: %w", err)
	}
	fl, err := fastconn.NewListener(ln)
	if err != nil {
		ln.Close()
		return nil, err
	}
	ps.ln, ps.closed = fl, make(chan struct{})
	if adopt != nil {
		p.log.Info("listener taken over from the HTTP plane", zap.Int(keyPort, ps.port), zap.Stringer(keyAddr, ln.Addr()))
	} else {
		p.log.Info("listener opened", zap.Int(keyPort, ps.port), zap.Stringer(keyAddr, ln.Addr()))
	}
	// An accept loop also starts each connection it accepts (startConn),
	// so one per P: the connections of a busy port are set up on every
	// core, as each of HAProxy's threads accepts and serves its own.
	for range max(1, runtime.GOMAXPROCS(0)) {
		p.wg.Add(1)
		go p.acceptLoop(ps, ps.ln, ps.closed)
	}
	return ln.Addr(), nil
}

// Listening reports whether ps is bound. Called with p.mu held.
func (ps *tcpPort) Listening() bool { return ps.ln != nil }

// Socket returns ps's listening socket while it is bound. Called with p.mu
// held.
func (ps *tcpPort) Socket() *net.TCPListener { return ps.ln.Socket() }

// Busy reports whether connections are open on ps.
func (ps *tcpPort) Busy() bool { return ps.active.Load() > 0 }

// StopListening closes ps's listener; its accept loop then returns. Open
// connections are not touched: sweep drains them. Called with p.mu held.
func (ps *tcpPort) StopListening() {
	ps.closeListener()
	ps.p.log.Info("listener closed", zap.Int(keyPort, ps.port))
}

func (ps *tcpPort) closeListener() {
	if err := ps.ln.Close(); err != nil {
		ps.p.log.Debug("closing listener", zap.Int(keyPort, ps.port), zap.Error(err))
	}
	close(ps.closed)
	ps.ln, ps.closed = nil, nil
}

// closeListeners closes every listener and keeps them closed, with one log
// line for all (a stop closes every port at once).
func (p *TCP) closeListeners() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return
	}
	p.closing = true
	n := 0
	for ps := range p.ports.All() {
		if ps.Listening() {
			ps.closeListener()
			n++
		}
	}
	if n > 0 {
		p.log.Info("listeners closed", zap.Int("ports", n))
	}
}

// acceptLoop accepts on ln until it is closed. It takes ln and closed
// rather than reading ps's, which may already be a newer listener's.
//
// Under the connection cap (limit.go), which the HTTP plane's listeners
// may share, it accepts only while there is room:
// it waits for room before it waits for a connection, and takes a slot for
// each connection it accepts. A loop that was already waiting in
// AcceptConn when the cap was reached holds the one connection it then
// gets, unserved, until a slot frees, as the backlog would have held it:
// at most one per accept loop, a descriptor each.
func (p *TCP) acceptLoop(ps *tcpPort, ln *fastconn.Listener, closed <-chan struct{}) {
	defer p.wg.Done()
	var backoff time.Duration
	batch := make([]*fastconn.Conn, 0, acceptBatch)
	for {
		if !p.conns.WaitBelow(closed, p.quit) {
			return
		}
		c, err := ln.AcceptConn()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = min(max(2*backoff, acceptBackoffMin), acceptBackoffMax)
			p.log.Warn("accept failed; backing off", zap.Int(keyPort, ps.port), zap.Duration("backoff", backoff), zap.Error(err))
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-p.quit:
				t.Stop()
				return
			}
			continue
		}
		backoff = 0
		if !p.conns.Acquire(closed, p.quit) {
			c.Close() // the port closed or pacer stops: nobody serves it
			return
		}
		// Take every connection already pending, let the rest of the
		// process run once, then set them all up. With one request per
		// connection through the TCP plane, 1.4% more connections/s than
		// serving each as it is accepted and 1.3% more than yielding before
		// each, with 5-9% less of nginx's CPU per connection behind it
		// (bench/RESULTS.md): the backend gets its new connections together.
		batch = append(batch[:0], c)
		for len(batch) < acceptBatch && p.conns.below() {
			c, err := ln.AcceptNow()
			if c == nil || err != nil {
				break // an error comes back to AcceptConn
			}
			p.conns.take()
			batch = append(batch, c)
		}
		runtime.Gosched()
		for i, c := range batch {
			batch[i] = nil
			ps.accepted.Add(1)
			ps.active.Add(1)
			// Add here, while this loop's own count keeps the WaitGroup
			// above zero, so it never races with Shutdown's Wait.
			p.wg.Add(1)
			p.startConn(ps, c)
		}
	}
}
