package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/admin"
	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/dnsserver"
	"github.com/pacer-lb/pacer/health"
	"github.com/pacer-lb/pacer/internal/fastconn"
	"github.com/pacer-lb/pacer/proxy"
	"github.com/pacer-lb/pacer/proxy/httpproxy"
)

// hooks let tests and the demo follow pacer's start; all optional.
type hooks struct {
	// listening is called once the admin and DNS listeners are open.
	listening func(admin net.Addr, dnsUDP net.Addr)
	// ready is called once, after the first sync of every source, when the
	// service-port listeners match the table: what /healthz calls ready.
	ready func()
}

// latch returns a check that holds once check held: ready once, ready for
// good. After the first sync every table change opens a moment before both
// data planes applied it, and /healthz must not fail then (a peer acting on
// one failure would flap). A source that loses its connection later shows
// as "stale", not as starting.
func latch(check func() bool) func() bool {
	var held atomic.Bool
	return func() bool {
		if held.Load() {
			return true
		}
		if check() {
			held.Store(true)
			return true
		}
		return false
	}
}

// healthConfig is the checker's configuration from the flags. The probe
// timeout goes as given: the checker caps it by each check's own interval
// (a PACER_{n}_HEALTHCHECK_INTERVAL label may be longer than
// --health-interval, and its probes may take longer too).
func healthConfig(cfg *config) health.Config {
	return health.Config{
		Interval: cfg.healthInterval,
		Timeout:  cfg.healthTimeout,
		Rise:     cfg.healthRise,
		Fall:     cfg.healthFall,
	}
}

// run wires the table, the Marathon source, the TCP proxy, DNS and the admin
// listener, and serves until ctx is cancelled (SIGTERM, SIGINT). Then it makes
// /healthz fail, withdraws this instance, keeps accepting for --shutdown-delay,
// stops accepting, drains for up to --drain-timeout, and returns nil: a clean
// stop exits 0. Closing hurry ends the delay and the drain early.
func run(ctx context.Context, hurry <-chan struct{}, cfg *config, log *zap.Logger, h *hooks) error {
	if h == nil {
		h = &hooks{}
	}
	fastconn.UseRing(cfg.ioUring) // before the first listener starts the pollers
	if cfg.advertiseNote != "" {
		log.Warn("advertising the first non-loopback IPv4 address (127.0.0.1 if none) in lb."+cfg.domain+", not $HOST: set --advertise to choose",
			zap.String("reason", cfg.advertiseNote), zap.Stringer("advertise", cfg.advertise))
	}
	table := discovery.NewTable()

	src, err := newSources(cfg, table, log)
	if err != nil {
		return err
	}
	checker, err := health.New(healthConfig(cfg), table, log)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	own := ownListeners(cfg)
	// One budget for both planes, as HAProxy's global maxconn: the
	// default is derived from the descriptor limit, which a cap per plane
	// would let the planes overdraw together.
	conns := proxy.NewConnLimit(cfg.maxConns, log.Named("conns").With(zap.String("counted", "tcp and http clients")))
	// A service changing mode moves its port's socket from one plane to the
	// other without closing it.
	handoff := proxy.NewHandoff()
	defer handoff.Close()
	tcp, err := proxy.NewTCP(proxy.TCPConfig{
		Bind:           cfg.bind,
		PortMin:        cfg.portMin,
		PortMax:        cfg.portMax,
		DialTimeout:    cfg.dialTimeout,
		IdleTimeout:    cfg.idleTimeout,
		WaitForBackend: cfg.waitForBackend,
		DrainTimeout:   cfg.drainTimeout,
		ConnLimit:      conns,
		OwnListeners:   own,
		Handoff:        handoff,
		Report:         checker.Report,
	}, table, log)
	if err != nil {
		return fmt.Errorf("tcp proxy: %w", err)
	}
	warnMaxConns(cfg.maxConns, log)
	hp, err := httpproxy.New(httpproxy.Config{
		Bind:                cfg.bind,
		PortMin:             cfg.portMin,
		PortMax:             cfg.portMax,
		DialTimeout:         cfg.dialTimeout,
		DrainTimeout:        cfg.drainTimeout,
		TunnelIdleTimeout:   cfg.idleTimeout,
		OwnListeners:        own,
		TrustForwardedProto: cfg.trustForwarded,
		Report:              checker.Report,
		ConnLimit:           conns,
		Handoff:             handoff,
	}, table, log)
	if err != nil {
		return fmt.Errorf("http proxy: %w", err)
	}
	var httpLn net.Listener
	if cfg.httpAddr != "" {
		if httpLn, err = httpproxy.Listen(cfg.httpAddr); err != nil {
			return fmt.Errorf("--http: %w (%s)", err, listenHint(err, "pick a free port"))
		}
		defer httpLn.Close()
	}

	routes := map[string]http.Handler{}
	var dns *dnsserver.Server
	var dnsStats func() dnsserver.Stats
	dnsReady := make(chan net.Addr, 1)
	if cfg.dns != "" {
		dns, err = dnsserver.New(dnsserver.Config{
			Addr:        cfg.dns,
			Domain:      cfg.domain,
			TTL:         cfg.dnsTTL,
			Advertise:   cfg.advertise,
			PortMin:     cfg.portMin,
			PortMax:     cfg.portMax,
			OnListening: func(udp, _ net.Addr) { dnsReady <- udp },
		}, table, log)
		if err != nil {
			return fmt.Errorf("--dns: %w", err)
		}
		dnsStats = dns.Stats
		api := dns.APIHandler()
		routes["GET /v1/services/{service}"] = api
		routes["GET /v1/hosts/{host}"] = api
	} else {
		dnsReady <- nil
	}

	adminLn, err := net.Listen("tcp", cfg.admin)
	if err != nil {
		return fmt.Errorf("--admin: %w (%s)", err, listenHint(err, "is another pacer running? pick a free port"))
	}
	reporters := src.reporters()
	isReady := latch(func() bool {
		for _, s := range reporters {
			if !s.Status().Synced {
				return false
			}
		}
		v := table.Snapshot().Version()
		return tcp.Applied() >= v && hp.Applied() >= v
	})
	adm, err := admin.New(admin.Deps{
		Table:       table,
		Ready:       isReady,
		Sources:     reporters,
		Ports:       func() []proxy.PortStatus { return append(tcp.Ports(), hp.Ports()...) },
		ConnLimit:   conns.Status,
		HTTP:        hp.Stats,
		Health:      checker.Verdicts,
		HealthStats: checker.Stats,
		Resync:      src.resync,
		DNS:         dnsStats,
		Routes:      routes,
		Version:     version,
	}, log)
	if err != nil {
		adminLn.Close()
		return err
	}

	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The announcement is withdrawn as the drain begins, not after it (and
	// DNS stops answering lb.<domain> with this instance): clients that find
	// pacers in ZooKeeper or DNS stop choosing this one while it still
	// finishes their open connections.
	announceCtx, withdraw := context.WithCancel(runCtx)
	defer withdraw()
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	goRun := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	src.start(runCtx, goRun)
	goRun("health", func() error { return checker.Run(runCtx) })
	if dns != nil {
		goRun("--dns", func() error {
			if err := dns.Run(runCtx); err != nil {
				return fmt.Errorf("%w (%s)", err, listenHint(err, "pick a free port, or --dns \"\" to turn DNS off"))
			}
			return nil
		})
	}
	goRun("admin", func() error { return adm.Serve(adminLn) })
	goRun("admin change log", func() error { adm.FollowChanges(runCtx); return nil })

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	var dnsAddr net.Addr
	var fatal error
	select {
	case dnsAddr = <-dnsReady:
	case fatal = <-errc:
	case <-ctx.Done():
	}
	if fatal == nil && ctx.Err() == nil {
		// Only now may the data planes bind service ports: the defaults
		// put --dns :8053 inside --ports, and an app given port 8053 must
		// not take it from DNS when Marathon answers before DNS has bound
		// (pacer would stop at start with "--dns: address already in
		// use"). The app's port then fails to bind instead, and says why
		// (ownListeners). The admin and --http listeners are bound above.
		goRun("tcp proxy", func() error { return tcp.Run(runCtx) })
		goRun("http proxy", func() error { return hp.Run(runCtx) })
		if httpLn != nil {
			goRun("http listener", func() error { return hp.ServeVHost(httpLn) })
		}
		log.Info("pacer running", zap.String("version", version), zap.Strings("marathon", redactAll(cfg.marathon)),
			zap.String("ports", fmt.Sprintf("%s:%d-%d", cfg.bind, cfg.portMin, cfg.portMax)), zap.Stringer("admin", adminLn.Addr()),
			zap.Int64("max_conns", conns.Status().Max), zap.String("batching", batching()))
		if cfg.zkAnnounce != "" {
			ann, err := newAnnouncer(cfg, adminLn.Addr(), dnsAddr, log)
			if err != nil {
				fatal = err
			} else {
				goRun("zookeeper announcer", func() error { return ann.Run(announceCtx) })
			}
		}
		if h.listening != nil && fatal == nil {
			h.listening(adminLn.Addr(), dnsAddr)
		}
		readyTick := time.NewTicker(10 * time.Millisecond)
		defer readyTick.Stop()
	loop:
		for fatal == nil {
			select {
			case <-readyTick.C:
				if isReady() {
					readyTick.Stop()
					logReady(log, table.Snapshot().Version(), append(tcp.Ports(), hp.Ports()...))
					if h.ready != nil {
						h.ready()
					}
				}
			case <-ctx.Done():
				break loop
			case fatal = <-errc:
				break loop
			case <-hup:
				log.Info("SIGHUP: resync requested")
				src.resync()
			}
		}
	}

	// Stop: fail health checks and withdraw first so Marathon, load balancers
	// and clients stop sending, then stop accepting and let open connections
	// drain. Those that act on /healthz, ZooKeeper or a DNS answer do so only
	// after their next check or the TTL: --shutdown-delay keeps the listeners
	// open until then, so that a client acting on old news is still served
	// rather than refused. A stop for a fatal error, or before pacer was ever
	// ready, does not wait: nobody was sent here.
	adm.SetDraining()
	withdraw()
	if dns != nil {
		dns.Withdraw()
	}
	if fatal == nil && cfg.shutdownDelay > 0 && isReady() {
		log.Info("stopping: withdrawn, still accepting while clients move away", zap.Duration("shutdown_delay", cfg.shutdownDelay))
		delay := time.NewTimer(cfg.shutdownDelay)
		select {
		case <-delay.C:
		case <-hurry:
			delay.Stop()
			log.Info("stopping: shutdown delay cut short by a second signal")
		}
	}
	log.Info("stopping: draining connections", zap.Duration("drain_timeout", cfg.drainTimeout))
	drainCtx, drainCancel := context.WithTimeout(context.Background(), cfg.drainTimeout)
	defer drainCancel()
	go func() {
		select {
		case <-hurry:
			drainCancel()
		case <-drainCtx.Done():
		}
	}()
	drained := make(chan error, 1)
	go func() { drained <- hp.Shutdown(drainCtx) }()
	if err := tcp.Shutdown(drainCtx); err != nil {
		log.Warn("tcp drain ended early", zap.Error(err))
	}
	if err := <-drained; err != nil {
		log.Warn("http drain ended early", zap.Error(err))
	}
	if dns != nil {
		_ = dns.Shutdown(drainCtx)
	}
	_ = adm.Shutdown(drainCtx)
	cancel()
	wg.Wait()
	log.Info("stopped")
	return fatal
}

// logReady logs that pacer is ready, and, at warn, which claimed service
// ports it could not bind: their services are not served here, though
// /healthz is ready. A second pacer on the ports of a first, or one without
// the right to bind them, must not say its ports are open when none is.
func logReady(log *zap.Logger, version uint64, ports []proxy.PortStatus) {
	var failing []int
	var firstErr string
	open := 0
	for _, p := range ports {
		if p.Listening {
			open++
		}
		if p.BindFailing {
			failing = append(failing, p.Port)
			if firstErr == "" {
				firstErr = p.Error
			}
		}
	}
	if len(failing) == 0 {
		log.Info("ready: first sync done and service ports open", zap.Uint64("table_version", version))
		return
	}
	log.Warn("ready, but service ports cannot bind: their services are not served by this pacer until they do (retried every second; see /v1/services)",
		zap.Uint64("table_version", version), zap.Ints("failing_ports", failing), zap.Int("open_ports", open),
		zap.String("error", firstErr))
}

// listenHint is the way out of a failed listen on one of pacer's own
// listeners: otherwise, the advice for a port in use. A port below 1024
// refused to a user without the capability is no port in use.
func listenHint(err error, otherwise string) string {
	if errors.Is(err, syscall.EACCES) {
		return proxy.BindCapabilityHint + "; or pick a port above 1023"
	}
	return otherwise
}

// redactAll is urls with their passwords hidden, for the log.
func redactAll(urls []string) []string {
	out := make([]string, len(urls))
	for i, u := range urls {
		out[i] = redactUserinfo(u)
	}
	return out
}

// ownListeners names pacer's own listeners by port, for the service ports
// that cannot bind because one of them holds the port: the defaults put
// --dns :8053 inside --ports 8000-8100.
func ownListeners(cfg *config) proxy.OwnListeners {
	own := proxy.OwnListeners{}
	add := func(flag, addr, what string) {
		if addr == "" {
			return
		}
		_, p, err := net.SplitHostPort(addr)
		if port, _ := strconv.Atoi(p); err == nil && port > 0 {
			own[port] = fmt.Sprintf("%s (%s %s)", what, flag, addr)
		}
	}
	add("--admin", cfg.admin, "admin listener")
	add("--http", cfg.httpAddr, "HTTP virtual-host listener")
	add("--dns", cfg.dns, "DNS listener")
	return own
}

// warnMaxConns warns when --max-conns asks for more connections, of both
// planes together, than the descriptor limit can hold (2.5 descriptors
// each, as the default counts): the accepts then fail with EMFILE, every
// port's and listener's alike, before the cap is reached.
func warnMaxConns(maxConns int, log *zap.Logger) {
	if maxConns == 0 {
		return
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if derived := proxy.DefaultMaxConns(); maxConns > derived {
		log.Warn("--max-conns is above what the descriptor limit holds; with that many TCP and HTTP clients open accepts will fail for lack of descriptors, on every listener: raise the limit (LimitNOFILE, ulimit -n) or lower --max-conns",
			zap.Int("max_conns", maxConns), zap.Uint64("nofile", lim.Cur), zap.Int("derived_max_conns", derived))
	}
}

// batching says how the data plane's pollers make their system calls:
// batched through io_uring, or one by one, and why (fastconn.RingStatus).
func batching() string {
	if err := fastconn.RingStatus(); err != nil {
		return "plain system calls: " + err.Error()
	}
	return "io_uring"
}
