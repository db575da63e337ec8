package discovery

import "time"

// CheckProtocol is how an active health check probes a backend.
type CheckProtocol uint8

// Check protocols.
const (
	// CheckTCP connects and closes: the backend is alive if it accepts.
	CheckTCP CheckProtocol = iota
	// CheckHTTP sends GET Path and wants a 2xx or 3xx status, as
	// Marathon's HTTP check does.
	CheckHTTP
	// CheckHTTPS is CheckHTTP over TLS, without verifying the certificate
	// (Marathon does not verify it either).
	CheckHTTPS
)

func (p CheckProtocol) String() string {
	switch p {
	case CheckHTTP:
		return "HTTP"
	case CheckHTTPS:
		return "HTTPS"
	}
	return "TCP"
}

// HealthCheck describes the active check of a service's backends. Sources
// fill it in; package health runs it. It is immutable once published.
type HealthCheck struct {
	Protocol CheckProtocol
	// Path is the HTTP(S) request path; "" means "/".
	Path string
	// Interval between two probes of one backend; 0 means the checker's
	// default (lb --health-interval).
	Interval time.Duration
	// Origin says where the check came from, for operators, e.g. "marathon
	// HTTP check" or "label PACER_0_HEALTHCHECK_PATH".
	Origin string
}
