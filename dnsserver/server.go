package dnsserver

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/discovery"
)

// Defaults.
const (
	DefaultDomain = "mesos"
	DefaultTTL    = 5 * time.Second
	// cacheEntries bounds the packed-answer cache: (name, type) pairs.
	cacheEntries = 16384
)

// Config configures a Server. The zero value of each field has the meaning
// its comment gives.
type Config struct {
	// Addr is "host:port" for both UDP and TCP, e.g. ":8053". Port 0 picks a
	// free port, the same for both.
	Addr string
	// Domain is the zone served, e.g. "mesos"; "" means "mesos".
	Domain string
	// TTL is every record's TTL and the SOA's negative-caching TTL; 0 means 5s.
	TTL time.Duration
	// Advertise is this instance's address, for lb.<domain> and ns1.<domain>;
	// the zero Addr leaves those names without addresses.
	Advertise netip.Addr
	// PortMin and PortMax are the service ports this instance may bind
	// (--ports): lb.<domain> SRV answers name only ports it serves. Zero for
	// both means any port.
	PortMin, PortMax int
	// UDPSockets is how many UDP sockets share the port with SO_REUSEPORT,
	// each read by one goroutine; 0 means GOMAXPROCS. Platforms without
	// SO_REUSEPORT get one.
	UDPSockets int
	// OnListening, if set, is called once every socket is open, with the
	// UDP and TCP addresses, before any query is read. For tests.
	OnListening func(udp, tcp net.Addr)
}

// Server is the authoritative DNS server. Build it with New, serve with Run.
type Server struct {
	cfg   Config
	table *discovery.Table
	log   *zap.Logger
	zone  zone
	// zoneWire is the domain in lower-case wire form, e.g. "\x05mesos\x00".
	zoneWire []byte
	ttl      uint32
	seed     maphash.Seed
	cache    *lru.Cache[uint64, *entry]
	// withdrawn is set by Withdraw: lb.<domain> names no longer answer
	// with this instance.
	withdrawn atomic.Bool
	// plainUDP reads one datagram per system call even where batches work
	// (tests cover both loops).
	plainUDP bool
	// tcpWorkers holds the workers TCP connections borrow to answer a
	// query (serveConn); Run sets New.
	tcpWorkers sync.Pool

	serialMu      sync.Mutex
	serialVersion uint64
	serial        uint32

	mu       sync.Mutex // guards the fields below
	counters []*counters
	udp      []*net.UDPConn
	tcp      net.Listener
	conns    map[net.Conn]struct{}
	maxConns int       // maxTCPConns; tests lower it
	rejected time.Time // when a rejected TCP connection was last logged
	running  bool
	stopped  bool
	cancel   context.CancelFunc // ends Run's context
	done     chan struct{}      // closed when Run has returned
	wg       sync.WaitGroup
}

// New checks cfg and returns a Server answering from table. It opens no socket.
func New(cfg Config, table *discovery.Table, log *zap.Logger) (*Server, error) {
	if table == nil {
		return nil, errors.New("dnsserver: nil table")
	}
	if log == nil {
		log = zap.NewNop()
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("dnsserver: address %q: %w", cfg.Addr, err)
	}
	domain := strings.Trim(strings.ToLower(cfg.Domain), ".")
	if domain == "" {
		domain = DefaultDomain
	}
	zoneWire := make([]byte, 256)
	n, err := dns.PackDomainName(dns.Fqdn(domain), zoneWire, 0, nil, false)
	if err != nil {
		return nil, fmt.Errorf("dnsserver: domain %q: %w", cfg.Domain, err)
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.UDPSockets <= 0 {
		cfg.UDPSockets = runtime.GOMAXPROCS(0)
	}
	if !reusePortSupported {
		cfg.UDPSockets = 1
	}
	cache, err := lru.New[uint64, *entry](cacheEntries)
	if err != nil {
		return nil, fmt.Errorf("dnsserver: cache: %w", err)
	}
	s := &Server{
		cfg:      cfg,
		table:    table,
		log:      log.Named("dns"),
		zone:     zone{domain: domain, labels: strings.Count(domain, ".") + 1, advertise: cfg.Advertise.Unmap(), portMin: cfg.PortMin, portMax: cfg.PortMax},
		zoneWire: zoneWire[:n],
		ttl:      uint32(max(cfg.TTL/time.Second, 0)),
		seed:     maphash.MakeSeed(),
		cache:    cache,
		conns:    map[net.Conn]struct{}{},
		maxConns: maxTCPConns,
		done:     make(chan struct{}),
	}
	return s, nil
}

// inZone reports whether the lower-case wire name is the zone or below it.
func (s *Server) inZone(name []byte) bool {
	for off := 0; off < len(name); off += int(name[off]) + 1 {
		if len(name)-off == len(s.zoneWire) {
			return string(name[off:]) == string(s.zoneWire)
		}
		if name[off] == 0 || len(name)-off < len(s.zoneWire) {
			return false
		}
	}
	return false
}

// build packs the answer for a cache key (lower-case wire name, type, class).
func (s *Server) build(snap *discovery.Snapshot, key []byte) *entry {
	qname, qtype := key[:len(key)-4], uint16(key[len(key)-4])<<8|uint16(key[len(key)-3])
	var labels []string
	for off := 0; off < len(qname) && qname[off] != 0; off += int(qname[off]) + 1 {
		labels = append(labels, string(qname[off+1:off+1+int(qname[off])]))
	}
	rel := labels[:len(labels)-s.zone.labels]
	z := s.zone
	z.withdrawn = s.withdrawn.Load()
	res := z.resolve(snap, rel, qtype)
	e := newPacker(qname, s.ttl).pack(res, &z, s.serialOf(snap.Version()))
	e.key, e.version, e.withdrawn = string(key), snap.Version(), z.withdrawn
	return e
}

// Withdraw stops answering lb.<domain> names with this instance: they
// answer with no record from then on. A stopping pacer calls it as its
// drain begins, so that clients resolving through it stop choosing it
// while it finishes the connections it has. The other names keep their
// answers.
func (s *Server) Withdraw() { s.withdrawn.Store(true) }

// serialOf returns the SOA serial for a table version: it moves whenever the
// version does, to the current Unix time or one past the last serial,
// whichever is larger, so it also grows across restarts (as mesos-dns's,
// which is the time of the last reload).
func (s *Server) serialOf(version uint64) uint32 {
	s.serialMu.Lock()
	defer s.serialMu.Unlock()
	if s.serial == 0 || version != s.serialVersion {
		s.serial = max(s.serial+1, uint32(time.Now().Unix()))
		s.serialVersion = version
	}
	return s.serial
}

// Run opens the UDP and TCP sockets and serves until ctx is done or Shutdown
// is called; it then closes every socket and connection and returns once all
// its goroutines have. It returns an error if the sockets cannot be opened.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("dnsserver: Run called twice")
	}
	if s.stopped {
		s.mu.Unlock()
		return nil // Shutdown came first
	}
	s.running = true
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.cancel = cancel
	s.mu.Unlock()
	defer close(s.done)

	udp, tcp, err := listen(ctx, s.cfg.Addr, s.cfg.UDPSockets)
	if err != nil {
		return fmt.Errorf("dnsserver: listening on %s: %w", s.cfg.Addr, err)
	}
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		closeAll(udp, tcp)
		return nil
	}
	s.udp, s.tcp = udp, tcp
	tcpStats := &counters{}
	s.counters = append(s.counters, tcpStats)
	s.tcpWorkers.New = func() any { return s.newWorker(tcpStats) }
	for _, c := range udp {
		w := s.newWorker(&counters{})
		s.counters = append(s.counters, w.st)
		s.wg.Add(1)
		if batchSupported && !s.plainUDP {
			go w.serveUDPBatch(c)
		} else {
			go w.serveUDP(c)
		}
	}
	s.wg.Add(2)
	go s.serveTCP(tcp, tcpStats)
	go s.purgeOnChange(ctx)
	s.mu.Unlock()

	s.log.Info("dns listening", zap.Stringer("udp", udp[0].LocalAddr()), zap.Stringer("tcp", tcp.Addr()),
		zap.Int("udp_sockets", len(udp)), zap.String("domain", s.zone.domain))
	if s.cfg.OnListening != nil {
		s.cfg.OnListening(udp[0].LocalAddr(), tcp.Addr())
	}
	<-ctx.Done()
	s.stop()
	s.wg.Wait()
	return nil
}

// Shutdown stops Run: it closes the sockets and every TCP connection, then
// waits for Run to return or ctx to end. It is safe to call more than once
// and before Run.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	running := s.running
	s.mu.Unlock()
	s.stop()
	if !running {
		return nil
	}
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stop closes every socket; the goroutines reading them then return.
func (s *Server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.stopped = true
	if s.cancel != nil {
		s.cancel()
	}
	closeAll(s.udp, s.tcp)
	for c := range s.conns {
		c.Close()
	}
}

func closeAll(udp []*net.UDPConn, tcp net.Listener) {
	for _, c := range udp {
		c.Close()
	}
	if tcp != nil {
		tcp.Close()
	}
}

// purgeOnChange empties the answer cache whenever the table changes, so old
// answers do not hold memory. Correctness does not depend on it: every entry
// carries its table version.
func (s *Server) purgeOnChange(ctx context.Context) {
	defer s.wg.Done()
	for {
		snap := s.table.Snapshot()
		select {
		case <-snap.Changed():
			s.cache.Purge()
		case <-ctx.Done():
			return
		}
	}
}
