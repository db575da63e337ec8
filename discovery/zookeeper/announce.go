package zookeeper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"
	"go.uber.org/zap"
)

// memberPrefix names serverset member nodes (Finagle's and Aurora's
// "member_<seq>"), which serverset readers list by.
const memberPrefix = "member_"

// AnnounceConfig configures an Announcer.
type AnnounceConfig struct {
	// Servers is the ensemble, "host:port" each.
	Servers []string
	// Path is the serverset directory (--zk-announce); missing parents are
	// created.
	Path string
	// Auth is "user:pass" for ZooKeeper digest auth, or "".
	Auth string
	// SessionTimeout is the ZooKeeper session timeout; 0 means
	// DefaultSessionTimeout. It is also how long a crashed pacer stays
	// listed.
	SessionTimeout time.Duration
	// Service is the serviceEndpoint: this instance's admin listener
	// (--advertise and the --admin port).
	Service Endpoint
	// Additional are the additionalEndpoints, e.g. "admin", "dns",
	// "tcp-8000"; SetAdditional replaces them while running.
	Additional map[string]Endpoint
	// Shard is the serverset shard number.
	Shard int
}

// Announcer registers this pacer instance as an ephemeral sequential
// serverset member, <Path>/member_<seq>, so operators and peers find every
// running instance. It re-creates the node after a session expiry or if
// someone deletes it, and deletes it when Run ends.
type Announcer struct {
	cfg AnnounceConfig
	log *zap.Logger

	running atomic.Bool
	update  chan struct{} // capacity 1: SetAdditional requests coalesce

	mu         sync.Mutex // guards additional, node
	additional map[string]Endpoint
	node       string
}

// NewAnnouncer validates cfg. It does no I/O; Run does.
func NewAnnouncer(cfg AnnounceConfig, log *zap.Logger) (*Announcer, error) {
	if len(cfg.Servers) == 0 {
		return nil, errors.New("zookeeper: --zk-announce needs --zk (no servers)")
	}
	if err := validatePath(cfg.Path); err != nil {
		return nil, fmt.Errorf("zookeeper: --zk-announce: %w", err)
	}
	if err := checkEndpoint(cfg.Service); err != nil {
		return nil, fmt.Errorf("zookeeper: --zk-announce service endpoint: %w", err)
	}
	for name, e := range cfg.Additional {
		if err := checkEndpoint(e); err != nil {
			return nil, fmt.Errorf("zookeeper: --zk-announce endpoint %q: %w", name, err)
		}
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = DefaultSessionTimeout
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Announcer{
		cfg:        cfg,
		log:        log.Named("zookeeper").With(zap.String(keyPath, cfg.Path)),
		update:     make(chan struct{}, 1),
		additional: maps.Clone(cfg.Additional),
	}, nil
}

// Node returns the path of the member node while it exists, else "".
func (a *Announcer) Node() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.node
}

// SetAdditional replaces the additionalEndpoints (say, when service ports
// open or close); the node is updated in place. It never blocks.
func (a *Announcer) SetAdditional(eps map[string]Endpoint) {
	a.mu.Lock()
	a.additional = maps.Clone(eps)
	a.mu.Unlock()
	select {
	case a.update <- struct{}{}:
	default:
	}
}

// data is the node's serverset JSON.
func (a *Announcer) data() []byte {
	a.mu.Lock()
	add := maps.Clone(a.additional)
	a.mu.Unlock()
	b, _ := json.Marshal(struct {
		ServiceEndpoint     Endpoint            `json:"serviceEndpoint"`
		AdditionalEndpoints map[string]Endpoint `json:"additionalEndpoints"`
		Status              string              `json:"status"`
		Shard               int                 `json:"shard"`
	}{a.cfg.Service, add, StatusAlive, a.cfg.Shard})
	return b
}

func (a *Announcer) setNode(n string) {
	a.mu.Lock()
	a.node = n
	a.mu.Unlock()
}

// Run keeps the member node registered until ctx is done, then deletes it
// and returns nil. ZooKeeper being unreachable never ends it; an ACL that
// denies creating the node does, at start. Run may be called once.
func (a *Announcer) Run(ctx context.Context) error {
	if !a.running.CompareAndSwap(false, true) {
		return errors.New("zookeeper: Announcer.Run called twice")
	}
	sess, err := dial(a.cfg.Servers, a.cfg.SessionTimeout, a.cfg.Auth, a.log)
	if err != nil {
		return fmt.Errorf("zookeeper: %w", err)
	}
	defer sess.close()
	if err := sess.authenticate(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("zookeeper: %w", err)
	}

	var (
		conn      = sess.conn
		node      string          // our member node, "" when none
		owner     int64           // the session that created node
		watch     <-chan zk.Event // exists watch on node
		uncertain bool            // a create may have succeeded unseen
		created   bool            // registered at least once
		backoff   = retryMin
	)
	defer func() {
		if node != "" && conn.SessionID() == owner {
			// Leave at once instead of after the session timeout.
			if err := conn.Delete(node, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
				a.log.Debug("deleting member node", zap.Error(err))
			}
		}
		a.setNode("")
	}()
	for {
		if node != "" && conn.SessionID() != owner {
			// The session expired: the ephemeral node went with it.
			a.log.Warn("member node lost with the session; registering again", zap.String(keyMember, node))
			node, watch = "", nil
			a.setNode("")
		}
		var err error
		if node == "" {
			node, err = a.create(conn, uncertain)
			switch {
			case err == nil:
				owner, uncertain, created = conn.SessionID(), false, true
				a.setNode(node)
				a.log.Info("announced", zap.String(keyMember, node))
			case !created && (errors.Is(err, zk.ErrNoAuth) || errors.Is(err, zk.ErrAuthFailed)):
				return fmt.Errorf("zookeeper: --zk-announce %s: %w", a.cfg.Path, err)
			default:
				uncertain = uncertain || transient(err)
			}
		}
		if err == nil && watch == nil {
			var ok bool
			ok, _, watch, err = conn.ExistsW(node)
			if err == nil && !ok {
				a.log.Warn("member node deleted by someone else; registering again", zap.String(keyMember, node))
				node = ""
				a.setNode("")
				continue
			}
		}
		if err != nil {
			if !transient(err) {
				a.log.Warn("announcing failed; retrying", zap.Error(err))
			}
			watch = nil
			if !sess.retryWait(ctx, backoff) {
				return nil
			}
			backoff = nextBackoff(backoff)
			continue
		}
		backoff = retryMin
		select {
		case <-ctx.Done():
			return nil
		case ev := <-watch:
			watch = nil
			if ev.Type == zk.EventNodeDeleted {
				a.log.Warn("member node deleted by someone else; registering again", zap.String(keyMember, node))
				node = ""
				a.setNode("")
			}
			// EventNotWatching (expiry) is handled at the top; a data
			// change just re-arms.
		case <-a.update:
			if _, err := conn.Set(node, a.data(), -1); err != nil {
				a.log.Warn("updating the member node failed; retrying", zap.String(keyMember, node), zap.Error(err))
				// Try again on the next round.
				select {
				case a.update <- struct{}{}:
				default:
				}
				if !sess.retryWait(ctx, backoff) {
					return nil
				}
				backoff = nextBackoff(backoff)
			}
		}
	}
}

// create makes the parents and the member node. After a create whose
// outcome was lost with the connection (uncertain), it first adopts a node
// this session already owns, so a retry never registers the instance twice.
func (a *Announcer) create(conn *zk.Conn, uncertain bool) (string, error) {
	if err := ensurePath(conn, a.cfg.Path); err != nil {
		return "", err
	}
	if uncertain {
		if n, err := a.adopt(conn); n != "" || err != nil {
			return n, err
		}
	}
	n, err := conn.Create(join(a.cfg.Path, memberPrefix), a.data(), zk.FlagEphemeralSequential, zk.WorldACL(zk.PermAll))
	if err != nil {
		return "", fmt.Errorf("creating a member node under %s: %w", a.cfg.Path, err)
	}
	return n, nil
}

// adopt finds member nodes owned by the current session: it keeps the
// first, brings its data up to date, and deletes any other.
func (a *Announcer) adopt(conn *zk.Conn) (string, error) {
	sid := conn.SessionID()
	children, _, err := conn.Children(a.cfg.Path)
	if err != nil {
		return "", err
	}
	var mine string
	for _, nd := range bySeq(children, memberSeq) {
		p := join(a.cfg.Path, nd.name)
		ok, st, err := conn.Exists(p)
		if err != nil {
			return "", err
		}
		if !ok || st.EphemeralOwner != sid {
			continue
		}
		if mine == "" {
			mine = p
			if _, err := conn.Set(p, a.data(), -1); err != nil {
				return "", err
			}
			continue
		}
		if err := conn.Delete(p, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
			return "", err
		}
	}
	return mine, nil
}

// ensurePath creates p and its missing parents as persistent nodes.
func ensurePath(conn *zk.Conn, p string) error {
	if p == "/" {
		return nil
	}
	ok, _, err := conn.Exists(p)
	if err != nil || ok {
		return err
	}
	cur := ""
	for _, part := range strings.Split(p[1:], "/") {
		cur += "/" + part
		_, err := conn.Create(cur, nil, 0, zk.WorldACL(zk.PermAll))
		if err != nil && !errors.Is(err, zk.ErrNodeExists) {
			return fmt.Errorf("creating %s: %w", cur, err)
		}
	}
	return nil
}
