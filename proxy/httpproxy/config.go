package httpproxy

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/health"
	"github.com/pacer-lb/pacer/proxy"
)

// Defaults used for the zero value of the matching Config field.
const (
	DefaultDialTimeout           = time.Second
	DefaultResponseHeaderTimeout = 30 * time.Second
	DefaultBodyTimeout           = 60 * time.Second
	// DefaultPoolIdleTimeout is below every common backend keep-alive
	// (gunicorn 2s, Node.js and Apache 5s, nginx 75s), so pacer closes an
	// idle pooled connection before the backend does and never writes a
	// request into a socket the backend is closing (valyala/fasthttp#1063).
	DefaultPoolIdleTimeout   = 1500 * time.Millisecond
	DefaultMaxIdlePerBackend = 512
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultClientIdleTimeout = 60 * time.Second
	DefaultTunnelIdleTimeout = time.Hour // as the TCP plane's --idle-timeout
	DefaultMaxHeaderBytes    = 8 << 10
	DefaultMaxConns          = 10000
	DefaultRetryAfter        = time.Second
	DefaultDrainTimeout      = 30 * time.Second
	DefaultStickyCookie      = "mesosphere_server_id" // marathon-lb's cookie name
)

// Config configures the HTTP data plane. The zero value of each field means
// the documented default; New copies the config. The timeouts below are
// socket deadlines, which fastconn arms lazily: each ends a wait up to 1/16
// of its length late (ResponseHeaderTimeout more, as it says), never early.
type Config struct {
	// Bind is the address the service-port listeners bind; "" means
	// "0.0.0.0". It must be an IP literal. The --http listener is the
	// caller's: it passes it to ServeVHost.
	Bind string
	// PortMin and PortMax bound the service ports Run binds, as for
	// proxy.TCPConfig. Required.
	PortMin, PortMax int

	// DialTimeout bounds one connect to a backend; 0 means 1s. A connect
	// that times out is answered 504 once no other backend is left to try.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait from the end of the request to
	// the response header (504 when it passes); 0 means 30s. The bound is
	// kept in coarse steps, so the 504 comes between this and about a
	// fifth more (an eighth, and the deadline's sixteenth) after the
	// request was sent.
	ResponseHeaderTimeout time.Duration
	// BodyTimeout is the longest silence while a body streams, in either
	// direction, and the write timeout towards clients; 0 means 60s.
	BodyTimeout time.Duration
	// PoolIdleTimeout closes a pooled backend connection idle this long;
	// 0 means 1.5s. Keep it below the backends' keep-alive timeout.
	PoolIdleTimeout time.Duration
	// MaxIdlePerBackend caps the idle connections kept per backend; 0 means 512.
	MaxIdlePerBackend int

	// ReadHeaderTimeout bounds reading a request's header from a client
	// (slowloris); 0 means 10s. The client gets 408 when it passes.
	ReadHeaderTimeout time.Duration
	// ClientIdleTimeout closes a client keep-alive connection idle this long
	// between requests; 0 means 60s.
	ClientIdleTimeout time.Duration
	// TunnelIdleTimeout closes an upgraded connection (a WebSocket) idle in
	// both directions this long: a client that vanished without a FIN
	// would otherwise hold it, and its backend connection, for good. 0
	// means 1h.
	TunnelIdleTimeout time.Duration
	// MaxHeaderBytes caps a request's header (request line included); a
	// larger one gets 431. 0 means 8 KiB. It is also the per-connection
	// read buffer.
	MaxHeaderBytes int
	// MaxRequestBodySize caps request bodies: a larger Content-Length gets
	// 413 before anything is sent to a backend, and a chunked body that
	// grows past it is cut off. 0 means no limit (bodies stream; memory
	// stays bounded either way).
	MaxRequestBodySize int64
	// MaxConns caps the client connections open across every HTTP listener
	// at once; 0 means 10000. At the cap pacer stops accepting (the kernel
	// backlog holds new connections) until one closes. Ignored if
	// ConnLimit is set.
	MaxConns int
	// ConnLimit, if set, is the cap this plane shares with others: pacer
	// gives the TCP plane (proxy.TCPConfig.ConnLimit) the same one, built
	// from --max-conns, as HAProxy's global maxconn, so that clients of
	// either plane cannot take the descriptors the cap leaves the other
	// and the rest of the process. If nil, the plane has a cap of its own
	// of MaxConns.
	ConnLimit *proxy.ConnLimit

	// RetryAfter is the Retry-After of a 503 for a service without a
	// routable backend; 0 means 1s (rounded up to whole seconds).
	RetryAfter time.Duration
	// DrainTimeout bounds in-flight requests on a service port that is
	// closed because no app claims it any more; 0 means 30s.
	DrainTimeout time.Duration
	// TrustForwardedProto keeps a client's X-Forwarded-Proto (set by a TLS
	// terminator in front of pacer) instead of overwriting it with "http",
	// and REDIRECT_TO_HTTPS then redirects only requests whose
	// X-Forwarded-Proto is not "https"; the X-Real-IP and Forwarded
	// headers of the client (that proxy) are then kept too, and so is
	// the X-Forwarded-Port that goes with its X-Forwarded-Proto (none if
	// it sent none: pacer's own port is not the one its client reached). Off by
	// default: clients can forge them, so a client's X-Real-IP and
	// Forwarded are removed, and its X-Forwarded-Proto overwritten.
	TrustForwardedProto bool
	// StickyCookie names the cookie of STICKY services; "" means
	// "mesosphere_server_id", marathon-lb's name.
	StickyCookie string

	// Report, if set, is told the outcome of every attempt on a backend, for
	// passive health checking (health.Checker.Report): connect failures,
	// connections that broke before a response, 5xx answers and successes.
	// It is called on request goroutines, must not block, and should not
	// allocate. If nil, outcomes are not reported.
	Report func(addr netip.AddrPort, o health.Outcome)

	// OwnListeners names the process's other listeners by port (DNS,
	// admin, the TCP plane's are not among them), so that a service port
	// one of them holds says so when it cannot bind (proxy.OwnListeners).
	OwnListeners proxy.OwnListeners

	// Handoff, if set, is shared with the TCP plane: a port whose service
	// changes mode passes its listening socket from one plane to the other
	// through it, never closed meanwhile (proxy.Handoff).
	Handoff *proxy.Handoff

	// OnListening, if set, is called after a service-port listener opened,
	// on the Run goroutine. Tests use it instead of sleeping.
	OnListening func(port int, addr net.Addr)
	// Carries, if set, decides which services this proxy carries on their
	// service ports and on the vhost listener. If nil: HTTP-mode services of
	// protocol tcp, the complement of proxy.TCPConfig's default.
	Carries func(*discovery.Service) bool
}

// withDefaults validates cfg and fills in its defaults.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.PortMin < 1 || cfg.PortMax > 65535 || cfg.PortMin > cfg.PortMax {
		return cfg, fmt.Errorf("http proxy: port range %d-%d: want 1 <= min <= max <= 65535", cfg.PortMin, cfg.PortMax)
	}
	if cfg.Bind == "" {
		cfg.Bind = "0.0.0.0"
	}
	if _, err := netip.ParseAddr(cfg.Bind); err != nil {
		return cfg, fmt.Errorf("http proxy: bind address %q: want an IP address", cfg.Bind)
	}
	for _, d := range []time.Duration{cfg.DialTimeout, cfg.ResponseHeaderTimeout, cfg.BodyTimeout, cfg.PoolIdleTimeout,
		cfg.ReadHeaderTimeout, cfg.ClientIdleTimeout, cfg.TunnelIdleTimeout, cfg.RetryAfter, cfg.DrainTimeout} {
		if d < 0 {
			return cfg, errors.New("http proxy: timeouts must not be negative")
		}
	}
	if cfg.MaxIdlePerBackend < 0 || cfg.MaxHeaderBytes < 0 || cfg.MaxRequestBodySize < 0 || cfg.MaxConns < 0 {
		return cfg, errors.New("http proxy: limits must not be negative")
	}
	cfg.DialTimeout = cmp.Or(cfg.DialTimeout, DefaultDialTimeout)
	cfg.ResponseHeaderTimeout = cmp.Or(cfg.ResponseHeaderTimeout, DefaultResponseHeaderTimeout)
	cfg.BodyTimeout = cmp.Or(cfg.BodyTimeout, DefaultBodyTimeout)
	cfg.PoolIdleTimeout = cmp.Or(cfg.PoolIdleTimeout, DefaultPoolIdleTimeout)
	cfg.MaxIdlePerBackend = cmp.Or(cfg.MaxIdlePerBackend, DefaultMaxIdlePerBackend)
	cfg.ReadHeaderTimeout = cmp.Or(cfg.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	cfg.ClientIdleTimeout = cmp.Or(cfg.ClientIdleTimeout, DefaultClientIdleTimeout)
	cfg.TunnelIdleTimeout = cmp.Or(cfg.TunnelIdleTimeout, DefaultTunnelIdleTimeout)
	cfg.MaxHeaderBytes = cmp.Or(cfg.MaxHeaderBytes, DefaultMaxHeaderBytes)
	cfg.MaxConns = cmp.Or(cfg.MaxConns, DefaultMaxConns)
	cfg.RetryAfter = cmp.Or(cfg.RetryAfter, DefaultRetryAfter)
	cfg.DrainTimeout = cmp.Or(cfg.DrainTimeout, DefaultDrainTimeout)
	cfg.StickyCookie = cmp.Or(cfg.StickyCookie, DefaultStickyCookie)
	if cfg.Carries == nil {
		cfg.Carries = carriesHTTP
	}
	return cfg, nil
}

// carriesHTTP is the default Config.Carries.
func carriesHTTP(s *discovery.Service) bool {
	return s.Mode == discovery.ModeHTTP && s.Protocol.HasTCP()
}
