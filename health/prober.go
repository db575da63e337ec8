package health

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/pacer-lb/pacer/discovery"
)

// maxProbeBody is how much of an HTTP probe's answer is read (and dropped)
// so that its connection can carry the next probe.
const maxProbeBody = 64 << 10

// NetProber is the default Prober: TCP probes connect and close; HTTP and
// HTTPS probes GET the check's path and want a 2xx or 3xx status, as
// Marathon's checks do, over keep-alive connections (one per backend), so a
// probe every second costs a backend one request, not one connection.
type NetProber struct {
	dialer    net.Dialer
	transport *http.Transport
	client    *http.Client
}

var _ Prober = (*NetProber)(nil)

// NewNetProber returns a NetProber.
func NewNetProber() *NetProber {
	p := &NetProber{}
	p.transport = &http.Transport{
		DialContext:         p.dialer.DialContext,
		MaxIdleConnsPerHost: 1,
		// Longer than any sane probe interval, so a connection is reused
		// from one probe to the next; short enough that the connection of
		// a backend that left does not linger.
		IdleConnTimeout:    30 * time.Second,
		DisableCompression: true,
		// Marathon does not verify a task's certificate either: tasks on
		// ephemeral ports rarely have one that matches their address.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}
	p.client = &http.Client{
		Transport: p.transport,
		// A redirect is an answer: Marathon counts 3xx as alive.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return p
}

// Probe runs check against addr within timeout.
func (p *NetProber) Probe(ctx context.Context, addr netip.AddrPort, check *discovery.HealthCheck, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if check == nil || check.Protocol == discovery.CheckTCP {
		c, err := p.dialer.DialContext(ctx, "tcp", addr.String())
		if err != nil {
			return err
		}
		return c.Close()
	}
	scheme := "http"
	if check.Protocol == discovery.CheckHTTPS {
		scheme = "https"
	}
	path := check.Path
	if path == "" || path[0] != '/' {
		path = "/" + path
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+addr.String()+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "pacer-health")
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxProbeBody))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return nil
}

// Close closes the idle probe connections.
func (p *NetProber) Close() { p.transport.CloseIdleConnections() }
