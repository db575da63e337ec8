package marathon

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/pacer-lb/pacer/discovery"
)

// pacer's own active checks (package health) are derived per port index:
//
//   - from the app's Marathon health check on that index: HTTP, HTTPS,
//     TCP and their MESOS_* twins (Marathon's COMMAND checks cannot be run
//     from outside the task, and a check on a fixed port number is not tied
//     to an index). Only what to probe is taken; Marathon's intervalSeconds
//     and timeoutSeconds (60 s and 20 s by default) pace its kill decision
//     and would leave a dead backend in rotation for minutes, so pacer
//     probes at its own --health-interval;
//   - else from the labels PACER_{n}_HEALTHCHECK_PATH (an HTTP check of
//     that path) and PACER_{n}_HEALTHCHECK_INTERVAL (a Go duration such as
//     "2s" or a number of seconds; alone, it asks for a TCP check). The
//     interval label also paces a Marathon-derived check.
//
// HAPROXY_* twins are read too, as for every label, although marathon-lb
// has none of these.

// Label names, after the PACER_{n}_ / HAPROXY_{n}_ prefix.
const (
	labelCheckPath     = "HEALTHCHECK_PATH"
	labelCheckInterval = "HEALTHCHECK_INTERVAL"
)

// healthChecks returns the active check of each of the app's nports port
// indexes (nil where there is none), or an error naming an invalid label.
func healthChecks(a *appDef, nports int) ([]*discovery.HealthCheck, error) {
	out := make([]*discovery.HealthCheck, nports)
	for n := range out {
		hc := marathonCheckOn(a, n)
		name := func(s string) string { return strconv.Itoa(n) + "_" + s }
		if v, key, ok := lookupLabel(a.Labels, name(labelCheckPath)); ok && hc == nil {
			p := strings.TrimSpace(v)
			if p == "" || p[0] != '/' || strings.ContainsAny(p, " \t\r\n") {
				return nil, labelError(key, v, "want one path starting with /")
			}
			hc = &discovery.HealthCheck{Protocol: discovery.CheckHTTP, Path: p, Origin: "label " + key}
		}
		if v, key, ok := lookupLabel(a.Labels, name(labelCheckInterval)); ok {
			d, err := parseInterval(v)
			if err != nil {
				return nil, labelError(key, v, "want a duration such as 2s or 500ms, or seconds")
			}
			if hc == nil {
				hc = &discovery.HealthCheck{Protocol: discovery.CheckTCP, Origin: "label " + key}
			}
			hc.Interval = d
		}
		out[n] = hc
	}
	return out, nil
}

// marathonCheckOn returns the check pacer can run for the app's Marathon
// health check on port index n, or nil. An HTTP(S) check wins over a TCP
// one on the same index: it says more. A check without portIndex and port
// targets index 0 (Marathon's default); a check with a fixed port number is
// not tied to an index.
func marathonCheckOn(a *appDef, n int) *discovery.HealthCheck {
	var best *discovery.HealthCheck
	for _, hc := range a.HealthChecks {
		idx := 0
		switch {
		case hc.PortIndex != nil:
			idx = *hc.PortIndex
		case hc.Port != nil:
			continue
		}
		if idx != n {
			continue
		}
		proto := strings.ToUpper(hc.Protocol)
		c := &discovery.HealthCheck{Origin: "marathon " + proto + " check"}
		switch proto {
		case "HTTP", "MESOS_HTTP":
			c.Protocol, c.Path = discovery.CheckHTTP, hc.Path
		case "HTTPS", "MESOS_HTTPS":
			c.Protocol, c.Path = discovery.CheckHTTPS, hc.Path
		case "TCP", "MESOS_TCP":
			c.Protocol = discovery.CheckTCP
		default:
			continue // COMMAND, or something newer
		}
		if best == nil || (best.Protocol == discovery.CheckTCP && c.Protocol != discovery.CheckTCP) {
			best = c
		}
	}
	return best
}

// httpCheckOn reports whether the app has an HTTP health check on port
// index n, which makes the port an HTTP-mode one. Not an HTTPS check: the
// port then speaks TLS, which the HTTP proxy would send plain HTTP to; it
// stays a TCP port and its TLS passes through.
func httpCheckOn(a *appDef, n int) bool {
	c := marathonCheckOn(a, n)
	return c != nil && c.Protocol == discovery.CheckHTTP
}

var errIntervalRange = errors.New("interval out of range")

// parseInterval reads "2s", "500ms" or a number of seconds ("2", "0.5"),
// from 10 ms to one hour.
func parseInterval(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	d, err := time.ParseDuration(v)
	if err != nil {
		f, ferr := strconv.ParseFloat(v, 64)
		if ferr != nil {
			return 0, err
		}
		d = time.Duration(f * float64(time.Second))
	}
	if d < 10*time.Millisecond || d > time.Hour {
		return 0, errIntervalRange
	}
	return d, nil
}
