package discovery

import (
	"net/netip"
	"strings"
)

// Mode is how a service's traffic is proxied.
type Mode uint8

// Modes.
const (
	ModeTCP Mode = iota
	ModeHTTP
)

func (m Mode) String() string {
	if m == ModeHTTP {
		return "http"
	}
	return "tcp"
}

// Protocol is the transport a service port speaks.
type Protocol uint8

// Protocols. A Marathon port may be "udp,tcp": both, as mesos-dns answers
// it under _tcp and _udp.
const (
	ProtoTCP Protocol = iota
	ProtoUDP
	ProtoTCPUDP
)

// HasTCP reports whether the port speaks TCP: what pacer's proxies carry.
func (p Protocol) HasTCP() bool { return p != ProtoUDP }

// HasUDP reports whether the port speaks UDP.
func (p Protocol) HasUDP() bool { return p != ProtoTCP }

func (p Protocol) String() string {
	switch p {
	case ProtoUDP:
		return "udp"
	case ProtoTCPUDP:
		return "udp,tcp"
	}
	return "tcp"
}

// Balance is a load-balancing algorithm, as in HAPROXY_{n}_BALANCE.
type Balance uint8

// Balancing algorithms.
const (
	BalanceRoundRobin Balance = iota
	BalanceLeastConn
	BalanceSource
)

func (b Balance) String() string {
	switch b {
	case BalanceLeastConn:
		return "leastconn"
	case BalanceSource:
		return "source"
	}
	return "roundrobin"
}

// ServiceKey names a service: an app and one of its port indexes.
type ServiceKey struct {
	App       string // app id, e.g. "/shop/web"
	PortIndex int
}

// Backend is one routable endpoint of a service: a task and one of its ports.
type Backend struct {
	TaskID string
	Host   string         // agent host as the source reported it
	Addr   netip.AddrPort // where connections go
}

// Service is one port of one app, with the backends that may receive traffic now.
// A Service is immutable once it is in a published Snapshot.
type Service struct {
	Key         ServiceKey
	Name        string // DNS label of the app (mesos-dns style), e.g. "web-shop"
	PortName    string // the port's name, if the app names it
	ServicePort int    // the stable port clients use; 0 when the app has none
	Protocol    Protocol
	Mode        Mode
	Balance     Balance
	VHosts      []string // lower-cased Host names for the HTTP listener
	// Paths are the path prefixes the HTTP listener routes to this service
	// on its VHosts (any one matches; none means every path), compared in
	// any case when PathsFold is set (marathon-lb's "-i").
	Paths           []string
	PathsFold       bool
	Sticky          bool
	RedirectToHTTPS bool
	// Check is how pacer's own health checker (package health) probes this
	// service's backends; nil means no active check (passive detection still
	// applies). Sources derive it from the app's own health check on this
	// port, or from labels.
	Check *HealthCheck

	// Backends are the routable endpoints, sorted by task id, then address.
	Backends []Backend
}

// PathSpec is Paths as a PATH label writes them: "-i /api /v2", or "".
func (s *Service) PathSpec() string {
	spec := strings.Join(s.Paths, " ")
	if s.PathsFold && spec != "" {
		spec = "-i " + spec
	}
	return spec
}

// TaskState is what a source says about one task, routable or not, for
// operators (/v1/services) rather than for routing.
type TaskState struct {
	ID       string `json:"id"`
	Host     string `json:"host"`
	State    string `json:"state"` // Mesos state, e.g. TASK_RUNNING
	Ports    []int  `json:"ports"`
	Routable bool   `json:"routable"`
	Reason   string `json:"reason,omitempty"` // why the task is not routable; empty when it is
	// Addr is where the task is reached (its agent's address, or its own
	// with IP-per-task), set only for a task DNS may answer: a routable one,
	// or one of an app with a Problem that would be routable but for the
	// problem (running, healthy, ready). It is what DNS answers for an app
	// with no ports.
	Addr netip.Addr `json:"addr,omitzero"`
}

// App is everything a source knows about one app, already decided: which
// services it offers and which of its tasks are routable.
type App struct {
	ID      string // unique across sources; Marathon app ids start with "/"
	Source  string // the source that owns the app, e.g. "marathon"
	Version string
	Group   string
	// Problem is set when the app could not be understood; such an app offers
	// no services and the reason is shown to operators.
	Problem  string
	Services []*Service
	// DNSOnly are, for an app with a Problem, its ports as DNS answers them
	// anyway: named from the app's port definitions alone, not from the
	// labels or checks that failed (mesos-dns reads neither), with the tasks
	// that would be routable as backends. No proxy routes them and they
	// claim no service port: a typo in a load-balancer label costs the app
	// its load balancing, not its DNS names.
	DNSOnly []*Service
	Tasks   []TaskState
}

// Conflict records that several services claim one service port.
type Conflict struct {
	Port   int
	Winner ServiceKey
	Losers []ServiceKey
}

// AppName turns an app id into a DNS label the way mesos-dns does: path
// segments reversed and joined with "-" ("/shop/web" gives "web-shop"), then
// made a valid RFC 1123 label (lower case, [a-z0-9-], no leading or trailing
// dash, at most 63 characters).
func AppName(appID string) string {
	segs := strings.Split(strings.Trim(appID, "/"), "/")
	var b strings.Builder
	for i := len(segs) - 1; i >= 0; i-- {
		if segs[i] == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('-')
		}
		b.WriteString(segs[i])
	}
	return Label(b.String())
}

// IsHostname reports whether name (a trailing dot aside) is a DNS host name:
// at most 253 characters of dot-separated labels, each 1 to 63 letters,
// digits, hyphens or underscores, with no hyphen at either end.
func IsHostname(name string) bool {
	name = strings.TrimSuffix(name, ".")
	if len(name) > 253 {
		return false
	}
	for _, l := range strings.Split(name, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// Label makes s a valid RFC 1123 DNS label: lower case, characters outside
// [a-z0-9-] become "-", leading and trailing dashes are dropped, and the
// result is cut to 63 characters.
func Label(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z':
			out = append(out, c+'a'-'A')
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-':
			out = append(out, c)
		default:
			out = append(out, '-')
		}
	}
	for len(out) > 63 {
		out = out[:63]
	}
	return strings.Trim(string(out), "-")
}
