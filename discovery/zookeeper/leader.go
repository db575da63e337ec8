package zookeeper

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"
	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/discovery"
)

// LeaderConfig configures a LeaderWatcher; ParseMarathonZK builds one from
// --marathon zk://...
type LeaderConfig struct {
	// Servers is the ensemble, "host:port" each.
	Servers []string
	// Path is Marathon's ZooKeeper root, "/marathon" by default in Marathon.
	Path string
	// Auth is "user:pass" for ZooKeeper digest auth, or "".
	Auth string
	// SessionTimeout is the ZooKeeper session timeout; 0 means
	// DefaultSessionTimeout.
	SessionTimeout time.Duration
	// Scheme is how to reach the leader: "http" (the default) or "https"
	// for a Marathon run with --disable_http.
	Scheme string
}

// LeaderWatcher follows which Marathon leads, from Marathon's own
// ZooKeeper nodes (marathon-api.md §5.1): the Curator LeaderLatch under
// <Path>/leader-curator, else the legacy <Path>/leader member_ group of
// Marathon up to 1.4. While ZooKeeper is unreachable, or says no Marathon
// leads (an election in progress), it keeps reporting the last leader seen.
// Its methods may be called from any goroutine.
type LeaderWatcher struct {
	cfg LeaderConfig
	log *zap.Logger

	running atomic.Bool
	sess    atomic.Pointer[session] // set while Run runs

	mu      sync.Mutex // guards what follows
	leader  string     // "host:port", "" until known
	changed chan struct{}
	status  discovery.SourceStatus
}

var _ discovery.StatusReporter = (*LeaderWatcher)(nil)

// NewLeaderWatcher validates cfg. It does no I/O; Run does.
func NewLeaderWatcher(cfg LeaderConfig, log *zap.Logger) (*LeaderWatcher, error) {
	if len(cfg.Servers) == 0 {
		return nil, errors.New("zookeeper: no servers to find the Marathon leader in")
	}
	if err := validatePath(cfg.Path); err != nil {
		return nil, fmt.Errorf("zookeeper: Marathon path: %w", err)
	}
	switch cfg.Scheme {
	case "":
		cfg.Scheme = "http"
	case "http", "https":
	default:
		return nil, fmt.Errorf("zookeeper: scheme %q: want http or https", cfg.Scheme)
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = DefaultSessionTimeout
	}
	if log == nil {
		log = zap.NewNop()
	}
	w := &LeaderWatcher{cfg: cfg, log: log.Named("zookeeper").With(zap.String(keyPath, cfg.Path)), changed: make(chan struct{})}
	w.status.Name = "marathon-leader"
	w.status.Endpoint = "zk://" + strings.Join(cfg.Servers, ",") + cfg.Path
	return w, nil
}

// Leader returns the leading Marathon as "host:port", "" until one is known.
func (w *LeaderWatcher) Leader() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.leader
}

// LeaderURL returns the leader's base URL, "http://host:port", or "".
func (w *LeaderWatcher) LeaderURL() string {
	u, _ := w.Watch()
	return u
}

// Changed returns a channel closed when the leader changes after the call.
func (w *LeaderWatcher) Changed() <-chan struct{} {
	_, ch := w.Watch()
	return ch
}

// Watch returns the leader's base URL ("" until known) and a channel closed
// when it changes, read together so no change falls between them. This is
// the Marathon source's question "who leads now, and tell me when that
// changes":
//
//	for {
//		url, changed := w.Watch()
//		// stream from url until changed is closed, then resync
//	}
func (w *LeaderWatcher) Watch() (leaderURL string, changed <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.leader == "" {
		return "", w.changed
	}
	return w.cfg.Scheme + "://" + w.leader, w.changed
}

// Status reports the watcher's health as a source: Synced once a leader is
// known, Connected while the ZooKeeper session is up.
func (w *LeaderWatcher) Status() discovery.SourceStatus {
	w.mu.Lock()
	st := w.status
	w.mu.Unlock()
	return w.sess.Load().report(st)
}

// Run follows the leader until ctx is done, then returns nil. ZooKeeper
// being unreachable never ends it; it returns an error only if the first
// read is refused for good (wrong credentials, an ACL that denies reading).
// Run may be called once.
func (w *LeaderWatcher) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("zookeeper: LeaderWatcher.Run called twice")
	}
	sess, err := dial(w.cfg.Servers, w.cfg.SessionTimeout, w.cfg.Auth, w.log)
	if err != nil {
		return fmt.Errorf("zookeeper: %w", err)
	}
	defer sess.close()
	w.sess.Store(sess)
	if err := sess.authenticate(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("zookeeper: %w", err)
	}

	curator := &dirWatch{path: join(w.cfg.Path, "leader-curator")}
	legacy := &dirWatch{path: join(w.cfg.Path, "leader")}
	backoff := retryMin
	synced := false
	for {
		leader, err := w.read(sess.conn, curator, legacy)
		switch {
		case err == nil:
			backoff = retryMin
			synced = true
			w.set(leader)
		case !synced && (errors.Is(err, zk.ErrNoAuth) || errors.Is(err, zk.ErrAuthFailed)):
			return fmt.Errorf("zookeeper: reading the Marathon leader under %s: %w", w.cfg.Path, err)
		default:
			w.fail(err)
			if !sess.retryWait(ctx, backoff) {
				return nil
			}
			backoff = nextBackoff(backoff)
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-curator.ch:
			curator.fired()
		case <-legacy.ch:
			legacy.fired()
		}
		w.mu.Lock()
		w.status.Events++
		w.mu.Unlock()
	}
}

// read finds the leader, arming a watch on both election directories: the
// curator one to see a leader appear, the legacy one for Marathon <= 1.4.
func (w *LeaderWatcher) read(c *zk.Conn, curator, legacy *dirWatch) (string, error) {
	latches, err := curator.list(c)
	if err != nil {
		return "", fmt.Errorf("listing %s: %w", curator.path, err)
	}
	members, err := legacy.list(c)
	if err != nil {
		return "", fmt.Errorf("listing %s: %w", legacy.path, err)
	}
	if l, err := w.lowest(c, curator.path, bySeq(latches, latchSeq)); l != "" || err != nil {
		return l, err
	}
	return w.lowest(c, legacy.path, bySeq(members, memberSeq))
}

// lowest returns the data of the lowest-sequence node that holds a valid
// "host:port". A node that vanished since the listing is skipped; its
// deletion fires the watch and the next read settles it.
func (w *LeaderWatcher) lowest(c *zk.Conn, dir string, nodes []seqNode) (string, error) {
	for _, n := range nodes {
		data, _, err := c.Get(join(dir, n.name))
		if errors.Is(err, zk.ErrNoNode) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("reading %s/%s: %w", dir, n.name, err)
		}
		hp, err := parseHostPort(string(data))
		if err != nil {
			w.log.Warn("skipping a Marathon leader node with bad data", zap.String(keyMember, join(dir, n.name)), zap.Error(err))
			continue
		}
		return hp, nil
	}
	return "", nil
}

// set records a successful read.
func (w *LeaderWatcher) set(leader string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.status.LastSync = time.Now()
	if leader == "" {
		if w.status.LastError == "" {
			w.log.Warn("no Marathon leader registered in ZooKeeper; keeping the last one", zap.String(keyLeader, w.leader))
		}
		w.status.LastError = "no Marathon leader registered under " + w.cfg.Path
		w.status.ErrorAt = time.Now()
		return
	}
	w.status.LastError = ""
	w.status.Synced = true
	if leader == w.leader {
		return
	}
	w.log.Info("Marathon leader", zap.String(keyLeader, leader), zap.String("previous", w.leader))
	w.leader = leader
	close(w.changed)
	w.changed = make(chan struct{})
}

func (w *LeaderWatcher) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.status.LastError != err.Error() {
		if w.leader == "" {
			w.log.Warn("reading the Marathon leader failed; none known yet", zap.Error(err))
		} else {
			w.log.Warn("reading the Marathon leader failed; keeping the last one", zap.String(keyLeader, w.leader), zap.Error(err))
		}
	}
	w.status.LastError = err.Error()
	w.status.ErrorAt = time.Now()
}

// parseHostPort validates a leader node's "host:port".
func parseHostPort(s string) (string, error) {
	s = strings.TrimSpace(s)
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("%.64q is not host:port", s)
	}
	if err := validHost(host); err != nil {
		return "", err
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("%.64q: bad port", s)
	}
	return net.JoinHostPort(host, port), nil
}

// join appends a child name to a ZooKeeper path.
func join(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}
