package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/discovery"
)

// Accept-error backoff, as net/http's Server does: EMFILE and friends are
// usually transient, and spinning on them only burns the CPU that closing
// connections would need.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// tcpPort is one service port: its listener, counters and the tracker of
// the connections open on it.
type tcpPort struct {
	port int

	// Guarded by TCP.mu.
	ln      *net.TCPListener // nil while not listening
	bindErr string           // last bind failure, "" after a success

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

// status reads the counters. Called with TCP.mu held (for ln and bindErr).
func (ps *tcpPort) status() PortStatus {
	return PortStatus{
		Port:       ps.port,
		Listening:  ps.ln != nil,
		Error:      ps.bindErr,
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
	claimed := map[int]bool{}
	for _, port := range snap.Ports() {
		if p.service(snap, port) != nil {
			claimed[port] = true
		}
	}

	type openedListener struct {
		port int
		addr net.Addr
	}
	var opened []openedListener
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		return
	}
	for port := range claimed {
		if !p.inRange(port) {
			if !p.outOfRange[port] {
				p.outOfRange[port] = true
				p.log.Info("service port outside the bindable range; not bound", zap.Int(keyPort, port),
					zap.Int("port_min", p.cfg.PortMin), zap.Int("port_max", p.cfg.PortMax))
			}
			continue
		}
		ps := p.ports[port]
		if ps == nil {
			ps = &tcpPort{port: port, backends: map[netip.AddrPort]*backendConns{}}
			p.ports[port] = ps
		}
		if ps.ln == nil && p.listen(ps) {
			opened = append(opened, openedListener{port, ps.ln.Addr()})
		}
	}
	for port := range p.outOfRange {
		if !claimed[port] {
			delete(p.outOfRange, port) // log again if it comes back
		}
	}
	ports := make([]*tcpPort, 0, len(p.ports))
	for port, ps := range p.ports {
		if ps.ln != nil && !claimed[port] {
			p.closeListener(ps)
		}
		if !claimed[port] {
			// Forget a past bind failure: nobody wants this port now.
			ps.bindErr = ""
		}
		ports = append(ports, ps)
	}
	p.mu.Unlock()

	// Outside the lock, so a hook may call Ports.
	if hook := p.cfg.OnListening; hook != nil {
		for _, o := range opened {
			hook(o.port, o.addr)
		}
	}
	for _, ps := range ports {
		p.sweep(ps, p.service(snap, ps.port))
	}
}

// listen opens ps's listener and starts its accept loop, and reports whether
// it did. A bind failure is kept for Ports and logged once per distinct
// error; the next table change retries. Called with p.mu held.
func (p *TCP) listen(ps *tcpPort) bool {
	addr := net.JoinHostPort(p.bind, strconv.Itoa(ps.port))
	ln, err := listenConfig.Listen(context.Background(), "tcp", addr)
	if err != nil {
		if msg := err.Error(); msg != ps.bindErr {
			ps.bindErr = msg
			p.log.Info("cannot bind service port; retrying on the next table change", zap.Int(keyPort, ps.port), zap.Error(err))
		}
		return false
	}
	ps.ln = ln.(*net.TCPListener)
	ps.bindErr = ""
	p.log.Info("listener opened", zap.Int(keyPort, ps.port), zap.Stringer(keyAddr, ln.Addr()))
	p.wg.Add(1)
	go p.acceptLoop(ps, ps.ln)
	return true
}

// closeListener closes ps's listener; its accept loop then returns. Open
// connections are not touched: sweep drains them. Called with p.mu held.
func (p *TCP) closeListener(ps *tcpPort) {
	if err := ps.ln.Close(); err != nil {
		p.log.Debug("closing listener", zap.Int(keyPort, ps.port), zap.Error(err))
	}
	ps.ln = nil
	p.log.Info("listener closed", zap.Int(keyPort, ps.port))
}

// closeListeners closes every listener and keeps them closed.
func (p *TCP) closeListeners() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closing = true
	for _, ps := range p.ports {
		if ps.ln != nil {
			p.closeListener(ps)
		}
	}
}

// acceptLoop accepts on ln until it is closed. It takes ln rather than
// reading ps.ln, which may already be a newer listener for the same port.
func (p *TCP) acceptLoop(ps *tcpPort, ln *net.TCPListener) {
	defer p.wg.Done()
	var backoff time.Duration
	for {
		c, err := ln.AcceptTCP()
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
		ps.accepted.Add(1)
		ps.active.Add(1)
		// Add here, while this loop's own count keeps the WaitGroup above
		// zero, so it never races with Shutdown's Wait.
		p.wg.Add(1)
		go p.serveConn(ps, c)
	}
}
