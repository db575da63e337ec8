package httpproxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/health"
	"github.com/pacer-lb/pacer/internal/fastconn"
	"github.com/pacer-lb/pacer/proxy"
)

// Proxy is the HTTP data plane.
type Proxy struct {
	// applied is the version of the last snapshot whose listeners are open.
	applied    atomic.Uint64
	cfg        Config
	table      *discovery.Table
	log        *zap.Logger
	dialer     net.Dialer // for Upgrade tunnels; pools use fastconn.Dial
	retryAfter []byte

	// idx is the route index of the newest snapshot seen; see routes.go.
	idx atomic.Pointer[routeIndex]
	mu  sync.Mutex // guards backends, states and index builds
	// backends are the pools, keyed by address, shared by every service
	// that routes to the address.
	backends map[netip.AddrPort]*backend
	states   map[discovery.ServiceKey]*svcState
	// left holds the backends no service routes to any more whose answers
	// still stream, until they end or the address is routed again.
	left map[netip.AddrPort][]*backend

	lmu     sync.Mutex // guards ports, vhosts, closing
	ports   *proxy.PortSet[*httpPort]
	vhosts  []*httpPort
	closing bool

	// capped holds a slot per open client connection: Config.ConnLimit,
	// shared with the TCP plane, or a cap of Config.MaxConns of its own.
	capped *proxy.ConnLimit

	cmu   sync.Mutex // guards conns, hijacks, tunnels, ntunnels, killed and listenRun.cut
	conns map[net.Conn]*listenRun
	// hijacks holds, for a client connection handed to fasthttp for a
	// hijack that has not run yet, what to release should it never run
	// (see hijack).
	hijacks map[net.Conn]func()
	// tunnels are the open tunnels by backend address (see sweepTunnels).
	tunnels  map[netip.AddrPort]*backendTunnels
	ntunnels int
	killed   bool

	quit     chan struct{}
	quitOnce sync.Once
	// portDrains counts the drains of listeners closed for good before
	// Shutdown (StopListening), which Shutdown waits for within its own
	// drain; killedCh is closed when Shutdown's drain ends (killAll).
	portDrains sync.WaitGroup
	killedCh   chan struct{}
	killOnce   sync.Once
	wg         sync.WaitGroup // Serve goroutines

	totals struct{ notFound, refused, inPoller atomic.Uint64 }
}

// httpPort is one listener: a service port, or a --http listener.
type httpPort struct {
	p     *Proxy
	port  int
	vhost bool
	// Guarded by Proxy.lmu: the listener open now, its server, and their
	// run.
	ln   *limitListener
	sock *net.TCPListener // the socket under ln
	srv  *fasthttp.Server
	run  *listenRun

	accepted atomic.Uint64
	active   atomic.Int64
	failed   atomic.Uint64
}

// listenRun is one opening of a listener, from Listen (or ServeVHost) to
// the end of its drain. A service port's httpPort outlives its listeners
// (its counters survive the port leaving the table and coming back), and
// the connections of a listener closed for good drain while those of the
// next one on the same port are served as usual: so the drain's state is
// the run's, which the listener's server and its connections' exchangers
// hold, not the port's.
type listenRun struct {
	hp *httpPort
	// draining is set once the listener closed for good (Shutdown, or the
	// port left the table): requests go fasthttp's way, which drains them,
	// and every answer closes its connection.
	// exchanges counts the requests in flight that the poller serves
	// (exchange.go), which fasthttp sees as idle connections and would
	// close under them: the drain waits for them first (drainExchanges).
	draining  atomic.Bool
	exchanges atomic.Int64
	// cut is set, under Proxy.cmu, once the drain's deadline closed the
	// run's connections: one that fasthttp reports new after that is
	// closed at once.
	cut bool
}

// drainLeftMsg is the warning for requests the poller sent whose answers
// did not come within a drain: their clients get no answer from this
// process.
const drainLeftMsg = "requests still waiting for their backends at the end of the drain"

// drainExchanges stops the poller from taking lr's requests and waits
// until those it took are answered, or ctx ends; it returns how many were
// still unanswered then.
func (lr *listenRun) drainExchanges(ctx context.Context) int64 {
	lr.draining.Store(true)
	for lr.exchanges.Load() > 0 && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	return lr.exchanges.Load()
}

// New returns a Proxy that routes by table. It opens nothing until Run or
// ServeVHost.
func New(cfg Config, table *discovery.Table, log *zap.Logger) (*Proxy, error) {
	if table == nil {
		return nil, errors.New("http proxy: nil table")
	}
	if log == nil {
		log = zap.NewNop()
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		cfg:        cfg,
		table:      table,
		log:        log.Named("http"),
		dialer:     net.Dialer{Timeout: cfg.DialTimeout},
		retryAfter: strconv.AppendInt(nil, int64(math.Ceil(cfg.RetryAfter.Seconds())), 10),
		backends:   map[netip.AddrPort]*backend{},
		states:     map[discovery.ServiceKey]*svcState{},
		left:       map[netip.AddrPort][]*backend{},
		conns:      map[net.Conn]*listenRun{},
		hijacks:    map[net.Conn]func(){},
		tunnels:    map[netip.AddrPort]*backendTunnels{},
		quit:       make(chan struct{}),
		killedCh:   make(chan struct{}),
	}
	p.capped = cfg.ConnLimit
	if p.capped == nil {
		p.capped = proxy.NewConnLimit(cfg.MaxConns, p.log)
	}
	p.ports = proxy.NewPortSet(cfg.PortMin, cfg.PortMax, p.log, func(port int) *httpPort {
		return &httpPort{p: p, port: port}
	})
	p.ports.SetOwnListeners(cfg.OwnListeners)
	p.ports.SetHandoff(cfg.Handoff)
	return p, nil
}

// newServer returns the fasthttp server of one run of a listener.
func (p *Proxy) newServer(lr *listenRun, h fasthttp.RequestHandler) *fasthttp.Server {
	return &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			h(ctx)
			if lr.draining.Load() {
				// A draining listener's connections end with their
				// answers: fasthttp closes them only while its Shutdown
				// runs, which starts once the poller's requests are
				// answered, and ends, at the deadline, by serving the
				// connections left as if no Shutdown had begun.
				ctx.SetConnectionClose()
			}
		},
		ErrorHandler: p.serverError,
		// The read buffer bounds the request header: larger gets 431.
		ReadBufferSize:  p.cfg.MaxHeaderBytes,
		WriteBufferSize: 8 << 10,
		// ReadTimeout runs from a request's first byte through its header
		// (and a body up to streamAbove): slowloris gets 408. Streamed
		// bodies push the deadline forward as they move (copyBody).
		ReadTimeout:  p.cfg.ReadHeaderTimeout,
		WriteTimeout: p.cfg.BodyTimeout,
		IdleTimeout:  p.cfg.ClientIdleTimeout,
		// With StreamRequestBody this is the size above which a body streams.
		MaxRequestBodySize:            streamAbove,
		StreamRequestBody:             true,
		DisableHeaderNamesNormalizing: true,
		DisablePreParseMultipartForm:  true,
		NoDefaultServerHeader:         true,
		NoDefaultDate:                 true,
		NoDefaultContentType:          true,
		CloseOnShutdown:               true,
		KeepHijackedConns:             true,
		// The cap is enforced by the listener (at most its Max of this
		// plane's connections, however many the TCP plane has when it is
		// shared); this only must not bite first.
		Concurrency: 2*int(p.capped.Status().Max) + 64,
		ConnState: func(c net.Conn, s fasthttp.ConnState) {
			switch s {
			case fasthttp.StateNew:
				p.connOpened(c, lr)
			case fasthttp.StateIdle:
				connIdle(c)
			case fasthttp.StateClosed:
				dropResume(c)
				p.connClosed(c)
			}
		},
		Logger: fasthttpLogger{p.log},
		// A close among Connection's options, in any case, closes the
		// connection after the answer (RFC 9112 9.6), as fasthttp does for
		// an exact "close" only: set here, before fasthttp reads the flag,
		// it holds for every answer to the request, pacer's own included.
		// An Expect is put the way fasthttp answers it as it should
		// (fixExpect), before fasthttp looks at it.
		HeaderReceived: func(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
			f := rawFraming(h.RawHeaders())
			if f.close { // asksClose, with the one scan of the raw header
				h.SetConnectionClose()
			}
			if f.expect {
				fixExpect(h)
			}
			return fasthttp.RequestConfig{} // the server's settings
		},
		// A body over the limit is refused before the client sends it.
		ExpectHandler: func(ctx *fasthttp.RequestCtx) int {
			if max := p.cfg.MaxRequestBodySize; max > 0 && int64(ctx.Request.Header.ContentLength()) > max {
				return fasthttp.StatusRequestEntityTooLarge
			}
			return fasthttp.StatusContinue
		},
	}
}

// serverError answers requests fasthttp could not read.
func (p *Proxy) serverError(ctx *fasthttp.RequestCtx, err error) {
	dropResume(ctx.Conn()) // the poller may have sent what fasthttp refused
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.As(err, &small):
		p.plain(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge, "pacer: request header too large\n")
	case isTimeout(err):
		p.plain(ctx, fasthttp.StatusRequestTimeout, "pacer: request not received in time\n")
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		p.plain(ctx, fasthttp.StatusRequestEntityTooLarge, "pacer: request body too large\n")
	default:
		p.plain(ctx, fasthttp.StatusBadRequest, "pacer: malformed request\n")
	}
}

type fasthttpLogger struct{ log *zap.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	if ce := l.log.Check(zap.DebugLevel, "fasthttp"); ce != nil {
		ce.Write(zap.String("msg", fmt.Sprintf(format, args...)))
	}
}

func (p *Proxy) connOpened(c net.Conn, lr *listenRun) {
	hp := lr.hp
	if fc, ok := c.(*fastconn.Conn); ok {
		x := &exchanger{p: p, hp: hp, lr: lr, c: fc}
		x.between.Store(true)
		fc.SetExchanger(x)
	}
	hp.accepted.Add(1)
	hp.active.Add(1)
	p.cmu.Lock()
	p.conns[c] = lr
	killed := p.killed || lr.cut
	p.cmu.Unlock()
	if killed {
		c.Close()
	}
}

// connClosed forgets a client connection: fasthttp closed it, or the tunnel
// it was hijacked for ended. A hijack of c that never ran is abandoned.
func (p *Proxy) connClosed(c net.Conn) {
	p.cmu.Lock()
	lr, ok := p.conns[c]
	delete(p.conns, c)
	abandon := p.hijacks[c]
	delete(p.hijacks, c)
	p.cmu.Unlock()
	if ok {
		lr.hp.active.Add(-1)
		p.capped.Release()
	}
	if abandon != nil {
		abandon()
	}
}

// hijack hands c, the connection of ctx, to run once fasthttp is done with
// the request, with no answer of fasthttp's own (run gets fasthttp's
// hijacked connection, which reads what fasthttp had buffered of c
// first). fasthttp drops a hijack
// it cannot make (it sets a deadline on c first, which fails if c was
// closed meanwhile: by the end of its port's drain or of a stop) and then
// reports c closed: abandon runs then instead of run, to release what run
// would have (a backend connection, the service's count of active
// requests), which would otherwise stay held for good.
func (p *Proxy) hijack(ctx *fasthttp.RequestCtx, c net.Conn, run func(hijacked net.Conn), abandon func()) {
	p.cmu.Lock()
	p.hijacks[c] = abandon
	p.cmu.Unlock()
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(hijacked net.Conn) {
		p.cmu.Lock()
		_, ok := p.hijacks[c]
		delete(p.hijacks, c)
		p.cmu.Unlock()
		if ok {
			run(hijacked)
		}
	})
	if h := testHookHijacked.Load(); h != nil {
		(*h)(c)
	}
}

// testHookHijacked, if set, runs when a handler has handed its connection
// to fasthttp for a hijack, before fasthttp makes it.
var testHookHijacked atomic.Pointer[func(net.Conn)]

// held reports whether connections of lr are still open: busy ones
// fasthttp waits for, and tunnels, which it forgot when they were
// hijacked.
func (p *Proxy) held(lr *listenRun) bool {
	p.cmu.Lock()
	defer p.cmu.Unlock()
	for _, r := range p.conns {
		if r == lr {
			return true
		}
	}
	return false
}

// cut closes the connections of lr still open at the end of its drain,
// and returns how many it closed.
func (p *Proxy) cut(lr *listenRun) int {
	p.cmu.Lock()
	defer p.cmu.Unlock()
	lr.cut = true
	n := 0
	for c, r := range p.conns {
		if r == lr {
			c.Close()
			n++
		}
	}
	return n
}

// Applied returns the version of the newest snapshot whose service ports
// have been opened (or failed to bind); readiness compares it with the table's.
func (p *Proxy) Applied() uint64 { return p.applied.Load() }

// Run follows the table until ctx is done or Shutdown is called: it opens a
// listener for every service port an HTTP-mode service claims inside
// [PortMin, PortMax], closes those nobody claims any more (their in-flight
// requests finish within DrainTimeout), keeps the route index current and
// closes idle pooled connections as they expire. Listeners stay open across
// every other change. It closes its listeners when it returns. Call it once.
func (p *Proxy) Run(ctx context.Context) error {
	defer p.closePortListeners()
	reap := time.NewTicker(max(p.cfg.PoolIdleTimeout/2, 10*time.Millisecond))
	defer reap.Stop()
	var applied uint64
	first, retryDue := true, false
	var retry <-chan time.Time // armed while a port fails to bind
	var parked <-chan struct{} // the same: the TCP plane let a port go
	for {
		snap := p.table.Snapshot()
		if first || snap.Version() != applied || retryDue {
			p.routes()
			parkedNext := p.cfg.Handoff.Parked() // before apply: a park during it wakes us
			p.apply(snap)
			applied, first, retryDue = snap.Version(), false, false
			p.applied.Store(applied)
			retry, parked = nil, nil
			if p.bindFailing() {
				retry, parked = time.After(proxy.BindRetry), parkedNext
			}
		}
		select {
		case <-snap.Changed():
		case <-retry:
			retryDue = true
		case <-parked:
			retryDue = true
		case now := <-reap.C:
			p.reap(now)
		case <-ctx.Done():
			return nil
		case <-p.quit:
			return nil
		}
	}
}

func (p *Proxy) reap(now time.Time) {
	p.mu.Lock()
	bs := make([]*backend, 0, len(p.backends))
	for _, b := range p.backends {
		bs = append(bs, b)
	}
	p.mu.Unlock()
	for _, b := range bs {
		b.reap(now)
	}
}

// bindFailing reports whether a claimed port failed to bind.
func (p *Proxy) bindFailing() bool {
	p.lmu.Lock()
	defer p.lmu.Unlock()
	return p.ports.Failing()
}

// apply brings the service-port listeners in line with snap.
func (p *Proxy) apply(snap *discovery.Snapshot) {
	claimed, elsewhere := map[int]bool{}, map[int]bool{}
	for _, port := range snap.Ports() {
		if s := snap.Service(port); s != nil && p.cfg.Carries(s) {
			claimed[port] = true
		} else if s != nil {
			elsewhere[port] = true // the TCP plane's, or nobody's (UDP)
		}
	}
	p.lmu.Lock()
	if p.closing {
		p.lmu.Unlock()
		return
	}
	opened := p.ports.Sync(claimed, elsewhere)
	p.lmu.Unlock()
	if hook := p.cfg.OnListening; hook != nil {
		for _, o := range opened {
			hook(o.Port, o.Addr)
		}
	}
}

// Listen opens hp's listener, or takes adopt, the socket the TCP plane let
// go, and serves it. Called with p.lmu held, by PortSet.Sync.
func (hp *httpPort) Listen(adopt *net.TCPListener) (net.Addr, error) {
	p := hp.p
	// Plain TCP without keep-alive probes (see fastconn.Listen);
	// ClientIdleTimeout closes a client that went silent.
	var ln net.Listener = adopt
	if adopt == nil {
		var err error
		if ln, err = Listen(net.JoinHostPort(p.cfg.Bind, strconv.Itoa(hp.port))); err != nil {
			return nil, err
		}
	}
	hp.sock = ln.(*net.TCPListener)
	lr := &listenRun{hp: hp}
	hp.ln, hp.srv, hp.run = p.limit(ln), p.newServer(lr, p.servePort(lr)), lr
	if adopt != nil {
		p.log.Info("http listener taken over from the TCP plane", zap.Int("port", hp.port), zap.Stringer("addr", ln.Addr()))
	} else {
		p.log.Info("http listener opened", zap.Int("port", hp.port), zap.Stringer("addr", ln.Addr()))
	}
	p.wg.Add(1)
	go p.serveListener(hp.srv, hp.ln)
	return ln.Addr(), nil
}

// Listening reports whether hp is bound. Called with p.lmu held.
func (hp *httpPort) Listening() bool { return hp.ln != nil }

// Socket returns hp's listening socket while it is bound. Called with
// p.lmu held.
func (hp *httpPort) Socket() *net.TCPListener { return hp.sock }

// Busy reports whether client connections are open on hp.
func (hp *httpPort) Busy() bool { return hp.active.Load() > 0 }

// StopListening stops hp's listener; its in-flight requests finish
// (answered with Connection: close) within DrainTimeout, and the
// connections still open then are closed. Called with p.lmu held.
func (hp *httpPort) StopListening() {
	p := hp.p
	srv, ln, lr := hp.srv, hp.ln, hp.run
	hp.srv, hp.ln, hp.run, hp.sock = nil, nil, nil, nil
	ln.Close()
	p.log.Info("http listener closed", zap.Int("port", hp.port))
	drain := p.cfg.DrainTimeout
	// Counted in p.wg and p.portDrains: a Shutdown meanwhile lets it run
	// to the end of Shutdown's own drain at most (killedCh), then closes
	// what is left; nothing of it outlives the Proxy.
	p.wg.Add(1)
	p.portDrains.Add(1)
	go func() {
		defer p.wg.Done()
		defer p.portDrains.Done()
		ctx, cancel := context.WithTimeout(context.Background(), drain)
		defer cancel()
		go func() {
			select {
			case <-p.killedCh:
				cancel()
			case <-ctx.Done():
			}
		}()
		if n := lr.drainExchanges(ctx); n > 0 {
			p.log.Warn(drainLeftMsg, zap.Int("port", hp.port), zap.Int64("requests", n))
		}
		_ = srv.ShutdownWithContext(ctx)
		// fasthttp's Shutdown returns at the deadline without closing the
		// connections still busy, and serves them on as if it had never
		// begun; it forgot tunnels when they were hijacked. Both get the
		// rest of the drain, and are closed at its end.
		if !p.held(lr) {
			return
		}
		<-ctx.Done()
		if n := p.cut(lr); n > 0 {
			p.log.Warn("closed connections still open at the end of the drain", zap.Int("port", hp.port), zap.Int("connections", n))
		}
	}()
}

func (p *Proxy) serveListener(srv *fasthttp.Server, ln net.Listener) {
	defer p.wg.Done()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
		p.log.Warn("http listener stopped", zap.Stringer("addr", ln.Addr()), zap.Error(err))
	}
}

func (p *Proxy) closePortListeners() {
	p.lmu.Lock()
	defer p.lmu.Unlock()
	p.closing = true
	for hp := range p.ports.All() {
		if hp.ln != nil {
			hp.ln.Close()
		}
	}
}

// Listen opens a listener for ServeVHost on addr as the proxy opens its
// service ports: plain TCP (not MPTCP, which Go picks by default and which
// keeps the proxy's TCP options from reaching the connections) and no
// keep-alive probes (see fastconn.Listen).
func Listen(addr string) (net.Listener, error) {
	return fastconn.Listen(context.Background(), addr)
}

// ServeVHost serves the --http listener: every HTTP-mode service with a
// VHOST, routed by Host and PATH. It returns when ln is closed or Shutdown
// is called (nil then), and may be called for several listeners.
func (p *Proxy) ServeVHost(ln net.Listener) error {
	hp := &httpPort{vhost: true}
	if a, ok := ln.Addr().(*net.TCPAddr); ok {
		hp.port = a.Port
	}
	lr := &listenRun{hp: hp}
	p.lmu.Lock()
	if p.closing {
		p.lmu.Unlock()
		ln.Close()
		return nil
	}
	// Served from locals: a Shutdown may clear hp's fields once the lock
	// is released (it closes the listener, and Serve then returns).
	lln, srv := p.limit(ln), p.newServer(lr, p.serveVHost)
	hp.ln, hp.srv, hp.run = lln, srv, lr
	p.vhosts = append(p.vhosts, hp)
	p.lmu.Unlock()
	p.log.Info("http vhost listener serving", zap.Stringer("addr", ln.Addr()))
	err := srv.Serve(lln)
	if err != nil && (errors.Is(err, net.ErrClosed) || p.isClosing()) {
		err = nil
	}
	return err
}

func (p *Proxy) isClosing() bool {
	p.lmu.Lock()
	defer p.lmu.Unlock()
	return p.closing
}

// Shutdown stops accepting on every listener; in-flight requests finish,
// answered with Connection: close, and idle keep-alive connections close.
// When ctx ends or DrainTimeout passes, whichever is first, the connections
// and tunnels still open are closed. It returns ctx.Err() if ctx ended the
// drain. Safe to call more than once and concurrently with Run.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.quitOnce.Do(func() { close(p.quit) })
	p.lmu.Lock()
	p.closing = true
	var srvs []*fasthttp.Server
	var lrs []*listenRun
	for hp := range p.ports.All() {
		if hp.srv != nil {
			srvs, lrs = append(srvs, hp.srv), append(lrs, hp.run)
			hp.ln.Close()
			hp.srv, hp.ln, hp.run, hp.sock = nil, nil, nil, nil
		}
	}
	for _, hp := range p.vhosts {
		if hp.srv != nil {
			srvs, lrs = append(srvs, hp.srv), append(lrs, hp.run)
			hp.ln.Close()
			hp.srv, hp.ln, hp.run, hp.sock = nil, nil, nil, nil
		}
	}
	p.lmu.Unlock()

	dctx, cancel := context.WithTimeout(ctx, p.cfg.DrainTimeout)
	defer cancel()
	var (
		wg   sync.WaitGroup
		left atomic.Int64
	)
	for i, srv := range srvs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			left.Add(lrs[i].drainExchanges(dctx))
			_ = srv.ShutdownWithContext(dctx)
		}()
	}
	wg.Wait()
	if n := left.Load(); n > 0 {
		p.log.Warn(drainLeftMsg, zap.Int64("requests", n))
	}
	// Ports that left the table before the stop drain on: their requests
	// get the rest of this drain too.
	portsDrained := make(chan struct{})
	go func() {
		p.portDrains.Wait()
		close(portsDrained)
	}()
	select {
	case <-portsDrained:
	case <-dctx.Done():
	}
	// Tunnels (WebSockets) have no request boundary to stop at: they get
	// the rest of the drain, polled because they end on their own.
	for p.tunnelCount() > 0 && dctx.Err() == nil {
		t := time.NewTimer(20 * time.Millisecond)
		select {
		case <-t.C:
		case <-dctx.Done():
			t.Stop()
		}
	}
	if h := testHookBeforeKill.Load(); h != nil {
		(*h)()
	}
	n := p.killAll()
	if n > 0 {
		p.log.Warn("closed connections still open at the end of the drain", zap.Int("connections", n))
	}
	p.wg.Wait()
	p.mu.Lock()
	for _, b := range p.backends {
		b.close()
	}
	p.mu.Unlock()
	if n > 0 && ctx.Err() != nil {
		return ctx.Err()
	}
	return nil
}

func (p *Proxy) tunnelCount() int {
	p.cmu.Lock()
	defer p.cmu.Unlock()
	return p.ntunnels
}

// testHookBeforeKill, if set, runs as Shutdown's drain ends, before it
// closes what is still open.
var testHookBeforeKill atomic.Pointer[func()]

// killAll closes every client connection and tunnel still open.
func (p *Proxy) killAll() int {
	p.killOnce.Do(func() { close(p.killedCh) })
	p.cmu.Lock()
	defer p.cmu.Unlock()
	p.killed = true
	n := 0
	for c := range p.conns {
		c.Close()
		n++
	}
	for _, bt := range p.tunnels {
		for t := range bt.conns {
			t.client.Close()
			t.backend.Close()
		}
	}
	return n
}

// Ports reports every listener of this proxy: the service ports HTTP-mode
// services claim (in range or not) or that still hold connections, then the
// --http listeners. Sorted by port, the --http listeners last. Active and
// Total count client connections; BytesIn and BytesOut are not counted for
// HTTP; Failed counts requests that arrived on a port after its service
// left (per-service 502/503/504 are in Stats).
func (p *Proxy) Ports() []proxy.PortStatus {
	snap := p.table.Snapshot()
	var claimed []int
	for _, port := range snap.Ports() {
		if s := snap.Service(port); s != nil && p.cfg.Carries(s) {
			claimed = append(claimed, port)
		}
	}
	p.lmu.Lock()
	defer p.lmu.Unlock()
	out := p.ports.Status(claimed)
	for _, hp := range p.vhosts {
		out = append(out, hp.Status())
	}
	return out
}

// Status reads hp's counters; called with p.lmu held.
func (hp *httpPort) Status() proxy.PortStatus {
	plane := "http"
	if hp.vhost {
		plane = "vhost"
	}
	return proxy.PortStatus{
		Port:      hp.port,
		Plane:     plane,
		Listening: hp.ln != nil,
		Active:    hp.active.Load(),
		Total:     hp.accepted.Load(),
		Failed:    hp.failed.Load(),
	}
}

// Stats reports every service the proxy routes now, sorted by app and port
// index.
func (p *Proxy) Stats() []ServiceStats {
	p.routes()
	p.mu.Lock()
	out := make([]ServiceStats, 0, len(p.states))
	for _, st := range p.states {
		out = append(out, st.stats())
	}
	p.mu.Unlock()
	slices.SortFunc(out, func(a, b ServiceStats) int {
		if c := cmp.Compare(a.App, b.App); c != 0 {
			return c
		}
		return cmp.Compare(a.PortIndex, b.PortIndex)
	})
	return out
}

// Totals reports the requests no service answered, and how many the poller
// answered itself.
func (p *Proxy) Totals() Totals {
	return Totals{NotFound: p.totals.notFound.Load(), Refused: p.totals.refused.Load(), InPoller: p.totals.inPoller.Load()}
}

// limitListener holds a slot of the connection cap (Proxy.capped) per
// accepted connection; the slot is given back when fasthttp reports the
// connection closed (or its tunnel ends). It hands fasthttp each
// connection as a fastconn.Conn, whose system calls are all raw, whose
// reads and writes keep the scheduler's P and batch (see fastconn); a
// tunnel splices through it.
type limitListener struct {
	net.Listener
	log    *zap.Logger
	capped *proxy.ConnLimit
	done   chan struct{}
	once   sync.Once
}

// limit wraps ln; a TCP listener defers accepts and acknowledgements (see
// proxy.TuneListener) and accepts through fastconn.Listener.
func (p *Proxy) limit(ln net.Listener) *limitListener {
	if tl, ok := ln.(*net.TCPListener); ok {
		if err := proxy.TuneListener(tl, true); err != nil {
			p.log.Warn("HTTP listener options not set", zap.Stringer("addr", ln.Addr()), zap.Error(err))
		}
		if fl, err := fastconn.NewListener(tl); err == nil {
			ln = fl
		}
	}
	return &limitListener{Listener: ln, log: p.log, capped: p.capped, done: make(chan struct{})}
}

// Accept returns the next connection. At the connection cap it waits for
// room before it accepts, as the TCP plane's accept loops do, so that new
// clients wait in the listen backlog; it takes its slot only once it holds
// a connection: a listener with no client pending holds no slot that a
// client waiting on another port, of either plane, needs. Running out of
// descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) pauses
// accepting, as net/http does, rather than ending it: fasthttp stops
// serving a listener for good on any accept error it does not take for a
// timeout, and these pass once connections close.
func (l *limitListener) Accept() (net.Conn, error) {
	var pause time.Duration
	for {
		if !l.capped.WaitBelow(l.done, nil) {
			return nil, net.ErrClosed
		}
		c, err := l.Listener.Accept()
		if err == nil {
			// Another loop may have taken the last slot since: this
			// connection then waits, held, as the TCP plane's do.
			if !l.capped.Acquire(l.done, nil) {
				c.Close()
				return nil, net.ErrClosed
			}
			if tc, ok := c.(*net.TCPConn); ok {
				if fc, err := fastconn.New(tc); err == nil {
					return fc, nil
				}
			}
			return c, nil // a closed connection: fasthttp's first read fails
		}
		if !health.LocalShortage(err) {
			return nil, err
		}
		if pause == 0 {
			l.log.Warn("accept failed, pausing", zap.Stringer("addr", l.Addr()), zap.Error(err))
		}
		pause = min(max(2*pause, acceptPauseMin), acceptPauseMax)
		select {
		case <-time.After(pause):
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
}

// After running out of resources, Accept pauses from 5 ms, doubling to 1 s.
const (
	acceptPauseMin = 5 * time.Millisecond
	acceptPauseMax = time.Second
)

func (l *limitListener) Close() error {
	err := net.ErrClosed
	l.once.Do(func() {
		close(l.done)
		err = l.Listener.Close()
	})
	return err
}
