package zookeeper

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/discovery"
)

// SourceName is the Update.Source, App.Source and SourceStatus.Name of
// services from --zk-service; dnsserver serves them under zk.<domain>.
const SourceName = "zookeeper"

// AppIDPrefix starts the App.ID of every --zk-service ("zk:kafka"), which
// can never collide with a Marathon app id (those start with "/").
const AppIDPrefix = "zk:"

// Defaults for zero values of Config.
const (
	// DefaultCoalesce is the steady rate at which one service's changes
	// reach the table while it churns: at most one apply per 100ms after
	// the burst allowance is spent.
	DefaultCoalesce = 100 * time.Millisecond
	// DefaultCoalesceBurst is how many changes in quick succession are
	// applied at once before coalescing starts.
	DefaultCoalesceBurst = 10

	resolveTimeout = 2 * time.Second
	// resolveRetryMin and resolveRetryMax bound the wait before a member
	// whose host did not resolve is resolved again.
	resolveRetryMin = time.Second
	resolveRetryMax = 30 * time.Second
	readParallel    = 16 // concurrent member reads per service
)

// Config configures a Source.
type Config struct {
	// Servers is the ensemble (--zk), "host:port" each.
	Servers []string
	// Services are the --zk-service flags; names must be distinct.
	Services []ServiceSpec
	// Auth is "user:pass" for ZooKeeper digest auth, or "".
	Auth string
	// SessionTimeout is the ZooKeeper session timeout; 0 means
	// DefaultSessionTimeout.
	SessionTimeout time.Duration
	// Coalesce and CoalesceBurst bound how often one service's member
	// churn is applied to the table: a change is applied at once while
	// the service has changed fewer than CoalesceBurst times recently,
	// then at most once per Coalesce, always with the latest members (a
	// token bucket). 0 means DefaultCoalesce and DefaultCoalesceBurst; a
	// negative Coalesce applies every change at once.
	Coalesce      time.Duration
	CoalesceBurst int
	// Resolve turns a member's host name into an address. Nil means the
	// system resolver. IP literals never reach it.
	Resolve func(ctx context.Context, host string) (netip.Addr, error)
}

// Source keeps one App per --zk-service in a discovery.Table: the service's
// members from ZooKeeper, in nerve or serverset format.
type Source struct {
	cfg   Config
	table *discovery.Table
	log   *zap.Logger

	running atomic.Bool
	sess    atomic.Pointer[session] // set while Run runs

	mu     sync.Mutex // guards status and synced
	status discovery.SourceStatus
	synced map[string]bool
}

var _ discovery.StatusReporter = (*Source)(nil)

// New validates cfg and returns a Source that publishes into table. It
// does no I/O; Run does.
func New(cfg Config, table *discovery.Table, log *zap.Logger) (*Source, error) {
	if table == nil {
		return nil, errors.New("zookeeper: nil table")
	}
	if len(cfg.Servers) == 0 {
		return nil, errors.New("zookeeper: --zk-service needs --zk (no servers)")
	}
	if len(cfg.Services) == 0 {
		return nil, errors.New("zookeeper: no services")
	}
	names, ports := map[string]bool{}, map[int]string{}
	for _, sp := range cfg.Services {
		if sp.Name == "" || discovery.Label(sp.Name) != sp.Name {
			return nil, fmt.Errorf("zookeeper: service name %q is not a DNS label", sp.Name)
		}
		if names[sp.Name] {
			return nil, fmt.Errorf("zookeeper: service %q given twice", sp.Name)
		}
		names[sp.Name] = true
		if err := validatePath(sp.Path); err != nil {
			return nil, fmt.Errorf("zookeeper: service %q: %w", sp.Name, err)
		}
		if sp.ServicePort < 0 || sp.ServicePort > 65535 {
			return nil, fmt.Errorf("zookeeper: service %q: port %d is not 1-65535", sp.Name, sp.ServicePort)
		}
		if other, dup := ports[sp.ServicePort]; dup && sp.ServicePort != 0 {
			return nil, fmt.Errorf("zookeeper: services %q and %q both claim service port %d", other, sp.Name, sp.ServicePort)
		}
		ports[sp.ServicePort] = sp.Name
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = DefaultSessionTimeout
	}
	if cfg.Coalesce == 0 {
		cfg.Coalesce = DefaultCoalesce
	}
	if cfg.CoalesceBurst <= 0 {
		cfg.CoalesceBurst = DefaultCoalesceBurst
	}
	if cfg.Resolve == nil {
		cfg.Resolve = discovery.LookupHost
	}
	if log == nil {
		log = zap.NewNop()
	}
	s := &Source{cfg: cfg, table: table, log: log.Named("zookeeper"), synced: map[string]bool{}}
	specs := make([]string, len(cfg.Services))
	for i, sp := range cfg.Services {
		specs[i] = sp.String()
	}
	s.status.Name = SourceName
	s.status.Endpoint = "zk://" + strings.Join(cfg.Servers, ",") + " " + strings.Join(specs, " ")
	return s, nil
}

// Status reports the source's health: Synced once every service was read,
// Connected while the ZooKeeper session is up. While ZooKeeper is down the
// table keeps the last members and Connected is false (stale).
func (s *Source) Status() discovery.SourceStatus {
	s.mu.Lock()
	st := s.status
	s.mu.Unlock()
	return s.sess.Load().report(st)
}

// Run follows every service until ctx is done, then returns nil, leaving the
// table as it was. ZooKeeper being unreachable never ends it; it returns an
// error only if a service's path cannot be read for good at start (wrong
// credentials, an ACL that denies reading). Run may be called once.
func (s *Source) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("zookeeper: Source.Run called twice")
	}
	sess, err := dial(s.cfg.Servers, s.cfg.SessionTimeout, s.cfg.Auth, s.log)
	if err != nil {
		return fmt.Errorf("zookeeper: %w", err)
	}
	defer sess.close() // after wg.Wait: the watchers are gone
	s.sess.Store(sess)
	if err := sess.authenticate(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("zookeeper: %w", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(s.cfg.Services))
	for _, sp := range s.cfg.Services {
		sw := newServiceWatch(s, sess, sp, &wg)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := sw.run(ctx); err != nil {
				errs <- err
				cancel()
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// markSynced records a successful read of service name.
func (s *Source) markSynced(name string, resync bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.synced[name] = true
	s.status.LastSync = time.Now()
	s.status.Synced = len(s.synced) == len(s.cfg.Services)
	s.status.LastError = ""
	if resync {
		s.status.Resyncs++
	}
}

func (s *Source) recordError(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status.LastError = err.Error()
	s.status.ErrorAt = time.Now()
}

func (s *Source) count(events, decodeErrors uint64) {
	s.mu.Lock()
	s.status.Events += events
	s.status.DecodeErrors += decodeErrors
	s.mu.Unlock()
}
