package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/health"
)

// Defaults used for the zero value of the matching TCPConfig field.
const (
	DefaultTCPDialTimeout    = time.Second
	DefaultTCPIdleTimeout    = time.Hour
	DefaultTCPWaitForBackend = 3 * time.Second
	DefaultTCPMaxAttempts    = 3
	DefaultTCPDrainTimeout   = 30 * time.Second
)

// Log field keys, so every TCP log line names things the same way.
const (
	keyPort    = "port"
	keyAddr    = "addr"
	keyBackend = "backend"
	keyClient  = "client"
	keyApp     = "app"
)

// TCPConfig configures the TCP data plane. The zero value of each field means
// the documented default; the config is copied by NewTCP.
type TCPConfig struct {
	// Bind is the address the service-port listeners bind; "" means all IPv4
	// interfaces ("0.0.0.0"). It must be an IP literal.
	Bind string
	// PortMin and PortMax bound the service ports this proxy binds (the
	// caller's default is 8000-8100). A TCP service claiming a port outside
	// the range is not bound and is reported as out of range by Ports.
	PortMin, PortMax int
	// DialTimeout bounds one connect to a backend; 0 means 1s.
	DialTimeout time.Duration
	// IdleTimeout closes a connection that moved no byte in either direction
	// for this long; 0 means 1h. A connection streaming in one direction only
	// is not idle. The check runs in windows of min(IdleTimeout/4, 10s),
	// each ending up to 1/16 late (fastconn's deadlines), so the close comes
	// between IdleTimeout and about 1.55*IdleTimeout after the last byte.
	IdleTimeout time.Duration
	// WaitForBackend is how long a new connection is held when its service
	// has no backend that accepts it (none routable, or every dial failed):
	// the connection waits for the next snapshot, retries, and is closed when
	// this much time has passed since it was accepted. 0 means 3s.
	WaitForBackend time.Duration
	// MaxAttempts is how many distinct backends one connection tries per
	// snapshot before it waits for a change; 0 means 3.
	MaxAttempts int
	// DrainTimeout bounds the connections on a backend that left the
	// snapshot, and every connection once Shutdown is called; 0 means 30s.
	DrainTimeout time.Duration
	// MaxConns caps the client connections open across every service port
	// at once; 0 means DefaultMaxConns, derived from the descriptor
	// limit. At the cap the proxy stops accepting: new connections wait in
	// the kernel's listen backlog until one closes (see limit.go). The cap
	// is global, not per port: see ConnLimitStatus. Ignored if ConnLimit
	// is set.
	MaxConns int
	// ConnLimit, if set, is the cap this plane shares with others (pacer
	// gives the HTTP plane the same one, as HAProxy's global maxconn):
	// their connections count against it together. If nil, the plane has
	// a cap of its own of MaxConns.
	ConnLimit *ConnLimit
	// OwnListeners names the process's other listeners by port (DNS,
	// admin, --http), so that a service port that cannot bind because one
	// of them holds it says so (see OwnListeners).
	OwnListeners OwnListeners
	// Handoff, if set, is shared with the HTTP plane: a port whose service
	// changes mode passes its listening socket from one plane to the other
	// through it, never closed meanwhile (see Handoff).
	Handoff *Handoff
	// OnListening, if set, is called after a service-port listener opened,
	// on the Run goroutine. Tests use it instead of sleeping.
	OnListening func(port int, addr net.Addr)
	// Report, if set, is told the outcome of every backend attempt, for
	// passive health checking (health.Checker.Report): a failed connect,
	// a backend that reset before sending a byte, or one that sent bytes.
	// It is called on connection goroutines and must not block. If nil,
	// outcomes are not reported.
	Report func(addr netip.AddrPort, o health.Outcome)
	// Carries, if set, decides which services this proxy carries. If nil, the
	// proxy carries every TCP-mode service of protocol tcp: ports of
	// HTTP-mode services belong to the HTTP data plane and UDP ports to
	// nobody yet.
	Carries func(*discovery.Service) bool
}

// PortStatus is what Ports reports about one service port.
type PortStatus struct {
	Port int `json:"port"`
	// Plane is the data plane the listener belongs to: "tcp", "http" (an
	// HTTP-mode service port) or "vhost" (the --http listener). During a
	// mode change both planes may report the same port for a drain.
	Plane     string `json:"plane"`
	Listening bool   `json:"listening"`
	// Error says why the port is not listening: the bind failure, or that
	// the port is outside the configured range.
	Error string `json:"error,omitempty"`
	// BindFailing is set while the port is claimed, in range, and fails to
	// bind (retried every BindRetry).
	BindFailing bool `json:"bind_failing,omitempty"`
	// Active is the number of client connections open now, including those
	// held while waiting for a backend.
	Active int64 `json:"active"`
	// Total is the number of client connections accepted since start.
	Total uint64 `json:"total"`
	// Failed counts connections closed without reaching a backend (no
	// backend within WaitForBackend, every dial failed, shutdown).
	Failed uint64 `json:"failed"`
	// DialErrors counts failed connects to backends, retried or not.
	DialErrors uint64 `json:"dial_errors"`
	// BytesIn is bytes forwarded from clients to backends; BytesOut the
	// reverse. They are added when a copy window ends (at most 10s late).
	BytesIn  uint64 `json:"bytes_in"`
	BytesOut uint64 `json:"bytes_out"`
}

// TCP is the TCP data plane: one listener per service port and a spliced
// connection pair per client.
type TCP struct {
	cfg   TCPConfig
	bind  string
	table *discovery.Table
	log   *zap.Logger
	// window is how long one copyWindow runs before the idle check.
	window time.Duration

	mu      sync.Mutex // guards ports, closing
	ports   *PortSet[*tcpPort]
	closing bool // Shutdown was called or Run returned: no listener opens

	// quit is closed by Shutdown: held clients give up, Run returns.
	quit     chan struct{}
	quitOnce sync.Once
	// killCtx is cancelled when open connections are forced closed, which
	// also aborts dials in flight; killed is set at the same moment.
	killCtx context.Context
	kill    context.CancelFunc
	killed  atomic.Bool

	// applied is the version of the last snapshot whose listeners are open.
	applied atomic.Uint64

	// conns counts the open client connections against the cap
	// (TCPConfig.ConnLimit, or one of MaxConns).
	conns *ConnLimit

	// wg counts accept loops and connection goroutines, for Shutdown.
	wg sync.WaitGroup
	// workers runs the connection goroutines; see workers.go.
	workers workers
}

// NewTCP returns a TCP proxy that routes by table. It opens nothing until Run.
func NewTCP(cfg TCPConfig, table *discovery.Table, log *zap.Logger) (*TCP, error) {
	if table == nil {
		return nil, errors.New("tcp proxy: nil table")
	}
	if log == nil {
		log = zap.NewNop()
	}
	if cfg.PortMin < 1 || cfg.PortMax > 65535 || cfg.PortMin > cfg.PortMax {
		return nil, fmt.Errorf("tcp proxy: port range %d-%d: want 1 <= min <= max <= 65535", cfg.PortMin, cfg.PortMax)
	}
	bind := cfg.Bind
	if bind == "" {
		bind = "0.0.0.0"
	}
	if _, err := netip.ParseAddr(bind); err != nil {
		return nil, fmt.Errorf("tcp proxy: bind address %q: want an IP address", cfg.Bind)
	}
	if cfg.DialTimeout < 0 || cfg.IdleTimeout < 0 || cfg.WaitForBackend < 0 || cfg.DrainTimeout < 0 || cfg.MaxAttempts < 0 || cfg.MaxConns < 0 {
		return nil, errors.New("tcp proxy: timeouts, attempts and the connection cap must not be negative")
	}
	cfg.DialTimeout = cmp.Or(cfg.DialTimeout, DefaultTCPDialTimeout)
	cfg.IdleTimeout = cmp.Or(cfg.IdleTimeout, DefaultTCPIdleTimeout)
	cfg.WaitForBackend = cmp.Or(cfg.WaitForBackend, DefaultTCPWaitForBackend)
	cfg.MaxAttempts = cmp.Or(cfg.MaxAttempts, DefaultTCPMaxAttempts)
	cfg.DrainTimeout = cmp.Or(cfg.DrainTimeout, DefaultTCPDrainTimeout)
	if cfg.Carries == nil {
		cfg.Carries = carriesTCP
	}

	p := &TCP{
		cfg:   cfg,
		bind:  bind,
		table: table,
		log:   log.Named("tcp"),
		// The floor keeps a tiny IdleTimeout from turning into a wakeup storm.
		window: max(min(cfg.IdleTimeout/4, maxCopyWindow), time.Millisecond),
		quit:   make(chan struct{}),
	}
	p.conns = cfg.ConnLimit
	if p.conns == nil {
		p.conns = NewConnLimit(cfg.MaxConns, p.log)
	}
	p.ports = NewPortSet(cfg.PortMin, cfg.PortMax, p.log, func(port int) *tcpPort {
		return &tcpPort{p: p, port: port, backends: map[netip.AddrPort]*backendConns{}}
	})
	p.ports.SetOwnListeners(cfg.OwnListeners)
	p.ports.SetHandoff(cfg.Handoff)
	p.killCtx, p.kill = context.WithCancel(context.Background())
	return p, nil
}

// carriesTCP is the default TCPConfig.Carries.
func carriesTCP(s *discovery.Service) bool {
	return s.Mode == discovery.ModeTCP && s.Protocol.HasTCP()
}

// service returns the service this proxy routes port to in snap, or nil.
func (p *TCP) service(snap *discovery.Snapshot, port int) *discovery.Service {
	if s := snap.Service(port); s != nil && p.cfg.Carries(s) {
		return s
	}
	return nil
}

// Run follows the table until ctx is done or Shutdown is called, opening and
// closing listeners and draining connections of removed backends. It closes
// its listeners when it returns; connections stay open until Shutdown. It
// returns nil on either stop. Call it once.
func (p *TCP) Run(ctx context.Context) error {
	defer p.closeListeners()
	stopWorkers := make(chan struct{})
	defer close(stopWorkers)
	go p.workers.reapEvery(workerIdle, stopWorkers)
	for {
		snap := p.table.Snapshot()
		parked := p.cfg.Handoff.Parked() // before apply: a park during it wakes us
		p.apply(snap)
		p.applied.Store(snap.Version())
		var retry <-chan time.Time // a port failed to bind: try it again
		p.mu.Lock()
		if p.ports.Failing() {
			retry = time.After(BindRetry)
		} else {
			parked = nil
		}
		p.mu.Unlock()
		select {
		case <-snap.Changed():
		case <-retry:
		case <-parked: // the other plane let a port go, maybe one we wait for
		case <-ctx.Done():
			return nil
		case <-p.quit:
			return nil
		}
	}
}

// Applied returns the version of the newest snapshot whose service ports
// have been opened (or failed to bind); readiness compares it with the table's.
func (p *TCP) Applied() uint64 { return p.applied.Load() }

// Shutdown stops accepting (closes every listener) and lets open connections
// finish until ctx is done or DrainTimeout passes, whichever comes first;
// then it closes those still open and waits for their goroutines. Clients
// held waiting for a backend are closed at once. It returns ctx.Err() if ctx
// ended the drain, else nil. It is safe to call more than once and
// concurrently with Run.
func (p *TCP) Shutdown(ctx context.Context) error {
	p.quitOnce.Do(func() { close(p.quit) })
	p.closeListeners()

	done := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(done)
	}()
	timer := time.NewTimer(p.cfg.DrainTimeout)
	defer timer.Stop()
	var err error
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-timer.C:
	}
	if n := p.closeAll(); n > 0 {
		p.log.Warn("closed connections still open at the end of the drain", zap.Int("connections", n))
	}
	<-done
	return err
}

// ConnLimit reports the connection cap and how close to it the proxy is;
// a shared cap (TCPConfig.ConnLimit) counts every plane's connections.
func (p *TCP) ConnLimit() ConnLimitStatus { return p.conns.Status() }

// Ports reports every service port this proxy is responsible for: those a
// carried service claims now (in range or not), and those still listening
// or holding connections. Sorted by port.
func (p *TCP) Ports() []PortStatus {
	snap := p.table.Snapshot()
	var claimed []int
	for _, port := range snap.Ports() {
		if p.service(snap, port) != nil {
			claimed = append(claimed, port)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ports.Status(claimed)
}
