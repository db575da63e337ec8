package marathon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/internal/redact"
)

// Leader discovery (marathon-api.md §1.5, gotchas 5 and 13). A standby
// proxies every request to the leader, adding latency and failing with
// 502/503 during elections, and redirects /v2/events (1.7+). So the client
// talks to the leader directly once it knows it, and falls back to the
// configured URLs when the leader stops answering:
//
//   - a proxied answer (it carries "Via", which only a standby's proxy adds)
//     names the leader in X-Marathon-Leader;
//   - a /v2/events redirect lands on the leader;
//   - GET /v2/leader, asked before each stream (re)connect while no leader
//     is known, says who leads or that nobody does (404);
//   - or Config.Leader (ZooKeeper) says so, and then it alone decides.
//
// An answer that was neither proxied nor redirected came from the leader
// itself, so the configured URL is kept: adopting the name the leader gives
// itself (its --hostname) could pick a name pacer cannot resolve.

const (
	// leaderLookupTimeout bounds one GET /v2/leader.
	leaderLookupTimeout = 5 * time.Second
	// leaderCooldown is how long a leader that failed is not adopted again
	// from headers, so a leader that answers its peers but not pacer does
	// not cost a failed request on every call.
	leaderCooldown = 30 * time.Second
)

// errNoLeader says Marathon itself reports that nobody leads (an election).
var errNoLeader = errors.New("no Marathon leader")

// leaderState is the client's view of who leads. Safe for concurrent use.
type leaderState struct {
	hooked bool // Config.Leader decides; headers are ignored

	mu       sync.Mutex
	ep       *endpoint // nil: unknown, use the configured URLs
	bad      string    // base URL of the last leader that failed
	badUntil time.Time
}

func (l *leaderState) get() (endpoint, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ep == nil {
		return endpoint{}, false
	}
	return *l.ep, true
}

// leaderEndpoint turns a leader base URL into an endpoint with the given
// Authorization. It refuses what is not http[s]://host[:port].
func leaderEndpoint(raw, auth string) (endpoint, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return endpoint{}, fmt.Errorf("leader %q: want http[s]://host:port", redact.Userinfo(raw))
	}
	if u.User != nil {
		if auth == "" {
			pass, _ := u.User.Password()
			auth = basicAuth(u.User.Username(), pass)
		}
		u.User = nil
	}
	b := &url.URL{Scheme: u.Scheme, Host: u.Host, Path: strings.TrimRight(u.Path, "/")}
	return endpoint{base: b, redacted: b.String(), auth: auth}, nil
}

// setHook records the leader Config.Leader reports ("" while unknown) and
// reports whether it changed.
func (c *client) setHook(raw string) (changed bool, err error) {
	var ep *endpoint
	if raw != "" {
		auth := "token=" + c.token
		if c.token == "" {
			auth = ""
			if len(c.eps) > 0 {
				auth = c.eps[0].auth
			}
		}
		e, err := leaderEndpoint(raw, auth)
		if err != nil {
			return false, err
		}
		ep = &e
	}
	c.leader.mu.Lock()
	defer c.leader.mu.Unlock()
	old := ""
	if c.leader.ep != nil {
		old = c.leader.ep.redacted
	}
	now := ""
	if ep != nil {
		now = ep.redacted
	}
	c.leader.ep = ep
	return old != now, nil
}

// learn looks at an answer from ep (eps[idx], or the leader when idx < 0)
// for news of the leader.
func (c *client) learn(ep endpoint, idx int, resp *http.Response) {
	if c.leader.hooked {
		return
	}
	switch {
	case resp.Request != nil && resp.Request.URL != nil && resp.Request.URL.Host != ep.base.Host:
		// Followed a /v2/events redirect: the final URL is the leader.
		u := resp.Request.URL
		c.adopt(ep, u.Scheme+"://"+u.Host, "redirect")
	case resp.Header.Get("Via") != "":
		if h := resp.Header.Get("X-Marathon-Leader"); h != "" {
			c.adopt(ep, h, "X-Marathon-Leader")
		}
	case idx >= 0:
		// ep answered itself: it leads, or is as good as the leader.
		c.leader.mu.Lock()
		c.leader.ep = nil
		c.leader.mu.Unlock()
	}
}

// adopt makes raw the leader, reached with from's credentials.
func (c *client) adopt(from endpoint, raw, how string) {
	ep, err := leaderEndpoint(raw, from.auth)
	if err != nil {
		c.log.Debug("ignoring a leader address", zap.String("from", how), zap.Error(err))
		return
	}
	if ep.base.Scheme == from.base.Scheme && ep.base.Host == from.base.Host {
		return
	}
	if from.auth != "" && from.base.Scheme == "https" && ep.base.Scheme != "https" {
		// Marathon names an http leader unless it runs with --disable_http;
		// the credentials stay on https, through the standby's proxy.
		c.log.Debug("not talking to the leader directly: it would downgrade https with credentials",
			zap.String("leader", ep.redacted))
		return
	}
	c.leader.mu.Lock()
	defer c.leader.mu.Unlock()
	if ep.redacted == c.leader.bad && time.Now().Before(c.leader.badUntil) {
		return
	}
	if c.leader.ep != nil && c.leader.ep.redacted == ep.redacted {
		return
	}
	c.leader.ep = &ep
	c.log.Info("found the Marathon leader; talking to it directly", zap.String("leader", ep.redacted),
		zap.String("via", from.redacted), zap.String("from", how))
}

// leaderFailed forgets a leader that did not answer (unless Config.Leader
// owns it), so the configured URLs are used and the leader found again.
func (c *client) leaderFailed(l endpoint, err error) {
	if c.leader.hooked {
		return
	}
	c.leader.mu.Lock()
	defer c.leader.mu.Unlock()
	if c.leader.ep == nil || c.leader.ep.redacted != l.redacted {
		return
	}
	c.leader.ep = nil
	c.leader.bad, c.leader.badUntil = l.redacted, time.Now().Add(leaderCooldown)
	c.log.Info("the Marathon leader stopped answering; back to the configured URLs",
		zap.String("leader", l.redacted), zap.Error(err))
}

// findLeader asks the configured URLs who leads (GET /v2/leader) when no
// leader is known and Config.Leader is not set. It returns errNoLeader
// (wrapped) when every URL that answered says nobody leads, and nil when
// the question could not be settled otherwise: the caller then just tries.
func (c *client) findLeader(ctx context.Context) error {
	if c.leader.hooked {
		return nil
	}
	if _, ok := c.leader.get(); ok {
		return nil
	}
	var noLeader []string
	for i := range c.eps {
		idx := (int(c.cur.Load()) + i) % len(c.eps)
		ep := c.eps[idx]
		found, err := c.askLeader(ctx, ep, idx)
		switch {
		case ctx.Err() != nil:
			return nil
		case found:
			return nil
		case errors.Is(err, errNoLeader):
			noLeader = append(noLeader, err.Error())
		case err != nil:
			c.log.Debug("GET /v2/leader failed", zap.String("url", ep.redacted), zap.Error(err))
		}
	}
	if len(noLeader) > 0 {
		return fmt.Errorf("%w: %s", errNoLeader, strings.Join(noLeader, "; "))
	}
	return nil
}

// askLeader sends GET /v2/leader to one URL. found is true when it settled
// who leads (possibly ep itself).
func (c *client) askLeader(parent context.Context, ep endpoint, idx int) (found bool, err error) {
	ctx, cancel := context.WithTimeout(parent, leaderLookupTimeout)
	defer cancel()
	resp, err := c.try(ctx, ep, "/v2/leader", nil, "application/json", func(s int) bool {
		return s == http.StatusOK || s == http.StatusNotFound || s == http.StatusBadGateway || s == http.StatusServiceUnavailable
	})
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		msg := c.scrub(errorExcerpt(strings.NewReader(string(body))))
		if !strings.Contains(strings.ToLower(msg), "leader") {
			// Not Marathon's answer (a proxy's page, or no /v2/leader at
			// all): this settles nothing.
			return false, fmt.Errorf("GET /v2/leader at %s: HTTP %d: %s", ep.redacted, resp.StatusCode, msg)
		}
		// 404 "There is no leader" from a leaderless Marathon, or a
		// standby's 502/503 "Could not determine the current leader".
		return false, fmt.Errorf("%w (GET /v2/leader at %s: HTTP %d: %s)", errNoLeader, ep.redacted, resp.StatusCode, msg)
	}
	var l struct {
		Leader string `json:"leader"`
	}
	if json.Unmarshal(body, &l) != nil || l.Leader == "" {
		return false, fmt.Errorf("GET /v2/leader at %s: no leader in the answer", ep.redacted)
	}
	c.cur.Store(int32(idx))
	if resp.Header.Get("Via") == "" {
		c.learn(ep, idx, resp) // ep answered itself
		return true, nil
	}
	leader := resp.Header.Get("X-Marathon-Leader")
	if leader == "" {
		leader = ep.base.Scheme + "://" + l.Leader
	}
	c.adopt(ep, leader, "/v2/leader")
	return true, nil
}
