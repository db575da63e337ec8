package health

import (
	"cmp"
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/pacer-lb/pacer/discovery"
)

// Defaults used for the zero value of the matching Config field. With them a
// backend that dies is out of rotation within about three seconds with no
// traffic (two failed probes one second apart, each bounded by one second),
// and within a few requests under traffic.
const (
	DefaultInterval        = time.Second
	DefaultRise            = 2
	DefaultFall            = 2
	DefaultGatewayFailures = 3
	DefaultServerErrors    = 5
	DefaultEjectionTime    = 5 * time.Second
	DefaultMaxEjectionTime = 2 * time.Minute
	// maxTimeout caps the default probe timeout: a probe that takes longer
	// than a second on a LAN is as good as dead.
	maxTimeout = time.Second
	// jitter is the share of the interval by which each probe's start is
	// moved at random, so probes of many backends spread out.
	jitter = 0.1
)

// Config configures a Checker. The zero value of each field means the
// documented default; New copies it.
type Config struct {
	// Interval between two probes of one backend; 0 means 1s. A service's
	// check may set its own (discovery.HealthCheck.Interval).
	Interval time.Duration
	// Timeout bounds one probe; 0 means the interval, at most 1s.
	Timeout time.Duration
	// Rise is how many probes in a row must pass to bring back a backend
	// the active check took out; 0 means 2.
	Rise int
	// Fall is how many probes in a row must fail to take a backend out;
	// 0 means 2.
	Fall int
	// GatewayFailures is how many consecutive connect failures or resets
	// before a response eject a backend; 0 means 3.
	GatewayFailures int
	// ServerErrors is how many consecutive HTTP 5xx answers eject a
	// backend; 0 means 5.
	ServerErrors int
	// EjectionTime is how long a first passive ejection lasts; each
	// further one doubles it, up to MaxEjectionTime. 0 means 5s.
	EjectionTime time.Duration
	// MaxEjectionTime caps an ejection, and a backend that stayed in
	// rotation this long after its last ejection starts again from
	// EjectionTime. 0 means 2m.
	MaxEjectionTime time.Duration
	// Prober runs the active checks; nil means NetProber (real TCP, HTTP
	// and HTTPS probes with keep-alive).
	Prober Prober
	// OnPublish, if set, is called on the Run goroutine after each change
	// of the ejection set reached the table. Tests use it instead of
	// sleeping.
	OnPublish func(ejected map[netip.AddrPort]string)
}

// Prober runs one active check against one backend. It returns nil if the
// backend passed, else why not.
type Prober interface {
	Probe(ctx context.Context, addr netip.AddrPort, check *discovery.HealthCheck, timeout time.Duration) error
}

// withDefaults validates cfg and fills in its defaults.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Interval < 0 || cfg.Timeout < 0 || cfg.EjectionTime < 0 || cfg.MaxEjectionTime < 0 {
		return cfg, errors.New("health: durations must not be negative")
	}
	if cfg.Rise < 0 || cfg.Fall < 0 || cfg.GatewayFailures < 0 || cfg.ServerErrors < 0 {
		return cfg, errors.New("health: thresholds must not be negative")
	}
	cfg.Interval = cmp.Or(cfg.Interval, DefaultInterval)
	cfg.Timeout = cmp.Or(cfg.Timeout, min(cfg.Interval, maxTimeout))
	cfg.Rise = cmp.Or(cfg.Rise, DefaultRise)
	cfg.Fall = cmp.Or(cfg.Fall, DefaultFall)
	cfg.GatewayFailures = cmp.Or(cfg.GatewayFailures, DefaultGatewayFailures)
	cfg.ServerErrors = cmp.Or(cfg.ServerErrors, DefaultServerErrors)
	cfg.EjectionTime = cmp.Or(cfg.EjectionTime, DefaultEjectionTime)
	cfg.MaxEjectionTime = max(cmp.Or(cfg.MaxEjectionTime, DefaultMaxEjectionTime), cfg.EjectionTime)
	if cfg.Prober == nil {
		cfg.Prober = NewNetProber()
	}
	return cfg, nil
}
