package zookeeper

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/discovery"
)

// Defaults for zero values in configurations.
const (
	DefaultSessionTimeout = 10 * time.Second
	// retryMax bounds the wait between failed reads while connected (an
	// ACL or server problem); reads after a reconnect start at once.
	retryMax = 5 * time.Second
	retryMin = 100 * time.Millisecond
)

// Log field keys.
const (
	keyPath    = "path"
	keyService = "service"
	keyMember  = "member"
	keyLeader  = "leader"
	keySession = "session"
	keyServers = "servers"
)

// session is one ZooKeeper client connection (zk.Conn) and what we know of
// its state. go-zookeeper reconnects by itself, keeps the session and its
// watches across short outages, and after an expiry opens a new session
// and fails every watch with EventNotWatching; the owners of watches react
// to that by reading everything again.
type session struct {
	conn    *zk.Conn
	log     *zap.Logger
	servers string
	auth    string

	mu        sync.Mutex
	state     zk.State
	id        int64         // current session id, 0 when none
	ready     chan struct{} // closed while the client has a session
	sessions  uint64        // sessions established (the first one included)
	expiries  uint64        // sessions the server expired
	connected bool
	closed    bool // close was called: state changes are ours, not news
	// down is when the client last had no session (since dial, or since
	// the session was lost); unreached warns once if it lasts (see dial).
	down      time.Time
	unreached *time.Timer
}

// unreachedAfter is how long pacer waits for a first session before it
// warns: the client's own connect failures log only at debug.
const unreachedAfter = 10 * time.Second

// dial starts a client for servers; it does not wait for a session.
// auth, if set, is "user:pass" for digest authentication.
func dial(servers []string, timeout time.Duration, auth string, log *zap.Logger) (*session, error) {
	s := &session{log: log, servers: strings.Join(servers, ","), auth: auth, ready: make(chan struct{}), down: time.Now()}
	// Hold mu until conn is set: the client's goroutine may deliver the
	// first session event before Connect returns, and event reads conn.
	s.mu.Lock()
	s.unreached = time.AfterFunc(unreachedAfter, s.warnUnreached)
	conn, _, err := zk.Connect(servers, timeout,
		zk.WithHostProvider(newLazyHosts()),
		zk.WithLogger(zkLogger{log}),
		zk.WithLogInfo(false),
		zk.WithEventCallback(s.event))
	s.conn = conn
	s.mu.Unlock()
	if err != nil {
		s.unreached.Stop()
		return nil, fmt.Errorf("connecting to %s: %w", s.servers, err)
	}
	return s, nil
}

// authenticate adds the digest credentials, retrying until the server
// takes them; the client then sends them again on every reconnect. It
// returns ctx's error if ctx ends first, and at once without credentials.
func (s *session) authenticate(ctx context.Context) error {
	if s.auth == "" {
		return nil
	}
	backoff := retryMin
	for {
		err := s.conn.AddAuth("digest", []byte(s.auth))
		if err == nil {
			return nil
		}
		if !transient(err) {
			return fmt.Errorf("authenticating to %s: %w", s.servers, err)
		}
		if !s.retryWait(ctx, backoff) {
			return ctx.Err()
		}
		backoff = nextBackoff(backoff)
	}
}

// event follows session state changes. It runs on the client's goroutines
// and must not block.
func (s *session) event(e zk.Event) {
	if e.Type != zk.EventSession {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.state
	s.state = e.State
	switch e.State {
	case zk.StateHasSession:
		id := s.conn.SessionID()
		fresh := id != s.id
		s.id = id
		s.sessions++
		s.connected = true
		select {
		case <-s.ready:
		default:
			close(s.ready)
		}
		s.log.Info("zookeeper session established", zap.String(keyServers, s.servers),
			zap.String(keySession, fmt.Sprintf("0x%x", id)), zap.Bool("new", fresh))
	case zk.StateExpired:
		s.expiries++
		s.log.Warn("zookeeper session expired; re-reading everything and re-arming watches", zap.String(keyServers, s.servers),
			zap.String(keySession, fmt.Sprintf("0x%x", s.id)))
		s.id = 0
		s.leaveLocked()
	case zk.StateDisconnected, zk.StateConnecting, zk.StateAuthFailed:
		if prev == zk.StateHasSession && !s.closed {
			s.log.Warn("zookeeper connection lost; keeping the last known state", zap.String(keyServers, s.servers), zap.Stringer("state", e.State))
		}
		s.leaveLocked()
	}
}

// warnUnreached says, once, that no first session came in unreachedAfter.
func (s *session) warnUnreached() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions == 0 && !s.closed {
		s.log.Warn("no ZooKeeper session yet; still trying", zap.String(keyServers, s.servers), zap.Duration("for", time.Since(s.down).Round(time.Second)))
	}
}

func (s *session) leaveLocked() {
	if s.connected {
		s.down = time.Now()
	}
	s.connected = false
	select {
	case <-s.ready:
		s.ready = make(chan struct{})
	default:
	}
}

// waitReady returns a channel closed while the client has a session.
func (s *session) waitReady() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready
}

// report fills in what st says about the session: Connected while it is
// up, and Reconnects as the sessions established after the first. s may be
// nil (Run has not dialled yet): st is returned as it is.
func (s *session) report(st discovery.SourceStatus) discovery.SourceStatus {
	if s == nil {
		return st
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st.Connected = s.connected
	if !s.connected {
		// Say why, for /healthz and the status page: the client retries
		// quietly, and a read's error does not name the servers.
		msg := "no ZooKeeper session with " + s.servers
		if st.LastError != "" && !strings.HasPrefix(st.LastError, msg) {
			msg += " (last read: " + st.LastError + ")"
		}
		st.LastError = msg
		if st.ErrorAt.IsZero() {
			st.ErrorAt = s.down
		}
	}
	if s.sessions > 1 {
		st.Reconnects = s.sessions - 1
	}
	return st
}

// counts returns sessions established and expiries so far.
func (s *session) counts() (sessions, expiries uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions, s.expiries
}

func (s *session) close() {
	s.mu.Lock()
	s.closed = true
	s.unreached.Stop()
	s.mu.Unlock()
	s.conn.Close()
}

// retryWait waits before reading again after err: until the client has a
// session again if it lost it, else for backoff. It returns false if ctx
// ended.
func (s *session) retryWait(ctx context.Context, backoff time.Duration) bool {
	ready := s.waitReady()
	select {
	case <-ready:
		// Connected: the failure was not the connection; back off.
	default:
		select {
		case <-ready:
			return ctx.Err() == nil
		case <-ctx.Done():
			return false
		}
	}
	t := time.NewTimer(backoff)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// nextBackoff doubles b within [retryMin, retryMax].
func nextBackoff(b time.Duration) time.Duration {
	b *= 2
	if b < retryMin {
		b = retryMin
	}
	if b > retryMax {
		b = retryMax
	}
	return b
}

// transient reports whether err is about the connection rather than the
// node: the read is retried once the client has a session again.
func transient(err error) bool {
	return errors.Is(err, zk.ErrConnectionClosed) || errors.Is(err, zk.ErrNoServer) ||
		errors.Is(err, zk.ErrSessionExpired) || errors.Is(err, zk.ErrSessionMoved) ||
		errors.Is(err, zk.ErrClosing)
}

// zkLogger sends go-zookeeper's own messages to zap at debug level; the
// session callback logs what operators need at info and warn.
type zkLogger struct{ log *zap.Logger }

func (l zkLogger) Printf(format string, args ...any) {
	l.log.Debug("zk client: " + fmt.Sprintf(format, args...))
}
