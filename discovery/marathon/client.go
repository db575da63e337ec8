package marathon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// Request limits. A Marathon with 10,000 tasks answers /v2/apps with tens of
// megabytes; the cap only stops a runaway peer.
const (
	maxBodyBytes     = 512 << 20
	snapshotTimeout  = 2 * time.Minute
	appFetchTimeout  = 30 * time.Second
	maxRedirects     = 10
	errorBodyExcerpt = 200
)

// client talks to Marathon over HTTP: it tries the configured URLs in order,
// sticks to the last one that answered, authenticates every request and
// follows the leader redirects of Marathon 1.7+ with the credentials intact.
type client struct {
	eps   []endpoint
	cur   atomic.Int32 // index into eps of the last good endpoint
	hc    *http.Client
	token string // only to scrub it from error text
}

func newClient(eps []endpoint, hc *http.Client, token string) *client {
	c := &client{eps: eps, token: token}
	var base http.Client
	if hc != nil {
		base = *hc
	} else {
		// No Client.Timeout: the event stream is one endless response.
		// Requests get deadlines from their contexts instead.
		base.Transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	next := base.CheckRedirect
	base.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= maxRedirects {
			return fmt.Errorf("stopped after %d redirects", maxRedirects)
		}
		// Marathon 1.7+ answers /v2/events on a standby with a 302 to the
		// leader. net/http drops Authorization when the host changes; the
		// leader needs it just as much, so put it back.
		if a := via[0].Header.Get("Authorization"); a != "" && req.Header.Get("Authorization") == "" {
			req.Header.Set("Authorization", a)
		}
		if next != nil {
			return next(req, via)
		}
		return nil
	}
	c.hc = &base
	return c
}

// current returns the endpoint requests start with (for Status).
func (c *client) current() endpoint { return c.eps[int(c.cur.Load())%len(c.eps)] }

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

// do sends a GET built for each endpoint in turn, from the sticky one on,
// until one answers with a status accept allows. The caller closes the body.
func (c *client) do(ctx context.Context, path string, query url.Values, accept string, acceptStatus func(int) bool) (*http.Response, endpoint, error) {
	start := int(c.cur.Load())
	var errs []string
	for i := range c.eps {
		idx := (start + i) % len(c.eps)
		ep := c.eps[idx]
		u := *ep.base
		u.Path = ep.base.Path + path
		u.RawQuery = query.Encode()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, ep, err
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
			if ctx.Err() != nil {
				return nil, ep, ctx.Err()
			}
			errs = append(errs, fmt.Sprintf("GET %s at %s: %s", path, ep.redacted, c.scrub(err.Error())))
			continue
		}
		c.cur.Store(int32(idx))
		return resp, ep, nil
	}
	return nil, c.current(), errors.New(strings.Join(errs, "; "))
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
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes+1))
	if err != nil {
		return nil, 0, fmt.Errorf("GET %s at %s: reading body: %s", path, ep.redacted, c.scrub(err.Error()))
	}
	if len(body) > maxBodyBytes {
		return nil, 0, fmt.Errorf("GET %s at %s: body larger than %d bytes", path, ep.redacted, maxBodyBytes)
	}
	return body, resp.StatusCode, nil
}

// fetchApps fetches every app with its tasks and readiness results.
func (c *client) fetchApps(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, snapshotTimeout)
	defer cancel()
	q := url.Values{"embed": {"apps.tasks", "apps.readiness"}}
	body, _, err := c.getJSON(ctx, "/v2/apps", q, false)
	return body, err
}

// fetchApp fetches one app; gone is true when Marathon says 404.
func (c *client) fetchApp(ctx context.Context, id string) (body []byte, gone bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, appFetchTimeout)
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

// scrub removes the token from text that may echo a request.
func (c *client) scrub(s string) string {
	if c.token != "" {
		s = strings.ReplaceAll(s, c.token, "<redacted>")
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
