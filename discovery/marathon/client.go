package marathon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Request limits.
const (
	maxRedirects     = 10
	errorBodyExcerpt = 200
	// dialTimeout bounds a TCP connect to one Marathon, so a dead URL or a
	// leader that vanished costs seconds, not the kernel's minutes, before
	// the next URL is tried.
	dialTimeout = 5 * time.Second
)

// client talks to Marathon over HTTP: it tries the leader first when it
// knows it (leader.go), then the configured URLs in order, sticking to the
// last one that answered; it authenticates every request and follows the
// leader redirects of Marathon 1.7+ with the credentials intact.
type client struct {
	eps          []endpoint
	cur          atomic.Int32 // index into eps of the last good endpoint
	hc           *http.Client
	token        string   // the DC/OS token, for a leader Config.Leader names
	secrets      []string // what scrub removes: the token, basic-auth values
	maxBody      int64
	fetchTimeout time.Duration
	log          *zap.Logger
	leader       leaderState
}

// newTransport builds pacer's own transport: the default one with a short
// dial timeout and, when caFile is set, that CA pool as the only roots.
func newTransport(base *http.Transport, caFile string) (*http.Transport, error) {
	tr := base.Clone()
	if base == http.DefaultTransport {
		tr.DialContext = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
	}
	if caFile == "" {
		return tr, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("marathon: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("marathon: CA file %s: no PEM certificate in it", caFile)
	}
	if tr.TLSClientConfig == nil {
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	tr.TLSClientConfig.RootCAs = pool
	return tr, nil
}

func newClient(eps []endpoint, cfg *normalized, log *zap.Logger) (*client, error) {
	c := &client{
		eps:          eps,
		token:        cfg.Token,
		maxBody:      cfg.MaxBodyBytes,
		fetchTimeout: cfg.FetchTimeout,
		log:          log,
	}
	c.leader.hooked = cfg.Leader != nil
	if cfg.Token != "" {
		c.secrets = append(c.secrets, cfg.Token)
	}
	for _, ep := range eps {
		// A proxy's error page may echo the request's headers.
		if b64, ok := strings.CutPrefix(ep.auth, "Basic "); ok && b64 != "" {
			c.secrets = append(c.secrets, b64)
		}
	}
	var base http.Client
	switch {
	case cfg.HTTPClient == nil:
		// No Client.Timeout: the event stream is one endless response.
		// Requests get deadlines from their contexts instead.
		tr, err := newTransport(http.DefaultTransport.(*http.Transport), cfg.CAFile)
		if err != nil {
			return nil, err
		}
		base.Transport = tr
	default:
		base = *cfg.HTTPClient
		if cfg.CAFile != "" {
			t, ok := base.Transport.(*http.Transport)
			if base.Transport == nil {
				t, ok = http.DefaultTransport.(*http.Transport), true
			}
			if !ok {
				return nil, errors.New("marathon: CAFile needs HTTPClient.Transport to be nil or an *http.Transport")
			}
			tr, err := newTransport(t, cfg.CAFile)
			if err != nil {
				return nil, err
			}
			base.Transport = tr
		}
	}
	next := base.CheckRedirect
	base.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= maxRedirects {
			return fmt.Errorf("stopped after %d redirects", maxRedirects)
		}
		if err := redirectAuth(req, via); err != nil {
			return err
		}
		if next != nil {
			return next(req, via)
		}
		return nil
	}
	c.hc = &base
	return c, nil
}

// redirectAuth decides whether the credentials of the first request go
// along a redirect, whatever net/http did with them (it keeps them for the
// same host name or a subdomain, on any scheme and port, and drops them
// elsewhere).
//
// Marathon 1.7+ answers /v2/events on a standby with a 302 to the leader,
// keeping the path and query; the leader needs the credentials as much as
// the standby did, so they follow such a redirect to another host. They
// never follow one from https to http (Marathon names an http leader unless
// it runs with --disable_http), nor one to another host that changes the
// path (a login page of a proxy in front of Marathon, say): the redirect is
// refused with an error naming where it led, rather than followed to an
// answer that would only confuse.
func redirectAuth(req *http.Request, via []*http.Request) error {
	auth := via[0].Header.Get("Authorization")
	if auth == "" {
		return nil
	}
	first, to := via[0].URL, req.URL
	if first.Scheme == "https" && to.Scheme != "https" {
		req.Header.Del("Authorization")
		return fmt.Errorf("redirected from https to %s://%s: not sending credentials in clear text "+
			"(run Marathon with --disable_http, or list the leader's https URL)", to.Scheme, to.Host)
	}
	if to.Host != first.Host && !samePath(first.Path, to.Path) {
		req.Header.Del("Authorization")
		return fmt.Errorf("redirected to %s://%s%.100s, which is not Marathon's redirect to its leader "+
			"(that keeps the path %s): not sending the credentials to another host", to.Scheme, to.Host, to.Path, first.Path)
	}
	req.Header.Set("Authorization", auth)
	return nil
}

// samePath reports whether a redirect to path to keeps the API path of the
// request to from: the same path, or that path without the prefix of a
// Marathon reached through a proxy (/service/marathon/v2/events to
// /v2/events).
func samePath(from, to string) bool {
	return to == from || (strings.HasPrefix(to, "/v2/") && strings.HasSuffix(from, to))
}

// current returns the endpoint requests start with (for Status).
func (c *client) current() endpoint {
	if l, ok := c.leader.get(); ok {
		return l
	}
	if len(c.eps) == 0 {
		return endpoint{redacted: "(leader unknown)"}
	}
	return c.eps[int(c.cur.Load())%len(c.eps)]
}

// statusError is a response Marathon answered with an unexpected status.
type statusError struct {
	Status int
	Msg    string
}

func (e *statusError) Error() string {
	hint := ""
	switch e.Status {
	case http.StatusUnauthorized, http.StatusForbidden:
		hint = " (check the credentials or token)"
	case http.StatusMethodNotAllowed:
		hint = " (a proxy changed the Accept header? Marathon wants exactly text/event-stream)"
	}
	if e.Msg == "" {
		return fmt.Sprintf("HTTP %d%s", e.Status, hint)
	}
	return fmt.Sprintf("HTTP %d%s: %s", e.Status, hint, e.Msg)
}

// do sends a GET to the leader, when one is known, then to each configured
// endpoint in turn from the sticky one on, until one answers with a status
// accept allows. The caller closes the body.
func (c *client) do(ctx context.Context, path string, query url.Values, accept string, acceptStatus func(int) bool) (*http.Response, endpoint, error) {
	var errs []string
	if l, ok := c.leader.get(); ok {
		resp, err := c.try(ctx, l, path, query, accept, acceptStatus)
		if err == nil {
			c.learn(l, -1, resp)
			return resp, l, nil
		}
		if ctx.Err() != nil {
			err = c.ctxError(ctx, path, l)
			if peerTooSlow(ctx) {
				// A leader that takes connections and never answers (a
				// JVM in a long pause, Jetty out of threads) is as gone
				// as one that refuses them: the next try asks the
				// configured URLs who leads now.
				c.leaderFailed(l, err)
			}
			return nil, l, err
		}
		errs = append(errs, err.Error())
		c.leaderFailed(l, err)
	}
	start := int(c.cur.Load())
	for i := range c.eps {
		idx := (start + i) % len(c.eps)
		ep := c.eps[idx]
		resp, err := c.try(ctx, ep, path, query, accept, acceptStatus)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ep, c.ctxError(ctx, path, ep)
			}
			errs = append(errs, err.Error())
			continue
		}
		c.cur.Store(int32(idx))
		c.learn(ep, idx, resp)
		return resp, ep, nil
	}
	if len(errs) == 0 {
		return nil, c.current(), errNoLeaderYet
	}
	return nil, c.current(), errors.New(strings.Join(errs, "; "))
}

// errNoLeaderYet is a request made before ZooKeeper named a Marathon leader
// (--marathon zk://...): at start, for a moment, not a failure.
var errNoLeaderYet = errors.New("no Marathon leader known yet (waiting for ZooKeeper to name one)")

// try sends one GET to one endpoint.
func (c *client) try(ctx context.Context, ep endpoint, path string, query url.Values, accept string, acceptStatus func(int) bool) (*http.Response, error) {
	u := *ep.base
	u.Path = ep.base.Path + path
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", accept)
	if ep.auth != "" {
		req.Header.Set("Authorization", ep.auth)
	}
	resp, err := c.hc.Do(req)
	if err == nil && !acceptStatus(resp.StatusCode) {
		err = &statusError{Status: resp.StatusCode, Msg: errorExcerpt(resp.Body)}
		_ = resp.Body.Close()
	}
	if err != nil {
		// A *url.Error repeats the whole URL: the event stream's carries
		// every event_type parameter, some 900 characters in each log line.
		// The path and the endpoint say where.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("GET %s at %s: %s", path, ep.redacted, c.scrub(err.Error()))
	}
	return resp, nil
}

// errNoAnswer is the cause a request's context is cancelled with when its
// peer stayed silent too long (the event stream's idle timer).
var errNoAnswer = errors.New("no answer in time")

// peerTooSlow reports whether ctx ended because the peer was too slow, rather
// than for shutdown or a leader change.
func peerTooSlow(ctx context.Context) bool {
	cause := context.Cause(ctx)
	return errors.Is(cause, context.DeadlineExceeded) || errors.Is(cause, errNoAnswer)
}

// ctxError explains a request cut by its context: the fetch timeout, the
// stream's idle timeout, or shutdown.
func (c *client) ctxError(ctx context.Context, path string, ep endpoint) error {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("GET %s at %s: no complete answer within %v (the fetch timeout)", path, ep.redacted, c.fetchTimeout)
	case errors.Is(context.Cause(ctx), errNoAnswer):
		return fmt.Errorf("GET %s at %s: %w", path, ep.redacted, errNoAnswer)
	}
	return ctx.Err()
}

// getJSON fetches a JSON document. It returns the body and status for the
// accepted statuses (200, and 404 when notFoundOK).
func (c *client) getJSON(ctx context.Context, path string, query url.Values, notFoundOK bool) ([]byte, int, error) {
	resp, ep, err := c.do(ctx, path, query, "application/json", func(s int) bool {
		return s == http.StatusOK || (notFoundOK && s == http.StatusNotFound)
	})
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	tooLarge := func() error {
		return fmt.Errorf("GET %s at %s: response larger than the %d-byte limit (MaxBodyBytes); "+
			"raise it if Marathon really serves that much", path, ep.redacted, c.maxBody)
	}
	if resp.ContentLength > c.maxBody {
		return nil, 0, tooLarge()
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, c.maxBody+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil, 0, c.ctxError(ctx, path, ep)
		}
		return nil, 0, fmt.Errorf("GET %s at %s: reading body: %s", path, ep.redacted, c.scrub(err.Error()))
	}
	if int64(len(body)) > c.maxBody {
		return nil, 0, tooLarge()
	}
	return body, resp.StatusCode, nil
}

// fetchApps fetches every app with its tasks and readiness results.
func (c *client) fetchApps(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.fetchTimeout)
	defer cancel()
	q := url.Values{"embed": {"apps.tasks", "apps.readiness"}}
	body, _, err := c.getJSON(ctx, "/v2/apps", q, false)
	return body, err
}

// fetchApp fetches one app; gone is true when Marathon says 404.
func (c *client) fetchApp(ctx context.Context, id string) (body []byte, gone bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.fetchTimeout)
	defer cancel()
	q := url.Values{"embed": {"app.tasks", "app.readiness"}}
	// Path, not RawPath: url.URL escapes it. Marathon ids are [a-z0-9.-]
	// segments anyway.
	body, status, err := c.getJSON(ctx, "/v2/apps/"+strings.Trim(id, "/"), q, true)
	if err != nil {
		return nil, false, err
	}
	return body, status == http.StatusNotFound, nil
}

// openStream subscribes to /v2/events. The stream lives as long as ctx.
func (c *client) openStream(ctx context.Context) (*http.Response, endpoint, error) {
	q := url.Values{"plan-format": {"light"}, "event_type": subscribedEvents}
	// Jetty compares Accept with equals: anything else than exactly
	// text/event-stream gets a 405.
	resp, ep, err := c.do(ctx, "/v2/events", q, "text/event-stream", func(s int) bool { return s == http.StatusOK })
	if err != nil {
		return nil, ep, err
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		if mt, _, _ := mime.ParseMediaType(ct); mt != "text/event-stream" {
			_ = resp.Body.Close()
			return nil, ep, fmt.Errorf("GET /v2/events at %s: content type %q, want text/event-stream", ep.redacted, ct)
		}
	}
	return resp, ep, nil
}

// scrub removes the credentials from text that may echo a request.
func (c *client) scrub(s string) string {
	for _, secret := range c.secrets {
		s = strings.ReplaceAll(s, secret, "<redacted>")
	}
	return s
}

// errorExcerpt reads the start of an error body: Marathon's {"message":...}
// or a proxy's page, trimmed to one short line.
func errorExcerpt(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, errorBodyExcerpt))
	s := strings.Join(strings.Fields(string(b)), " ")
	return s
}
