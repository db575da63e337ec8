package proxy

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/health"
	"github.com/pacer-lb/pacer/internal/fastconn"
)

// maxCopyWindow caps how long one copyWindow runs between idle checks. A window
// end costs a wakeup and a deadline reset per direction, and it is also when
// the byte counters are added, so it bounds how stale PortStatus bytes are.
const maxCopyWindow = 10 * time.Second

// Reasons a connection ends without a backend or is closed by the proxy.
var (
	errNoBackend = errors.New("no backend accepted the connection")
	errShutdown  = errors.New("shutting down")
	errIdle      = errors.New("idle timeout")
	// errEarly ends the client-to-backend copy when the backend broke the
	// connection before either side sent a byte; see forward.
	errEarly = errors.New("backend broke the connection before any byte")
)

// maxReroutes bounds how often one client connection is moved to another
// backend because its backend broke before any byte moved.
const maxReroutes = 2

// aLongTimeAgo is a read deadline that unblocks a pending read at once.
var aLongTimeAgo = time.Unix(1, 0)

// copyBufSize is the size of the buffers small messages are copied through;
// a read that fills one starts splicing (see copyWindow).
const copyBufSize = 16 << 10

// copyBufs holds the copy buffers. A direction takes one only while bytes
// move (fastconn.ReadPooled), so idle connections hold none.
var copyBufs = fastconn.NewPool(copyBufSize)

// tcpConn is one client connection forwarded to one backend.
type tcpConn struct {
	client, backend *fastconn.Conn
	addr            netip.AddrPort // the backend, the tracker's key
	port            *tcpPort
	// accepted is when the client was (fastconn.Mono); try counts the
	// backends it was moved to before this one (see forward).
	accepted time.Duration
	try      int
	// reroutable says that c may still be moved to another backend: the
	// client sent nothing before it was routed, and it was moved fewer
	// than maxReroutes times.
	reroutable bool

	// lastActive is the fastconn.Mono time a copy window last moved bytes, in
	// either direction; only window ends write it, never the byte path.
	lastActive atomic.Int64

	// Tracker fields, guarded by port.mu; see drain.go.
	prev, next *tcpConn
	drain      *drainTimer // non-nil while the backend is draining

	closeOnce sync.Once
	done      sync.WaitGroup // the backend-to-client goroutine
	// Per-direction results, each written by its own goroutine and read
	// after done.Wait.
	inN, outN     int64
	inErr, outErr error
	// early is set by the backend-to-client direction when the backend
	// broke before sending a byte while the client-to-backend copy still
	// runs; fwdDone when that copy has ended. See forward.
	early, fwdDone atomic.Bool
	// eofs counts the directions whose source sent its FIN; see pipe.
	eofs atomic.Int32
	// watchdog checks the idle timeout once only one direction is left
	// (see sawEOF); closed is set as close closes the sockets.
	watchdog atomic.Pointer[time.Timer]
	closed   atomic.Bool
}

// startConn is the accept loop's part of a new client connection: what
// never waits. It reads what the client has sent already and dials the
// backend; on loopback, or wherever the handshake is done as connect
// returns, it then starts the relays (tcpConn.relay) and is done, and a
// connection that takes one message each way never has a goroutine of its
// own: its end runs on fastconn's poller. Anything that must wait (a
// handshake still in flight, a service with no backend that accepts)
// carries on in serveConn, on a worker.
//
// A goroutine per connection cost a handoff from the accept loop, a park
// while the relays ran, and a wakeup to close: with one request per
// connection, the runtime's scheduling was about 3% of the TCP plane's
// CPU (perf), where HAProxy's event loop pays none.
func (p *TCP) startConn(ps *tcpPort, client *fastconn.Conn) {
	accepted := fastconn.Mono()
	// What the client has sent already goes to the backend with the
	// connect (fastconn.DialStart), as HAProxy forwards what it has read
	// when it connects: the backend then reads it at once instead of
	// accepting, finding nothing and sleeping until it comes.
	first, n, err := client.ReadNow(copyBufs)
	if err != nil {
		if ce := p.log.Check(zap.DebugLevel, "client broke the connection before it was routed"); ce != nil {
			ce.Write(zap.Int(keyPort, ps.port), zap.Stringer(keyClient, client.RemoteAddr()), zap.Error(err))
		}
		client.Close()
		p.connEnded(ps)
		return
	}
	var early []byte
	if first != nil {
		early = (*first)[:n]
	}
	snap := p.table.Snapshot()
	svc := p.service(snap, ps.port)
	if svc == nil || len(svc.Backends) == 0 {
		p.workers.run(func() { p.serveConn(ps, client, first, n, accepted, nil, 0, netip.AddrPort{}) })
		return
	}
	st := dialState{svc: svc, first: ps.pick(svc, client)}
	backend, addr, ok := p.dialAny(ps, &st, client, early, false)
	if !ok {
		rest := st // only now on the heap
		p.workers.run(func() { p.serveConn(ps, client, first, n, accepted, &rest, 0, netip.AddrPort{}) })
		return
	}
	p.routed(ps, client, backend, addr, snap, accepted, 0, first, n)
}

// serveConn routes client and forwards it, on a worker: it may wait for a
// handshake or for a backend. first[:n] are the bytes the client sent
// before (first may be nil), which it gives back to copyBufs; st, if not
// nil, is where startConn left the dials of the service it tried. try
// counts the backends the client was moved to (see forward); avoid, if
// valid, is the backend it was moved from, which the balancer's pick
// passes over.
func (p *TCP) serveConn(ps *tcpPort, client *fastconn.Conn, first *[]byte, n int, accepted time.Duration, st *dialState, try int, avoid netip.AddrPort) {
	if h := testHookServeConn.Load(); h != nil {
		(*h)()
	}
	var early []byte
	if first != nil {
		early = (*first)[:n]
	}
	backend, addr, snap, err := p.connect(ps, client, early, accepted, st, avoid)
	if err != nil {
		if first != nil {
			copyBufs.Put(first)
		}
		ps.failed.Add(1)
		if ce := p.log.Check(zap.DebugLevel, "connection not routed"); ce != nil {
			ce.Write(zap.Int(keyPort, ps.port), zap.Stringer(keyClient, client.RemoteAddr()), zap.Error(err))
		}
		client.Close()
		p.connEnded(ps)
		return
	}
	p.routed(ps, client, backend, addr, snap, accepted, try, first, n)
}

// routed starts forwarding client to backend, which has first[:n]
// already; snap is the snapshot backend was picked from, for the tracker.
func (p *TCP) routed(ps *tcpPort, client, backend *fastconn.Conn, addr netip.AddrPort, snap *discovery.Snapshot, accepted time.Duration, try int, first *[]byte, n int) {
	if first != nil {
		// The backend has the bytes: idle connections hold no buffer
		// (see copyBufs).
		copyBufs.Put(first)
	}
	c := &tcpConn{client: client, backend: backend, addr: addr, port: ps, accepted: accepted, try: try,
		reroutable: try < maxReroutes && n == 0}
	c.lastActive.Store(int64(fastconn.Mono()))
	if !p.track(c, snap) {
		c.close(false) // forced shutdown began while we dialled
		p.connEnded(ps)
		return
	}
	// Once the backend has the client's first bytes, the client can no
	// longer be moved to another backend: this one may have acted on
	// them.
	c.inN = int64(n)
	ps.bytesIn.Add(uint64(n))
	c.relay()
}

// connEnded takes a client connection that ended off its port's active
// count, the connection cap and Shutdown's wait.
func (p *TCP) connEnded(ps *tcpPort) {
	ps.active.Add(-1)
	p.conns.Release()
	p.wg.Done()
}

// end ends c: it reports and logs it, and, when forward said to reroute,
// gives the client another backend.
func (c *tcpConn) end(reroute bool) {
	p, ps := c.port.p, c.port
	p.untrack(c)
	p.finished(c)
	if !reroute {
		p.connEnded(ps)
		return
	}
	// The backend died between accepting and its first byte, and the
	// client has sent nothing it could have read: the client never
	// knows, and gets another backend.
	ps.dialErrors.Add(1)
	_ = c.backend.SetLinger(0)
	c.backend.Close()
	p.serveConn(ps, c.client, nil, 0, c.accepted, nil, c.try+1, c.addr)
}

// finished reports how c's backend did and logs the connection's end.
func (p *TCP) finished(c *tcpConn) {
	ps, addr, client := c.port, c.addr, c.client
	if rep := p.cfg.Report; rep != nil {
		switch {
		case c.outN > 0:
			rep(addr, health.Success)
		case isAbort(c.outErr):
			// The backend broke the connection before sending a byte: a
			// dead or dying process (a clean FIN is not counted; some
			// protocols close without a word).
			rep(addr, health.Reset)
		}
	}

	if ce := p.log.Check(zap.DebugLevel, "connection closed"); ce != nil {
		ce.Write(zap.Int(keyPort, ps.port), zap.Stringer(keyClient, client.RemoteAddr()), zap.Stringer(keyBackend, addr),
			zap.Int64("bytes_in", c.inN), zap.Int64("bytes_out", c.outN),
			zap.NamedError("client_to_backend_error", c.inErr), zap.NamedError("backend_to_client_error", c.outErr))
	}
}

// connect dials a backend for client. When the service has no backend, or
// every one it tried refused, it waits for the next snapshot (never polls)
// and tries again, until WaitForBackend has passed since the start; dials
// that failed for want of this host's resources (health.LocalShortage) are tried
// again after a backoff too. It returns the snapshot the backend was
// picked from, for the tracker.
//
// early, the bytes the client sent before, goes to the backend: with the
// connect, or written at once after it. accepted is when the client was
// (fastconn.Mono). st, if not nil, is where startConn's dials stand: they
// go on from there. avoid, if valid, is a backend that just broke the
// client's connection (see end): the first pick passes over it.
func (p *TCP) connect(ps *tcpPort, client *fastconn.Conn, early []byte, accepted time.Duration, st *dialState, avoid netip.AddrPort) (*fastconn.Conn, netip.AddrPort, *discovery.Snapshot, error) {
	var timer *time.Timer // made only if we have to wait
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	if st != nil && st.pending != nil {
		// startConn's dial is still in flight: finish it (and the dials
		// after it) first, whatever the table says now, or its socket would
		// be dropped unclosed when the service changed meanwhile. A backend
		// that left is drained once tracked (no snapshot: track checks).
		if conn, addr, ok := p.dialAny(ps, st, client, early, true); ok {
			return conn, addr, nil, nil
		}
		if st.broken != nil {
			return nil, netip.AddrPort{}, nil, st.broken
		}
	}
	var tried *discovery.Service
	// backoff is the wait before the same backends are dialled again
	// because dials failed for want of this host's resources (health.LocalShortage):
	// no snapshot change will come for those, and descriptors usually come
	// back within moments.
	var backoff time.Duration
	for {
		snap := p.table.Snapshot()
		// Dial again only when this port's service changed: changes to other
		// apps also wake us, and must not turn into a redial storm against
		// backends that just refused.
		if svc := p.service(snap, ps.port); svc != nil && svc != tried && len(svc.Backends) > 0 {
			if st == nil || st.svc != svc {
				st = &dialState{svc: svc, first: ps.pickAvoiding(svc, client, avoid)}
			}
			if conn, addr, ok := p.dialAny(ps, st, client, early, true); ok {
				return conn, addr, snap, nil
			}
			if st.broken != nil {
				return nil, netip.AddrPort{}, nil, st.broken
			}
			tried = svc
			if st.short {
				backoff = min(max(2*backoff, acceptBackoffMin), acceptBackoffMax)
			} else {
				backoff = 0
			}
		}
		st = nil
		left := p.cfg.WaitForBackend - (fastconn.Mono() - accepted)
		if left <= 0 {
			return nil, netip.AddrPort{}, nil, errNoBackend
		}
		wait := left
		if backoff > 0 {
			wait = min(wait, backoff)
		}
		if timer == nil {
			timer = time.NewTimer(wait)
		} else {
			timer.Reset(wait)
		}
		select {
		case <-snap.Changed():
		case <-timer.C:
			if backoff == 0 || fastconn.Mono()-accepted >= p.cfg.WaitForBackend {
				return nil, netip.AddrPort{}, nil, errNoBackend
			}
			tried = nil // the same backends again
		case <-p.quit:
			return nil, netip.AddrPort{}, nil, errShutdown
		}
	}
}

// testHookServeConn, if set, runs as a worker starts serveConn: tests
// change the table between startConn's dial and connect with it.
var testHookServeConn atomic.Pointer[func()]

// dialState is where dialAny stands in one service's backends.
type dialState struct {
	svc   *discovery.Service
	first int // the balancer's pick: the first backend tried
	tries int // backends tried so far
	// pending is the dial of backend tries-1 when dialAny could not wait
	// for it: its handshake was still in flight, or the socket did not
	// take all of early yet (sent).
	pending *fastconn.Conn
	sent    int
	// broken is set when a backend took part of the client's first bytes
	// and then failed: no other backend may get them again.
	broken error
	// short is set when a dial failed for want of this host's resources
	// (health.LocalShortage), not the backend's.
	short bool
}

// dialAny tries up to MaxAttempts distinct backends of st.svc, starting
// where the balancer said, and returns the first that accepts, with early
// sent. Without wait it stops, reporting false with st.pending set, at
// the first dial that would have to wait; called again with wait, it
// carries on from there.
func (p *TCP) dialAny(ps *tcpPort, st *dialState, client *fastconn.Conn, early []byte, wait bool) (*fastconn.Conn, netip.AddrPort, bool) {
	n := len(st.svc.Backends)
	if st.pending != nil {
		conn := st.pending
		st.pending = nil
		b := st.svc.Backends[(st.first+st.tries-1)%n]
		err := p.finishDial(conn, early, st.sent)
		if err == nil {
			return conn, b.Addr, true
		}
		p.dialFailed(ps, st, b.Addr, err)
		if errors.Is(err, errPartial) {
			st.broken = err
			return nil, netip.AddrPort{}, false
		}
	}
	for ; st.tries < min(p.cfg.MaxAttempts, n); st.tries++ {
		b := st.svc.Backends[(st.first+st.tries)%n]
		// fastconn rather than net.Dialer: with one request per
		// connection the dial was a third of this plane's CPU, and fastconn
		// does the same job with fewer system calls and no wait in the
		// poller when the backend is on this host (see its Dial). Like
		// net.Dialer without a local address it does not bind before
		// connect, so ephemeral ports are shared across destinations.
		conn, sent, pending, err := fastconn.DialStart(p.killCtx, b.Addr, early)
		if err == nil && (pending || sent < len(early)) {
			if !wait {
				st.tries++
				st.pending, st.sent = conn, sent
				return nil, netip.AddrPort{}, false
			}
			err = p.finishDial(conn, early, sent)
		}
		if err == nil {
			st.tries++
			return conn, b.Addr, true
		}
		p.dialFailed(ps, st, b.Addr, err)
		if errors.Is(err, errPartial) {
			st.tries++
			st.broken = err
			return nil, netip.AddrPort{}, false
		}
	}
	return nil, netip.AddrPort{}, false
}

// errPartial is a backend that took part of the client's first bytes and
// then failed: the client's connection ends, since another backend
// cannot be given bytes this one may have acted on.
var errPartial = errors.New("backend took part of the client's first bytes, then failed")

// finishDial waits for conn's handshake and writes the rest of early
// (the handshake was still in flight), within the dial timeout. It closes
// conn if that fails; if some of early went out before the failure, the
// error is errPartial.
func (p *TCP) finishDial(conn *fastconn.Conn, early []byte, sent int) error {
	if err := conn.FinishDial(p.killCtx, p.cfg.DialTimeout); err != nil {
		conn.Close()
		return err
	}
	if sent == len(early) {
		return nil
	}
	_ = conn.SetWriteDeadline(time.Now().Add(p.cfg.DialTimeout))
	n, err := conn.Write(early[sent:])
	_ = conn.SetWriteDeadline(time.Time{})
	switch {
	case err == nil:
		return nil
	case sent+n == 0:
		conn.Close()
		return err
	}
	// Part went out: the rest would be lost if the connection went on.
	_ = conn.SetLinger(0)
	conn.Close()
	return fmt.Errorf("%w: %d of %d bytes: %w", errPartial, sent+n, len(early), err)
}

// dialFailed counts, reports and logs a backend of st.svc that did not
// accept. A dial that failed for want of this host's own resources is not
// the backend's fault and is not reported (st.short is set instead):
// passive health checking would eject healthy backends, and take them out
// of DNS, each time pacer ran out of descriptors or ephemeral ports.
func (p *TCP) dialFailed(ps *tcpPort, st *dialState, addr netip.AddrPort, err error) {
	ps.dialErrors.Add(1)
	if health.LocalShortage(err) {
		st.short = true
	} else if rep := p.cfg.Report; rep != nil {
		rep(addr, health.ConnectFailed)
	}
	if ce := p.log.Check(zap.DebugLevel, "backend dial failed"); ce != nil {
		ce.Write(zap.Int(keyPort, ps.port), zap.String(keyApp, st.svc.Key.App), zap.Stringer(keyBackend, addr), zap.Error(err))
	}
}

// relay starts forwarding c: both directions relayed inside fastconn's
// poller, with no goroutine waiting (fastconn.RelayBothFunc). Most
// connections end there, in PairDone; the rest go on in forward, on a
// worker.
func (c *tcpConn) relay() {
	if err := c.client.SetReadDeadline(fastconn.DeadlineIn(c.port.p.window)); err != nil {
		c.inErr = err
		c.close(false)
		c.end(false)
		return
	}
	fastconn.RelayBothFunc(c.client, c.backend, copyBufs, c)
}

// PairDone is where relay's wait ends (fastconn.PairDone). A connection
// whose directions both ended with their FIN, the poller having passed
// the first one on, is closed here, on whatever goroutine saw it end; any
// other outcome goes to forward on a worker, which may wait.
func (c *tcpConn) PairDone(in, out fastconn.RelayResult, err error) {
	if err == nil && in.EOF && out.EOF && in.Err == nil && out.Err == nil && in.Buf == nil && out.Buf == nil {
		c.count(in, out)
		c.close(false)
		c.end(false)
		return
	}
	c.port.p.workers.run(func() { c.end(c.forward(in, out, err)) })
}

// count adds what the relays moved to c's and its port's counters.
func (c *tcpConn) count(in, out fastconn.RelayResult) {
	c.inN += in.Moved
	c.outN += out.Moved
	c.port.bytesIn.Add(uint64(in.Moved))
	c.port.bytesOut.Add(uint64(out.Moved))
}

// forward carries on from relay's first wait, whose results it is given,
// until both directions ended (or one failed and closed everything), and
// then closes both sockets. It returns true, with the client left open and
// the backend for the caller to close, when rerouting is allowed and the
// backend broke the connection (a reset: a process that died between
// accepting and answering) before a byte moved either way: then the client
// may be given another backend as if nothing happened.
//
// It relays in fastconn's poller again while the connection only idles
// (relayBoth). One that moves bulk data or meets a slow reader gets a
// goroutine per direction (pipe), which carries on from where relayBoth
// stopped.
//
// How "before a byte moved" is known without wrapping the sockets: in
// relayBoth, the client's relay read nothing (every byte it reads is either
// written or handed back). In the pipes, the
// backend-to-client copy sees the reset with nothing copied, sets early
// and moves the client's read deadline to the past, which ends the
// client-to-backend copy at once. If that copy moved nothing (a splice that
// read client bytes reports them, or fails on the write), the client's bytes
// are all still in its socket (copyWindow counts bytes when read, not when
// written).
func (c *tcpConn) forward(in, out fastconn.RelayResult, err error) bool {
	p := c.port.p
	idle, window, reroutable := p.cfg.IdleTimeout, p.window, c.reroutable
	done, reroute, in, out := c.relayBoth(in, out, err)
	if done {
		return reroute
	}
	if !out.EOF {
		c.done.Add(1)
		p.workers.run(func() { c.backendToClient(idle, window, reroutable, out.Buf, out.N) })
	} else {
		c.sawEOF()
	}
	if !in.EOF {
		n, err := c.pipe(c.backend, c.client, &c.port.bytesIn, idle, window, in.Buf, in.N)
		c.inN += n
		c.inErr = err
	} else {
		c.sawEOF()
	}
	if errors.Is(c.inErr, errEarly) {
		c.done.Wait()
		if c.inN == 0 {
			_ = c.client.SetReadDeadline(time.Time{})
			return true
		}
		c.close(true)
		return false
	}
	if c.inErr != nil {
		c.close(isAbort(c.inErr))
	}
	c.fwdDone.Store(true)
	c.done.Wait()
	// early set after the client-to-backend copy ended: the backend reset
	// and nobody closed yet; pass the reset on.
	c.close(c.early.Load())
	return false
}

// relayBoth takes what a wait of both directions in fastconn's poller
// returned (fastconn.RelayBoth: a message that goes through whole wakes no
// goroutine, the first FIN is passed on by the poller, and the second ends
// the wait), and relays again with this goroutine waiting while the
// connection only idles. It reports done once the connection ended and is
// closed; otherwise (bulk data, a destination that could not take a
// message at once) it returns each direction's state for the pipes to
// carry on from. The idle timeout works as in pipe, one window at a time,
// on the client's read deadline. With c.reroutable, a backend that broke
// the connection before a byte moved either way ends it with reroute set
// and the client left open, as forward describes.
func (c *tcpConn) relayBoth(in, out fastconn.RelayResult, err error) (done, reroute bool, _, _ fastconn.RelayResult) {
	idle, window := c.port.p.cfg.IdleTimeout, c.port.p.window
	for {
		if errors.Is(err, errors.ErrUnsupported) {
			_ = c.client.SetReadDeadline(time.Time{})
			return false, false, in, out
		}
		c.count(in, out)
		moved := in.Moved+out.Moved > 0
		switch {
		case c.reroutable && isAbort(out.Err) && c.inN == 0 && c.outN == 0 && in.Buf == nil && !in.EOF && in.Err == nil:
			c.outErr = out.Err
			_ = c.client.SetReadDeadline(time.Time{})
			return true, true, in, out
		case in.Err != nil || out.Err != nil:
			c.inErr, c.outErr = in.Err, out.Err
			for _, r := range [2]fastconn.RelayResult{in, out} {
				if r.Buf != nil {
					copyBufs.Put(r.Buf)
				}
			}
			c.close(isAbort(in.Err) || isAbort(out.Err))
			return true, false, in, out
		case in.Buf != nil || out.Buf != nil:
			_ = c.client.SetReadDeadline(time.Time{})
			return false, false, in, out
		case in.EOF && out.EOF:
			c.close(false)
			return true, false, in, out
		case err == nil: // one direction ended; the other goes on
			if moved {
				c.lastActive.Store(int64(fastconn.Mono()))
			}
		case !errors.Is(err, os.ErrDeadlineExceeded):
			c.inErr = err // closed: by drain or shutdown
			c.close(false)
			return true, false, in, out
		default: // a window ended
			now := fastconn.Mono()
			if moved {
				c.lastActive.Store(int64(now))
			} else if now-time.Duration(c.lastActive.Load()) >= idle {
				c.inErr = errIdle
				c.close(false)
				return true, false, in, out
			}
		}
		if err = c.client.SetReadDeadline(fastconn.DeadlineIn(window)); err != nil {
			c.inErr = err
			c.close(false)
			return true, false, in, out
		}
		in, out, err = fastconn.RelayBoth(c.client, c.backend, copyBufs)
	}
}

// backendToClient is the reverse direction on its own goroutine, a method so
// it has a name in goroutine dumps (the forward direction runs in serveConn).
// buf[:n] are bytes read from the backend before that the client still
// needs.
func (c *tcpConn) backendToClient(idle, window time.Duration, reroutable bool, buf *[]byte, n int) {
	defer c.done.Done()
	m, err := c.pipe(c.client, c.backend, &c.port.bytesOut, idle, window, buf, n)
	c.outN += m
	c.outErr = err
	if c.outErr == nil {
		return
	}
	if reroutable && c.outN == 0 && isAbort(c.outErr) && !c.fwdDone.Load() {
		c.early.Store(true)
		_ = c.client.SetReadDeadline(aLongTimeAgo)
		return
	}
	c.close(isAbort(c.outErr))
}

// pipe copies src to dst until src's EOF, which it passes on as a FIN
// (CloseWrite) so the other direction keeps running: a client may send its
// request, shut down writing, and still read the answer.
//
// The idle timeout costs nothing per byte: each copyWindow runs under a read
// deadline one window away; when it expires with bytes
// moved, the window is recorded in lastActive and the copy resumes; when it
// expires with none, the connection is idle only if neither direction moved
// bytes for the idle timeout. Only read deadlines are used: a write deadline
// that fires in splice's pump step drops the bytes already in the pipe.
//
// buf[:n] (buf may be nil), bytes already read from src, are written first.
func (c *tcpConn) pipe(dst, src *fastconn.Conn, counter *atomic.Uint64, idle, window time.Duration, buf *[]byte, n int) (int64, error) {
	var total int64
	for {
		if err := src.SetReadDeadline(fastconn.DeadlineIn(window)); err != nil {
			return total, err
		}
		// Checked after the deadline is set: backendToClient sets early
		// before it moves the deadline to the past, so either this sees
		// early or the past deadline is the one in force.
		if src == c.client && c.early.Load() {
			return total, errEarly
		}
		moved, err := copyWindow(dst, src, buf, n)
		buf, n = nil, 0
		if moved > 0 {
			total += moved
			counter.Add(uint64(moved))
			c.lastActive.Store(int64(fastconn.Mono()))
		}
		switch {
		case err == nil: // src sent FIN
			// The direction that ends second skips the shutdown: both
			// sockets are read to their FIN, so the close that follows at
			// once sends the FIN (not a reset), and one system call per
			// connection is saved.
			if c.sawEOF() == 2 {
				return total, nil
			}
			return total, dst.CloseWrite()
		case !errors.Is(err, os.ErrDeadlineExceeded):
			return total, err
		case src == c.client && c.early.Load():
			return total, errEarly
		case moved == 0 && fastconn.Mono()-c.lastMoved() >= idle:
			return total, errIdle
		}
	}
}

// sawEOF counts a direction whose source sent its FIN, and returns how
// many have. After the first, the direction left is watched for the idle
// timeout (watch).
func (c *tcpConn) sawEOF() int32 {
	n := c.eofs.Add(1)
	if n == 1 {
		c.watch()
	}
	return n
}

// watch closes c once no byte has moved on it for the idle timeout,
// checked every copy window, until it is closed. While both directions
// run, each one's read deadline makes that check (pipe). The direction
// left alone may instead wait to write to a peer that no longer reads (a
// client that sent its request and its FIN, then stopped reading the
// answer): that write has no deadline (see pipe), and without this the
// connection, its descriptors and its pipe's buffered bytes would stay for
// good.
func (c *tcpConn) watch() {
	// Armed only once stored, for checkIdle to find.
	t := time.AfterFunc(math.MaxInt64, c.checkIdle)
	c.watchdog.Store(t)
	if c.closed.Load() {
		t.Stop() // close ran before the store: it could not stop t
		return
	}
	t.Reset(c.port.p.window)
}

// checkIdle is the watchdog's check; see watch.
func (c *tcpConn) checkIdle() {
	if c.closed.Load() {
		return
	}
	if fastconn.Mono()-c.lastMoved() >= c.port.p.cfg.IdleTimeout {
		c.close(false)
		return
	}
	c.watchdog.Load().Reset(c.port.p.window)
}

// lastMoved is when bytes last moved on c (fastconn.Mono): at a window's
// end (lastActive), or while the other direction's splice empties its pipe
// into a slow reader, which can outlast the idle timeout with bytes moving
// all along.
func (c *tcpConn) lastMoved() time.Duration {
	return max(time.Duration(c.lastActive.Load()), c.client.SplicedAt(), c.backend.SplicedAt())
}

// copyWindow copies src to dst until src's EOF (a nil error), an error, or
// the read deadline.
//
// Small messages, the request and answer traffic of most services, go
// through a pooled buffer: one read and one write, both raw system calls
// that keep the scheduler's P (see fastconn). While the copy waits,
// fastconn's poller makes them itself (RelayTo) and this goroutine wakes
// only when the relay stops: at the FIN, an error, a read that fills the
// buffer, or bytes dst cannot take at once. TCP keep-alive, CPU per
// request: 19.5 -> 16.9 µs (HAProxy 18.25). splice(2) moves them through a
// pipe instead, with a detour through the poller that the raw calls avoid;
// keep-alive requests through the TCP plane, bench/http: splice 0.92x
// HAProxy, plain read and write 0.77x, raw 1.0x. A read that fills the
// buffer means bulk data: the rest of the window is spliced, which moves it
// without copying it through user space (bulk through the copy alone: 0.44x
// of a direct transfer; spliced: 0.9x). fastconn.Splice rather than the net
// package's: its splice calls are raw too, and a call moving a megabyte is
// long enough for sysmon to hand the P to another thread (same bulk rate,
// 14% less CPU, a third of the context switches).
//
// The count includes bytes read whose write failed: they left src's socket,
// so the client can no longer be moved to another backend (see forward).
// buf[:n] (buf may be nil) are bytes read before, written first.
func copyWindow(dst, src *fastconn.Conn, buf *[]byte, n int) (int64, error) {
	var total int64
	for {
		var err error
		if buf == nil {
			var moved int64
			moved, buf, n, err = src.RelayTo(dst, copyBufs)
			total += moved
		}
		if n > 0 {
			total += int64(n)
			_, werr := dst.Write((*buf)[:n])
			copyBufs.Put(buf)
			buf = nil
			if werr != nil {
				return total, werr
			}
			if n == copyBufSize {
				m, err := fastconn.Splice(dst, src)
				return total + m, err
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// close closes both sockets once. With abort, the sockets are reset
// (SO_LINGER 0) rather than closed with a FIN, so a peer whose other side
// reset sees a reset too, not a clean end that would pass a truncated reply
// for a whole one.
func (c *tcpConn) close(abort bool) {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		if t := c.watchdog.Load(); t != nil {
			t.Stop()
		}
		if abort {
			_ = c.client.SetLinger(0)
			_ = c.backend.SetLinger(0)
		}
		c.client.Close()
		c.backend.Close()
	})
}

// isAbort says whether err broke the stream (a peer's reset, a failed
// write), as opposed to our own close (idle, drain, shutdown) or the other
// direction having closed the sockets already.
func isAbort(err error) bool {
	return err != nil && !errors.Is(err, errIdle) && !errors.Is(err, net.ErrClosed)
}
