package marathon

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/pacer-lb/pacer/internal/redact"
)

// Defaults for the zero values of Config.
const (
	DefaultResyncInterval    = 5 * time.Minute
	DefaultStreamIdleTimeout = 30 * time.Second // three missed 10 s Jetty heartbeats
	DefaultBackoffMin        = 100 * time.Millisecond
	DefaultBackoffMax        = 5 * time.Second
	// DefaultFetchTimeout bounds one GET /v2/apps or /v2/apps/{id}, body
	// included. marathon-lb reads for up to 46 s; a healthy Marathon
	// answers a 10,000-task snapshot in well under a second, so 30 s only
	// ever cuts a hung or overloaded one, after which the source retries
	// (with backoff) instead of waiting forever.
	DefaultFetchTimeout = 30 * time.Second
	// DefaultMaxBodyBytes caps one response body. Marathon's own guidance
	// tops out at about 2,000 apps and 50,000 tasks, which is about 40 MB
	// of /v2/apps?embed=apps.tasks (roughly 0.7 KB per task, 2 KB per app);
	// 64 MiB leaves half again as much headroom, while a runaway or hostile
	// peer cannot make pacer buffer without bound (the body is held whole
	// while it is decoded).
	DefaultMaxBodyBytes = 64 << 20
)

// Config configures a Source. The zero value of every field but URLs is
// usable.
type Config struct {
	// URLs are Marathon base URLs, http[s]://[user:pass@]host:port[/prefix]
	// (a prefix such as /service/marathon for DC/OS Admin Router; a '/',
	// '?' or '#' in user or password written %2F, %3F, %23). They are
	// tried in order, sticking to the last one that answered. When one of
	// them is a standby, the source finds the leader (GET /v2/leader, the
	// X-Marathon-Leader header of proxied answers, or a /v2/events
	// redirect) and talks to it directly, falling back to URLs when the
	// leader stops answering. URLs may be empty only when Leader is set.
	URLs []string
	// Leader, if set, says who leads: it returns the leader's base URL
	// ("http://host:port"; "" while unknown) and a channel closed when that
	// changes, read together. zookeeper.LeaderWatcher.Watch has this
	// shape. The leader is then tried before URLs, with Token as its
	// credentials (or those of URLs[0]); when it changes, the event stream
	// reconnects to the new leader and a full resync follows. Nil: the
	// leader is found from URLs alone.
	Leader func() (leaderURL string, changed <-chan struct{})
	// CAFile, if set, is a PEM file of the certificate authorities that
	// sign Marathon's https certificate; it replaces the system roots.
	CAFile string
	// FetchTimeout bounds one snapshot or app fetch, body included. 0 means
	// DefaultFetchTimeout.
	FetchTimeout time.Duration
	// MaxBodyBytes caps one response body; a larger answer fails the fetch
	// with an error that names the limit. 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Token, if set, is sent as DC/OS's "Authorization: token=<Token>"
	// instead of the URL's basic-auth credentials.
	Token string
	// Groups restricts the source to apps whose GROUP label (PACER_GROUP,
	// else HAPROXY_GROUP, a comma list) names one of them. Nil, empty or
	// containing "*" means every app.
	Groups []string
	// ResyncInterval is how often a full snapshot is fetched whatever the
	// event stream says (Marathon up to 1.7 drops events for slow
	// consumers silently). 0 means DefaultResyncInterval.
	ResyncInterval time.Duration
	// StreamIdleTimeout declares the event stream dead when no byte, not
	// even a heartbeat, arrived for that long. 0 means DefaultStreamIdleTimeout.
	StreamIdleTimeout time.Duration
	// BackoffMin and BackoffMax bound the jittered exponential backoff
	// between reconnects and failed resyncs. 0 means DefaultBackoffMin and
	// DefaultBackoffMax.
	BackoffMin, BackoffMax time.Duration
	// KeepUnreachable keeps routing to TASK_UNREACHABLE and TASK_LOST tasks,
	// as marathon-lb does (local health checks decide). Nil means true.
	KeepUnreachable *bool
	// SelfAppID is pacer's own Marathon app id ($MARATHON_APP_ID); that app
	// is never routed.
	SelfAppID string
	// Resolve turns an agent host name into an address. Nil means the
	// system resolver behind a small cache. IP literals never reach it.
	Resolve func(ctx context.Context, host string) (netip.Addr, error)
	// HTTPClient, if set, is used for every request (tests). It must not
	// have a Timeout: the event stream is one long response. Its
	// CheckRedirect, if any, is called after pacer's own.
	HTTPClient *http.Client
}

// endpoint is one configured Marathon: the URL with credentials removed and
// the Authorization header they turn into.
type endpoint struct {
	base     *url.URL // no user info; path is the prefix without a trailing slash
	redacted string
	auth     string // Authorization header value, or ""
}

// parseEndpoints validates the URLs. Errors name the bad URL with its
// credentials removed. An empty list is only an error without a leader
// hook.
func parseEndpoints(urls []string, token string, hooked bool) ([]endpoint, error) {
	if len(urls) == 0 && !hooked {
		return nil, errors.New("marathon: no URL configured")
	}
	eps := make([]endpoint, 0, len(urls))
	for _, raw := range urls {
		raw = strings.TrimSpace(raw)
		u, err := url.Parse(raw)
		// Errors show the raw URL cut at its last '@', not u: a password
		// holding '/', '?' or '#' ends the host early, leaving the rest of
		// the password in what url.Parse calls the path, query or fragment.
		shown := redact.Userinfo(raw)
		switch {
		case err != nil:
			return nil, fmt.Errorf("marathon: bad URL %q: want http[s]://[user:pass@]host:port[/prefix]", shown)
		case u.Scheme != "http" && u.Scheme != "https":
			return nil, fmt.Errorf("marathon: bad URL %q: scheme must be http or https", shown)
		case u.Host == "" || u.Hostname() == "":
			return nil, fmt.Errorf("marathon: bad URL %q: no host", shown)
		case strings.Contains(u.Path, "@") || strings.Contains(u.RawPath, "@"):
			// "http://user:a/b@host": the host is "user:a" and the
			// password's tail is the path. No Marathon prefix has an '@'.
			return nil, fmt.Errorf("marathon: bad URL %q: '@' after the host: write a '/' in the user name or password as %%2F", shown)
		case u.RawQuery != "" || u.Fragment != "":
			return nil, fmt.Errorf("marathon: bad URL %q: no query or fragment allowed", shown)
		}
		shown = redactURL(u)
		if p := u.Port(); p != "" {
			var n int
			if _, err := fmt.Sscanf(p, "%d", &n); err != nil || n < 1 || n > 65535 {
				return nil, fmt.Errorf("marathon: bad URL %q: bad port", shown)
			}
		}
		ep := endpoint{redacted: shown}
		switch {
		case token != "":
			ep.auth = "token=" + token
		case u.User != nil:
			pass, _ := u.User.Password()
			ep.auth = basicAuth(u.User.Username(), pass)
		}
		b := *u
		b.User = nil
		b.Path = strings.TrimRight(b.Path, "/")
		b.RawPath = ""
		ep.base = &b
		eps = append(eps, ep)
	}
	return eps, nil
}

// basicAuth is the Authorization value of HTTP basic authentication.
func basicAuth(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// redactURL prints u without user info, so neither a user name nor a
// password reaches a log line, an error or /v1/services.
func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	return c.String()
}

// normalized is the Config with defaults applied.
type normalized struct {
	Config
	allGroups       bool
	groups          map[string]bool
	keepUnreachable bool
}

func normalize(cfg Config) (normalized, error) {
	n := normalized{Config: cfg, keepUnreachable: true}
	if cfg.KeepUnreachable != nil {
		n.keepUnreachable = *cfg.KeepUnreachable
	}
	if n.ResyncInterval <= 0 {
		n.ResyncInterval = DefaultResyncInterval
	}
	if n.StreamIdleTimeout <= 0 {
		n.StreamIdleTimeout = DefaultStreamIdleTimeout
	}
	if n.BackoffMin <= 0 {
		n.BackoffMin = DefaultBackoffMin
	}
	if n.BackoffMax <= 0 {
		n.BackoffMax = DefaultBackoffMax
	}
	if n.FetchTimeout <= 0 {
		n.FetchTimeout = DefaultFetchTimeout
	}
	if n.MaxBodyBytes <= 0 {
		n.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if n.BackoffMax < n.BackoffMin {
		return n, fmt.Errorf("marathon: BackoffMax %v is below BackoffMin %v", n.BackoffMax, n.BackoffMin)
	}
	if cfg.HTTPClient != nil && cfg.HTTPClient.Timeout != 0 {
		return n, errors.New("marathon: HTTPClient must not set Timeout (the event stream is one long response)")
	}
	n.SelfAppID = normalizeID(strings.TrimSpace(cfg.SelfAppID))
	n.allGroups = true
	for _, g := range cfg.Groups {
		g = strings.TrimSpace(g)
		if g == "" {
			continue
		}
		if g == "*" {
			n.allGroups, n.groups = true, nil
			break
		}
		if n.groups == nil {
			n.groups = map[string]bool{}
		}
		n.groups[g] = true
		n.allGroups = false
	}
	return n, nil
}
