package health

import "net/netip"

// Outcome is what a proxy saw of one attempt on a backend.
type Outcome uint8

// Outcomes.
const (
	// Success: the backend answered (an HTTP status below 500, or a TCP
	// backend sent bytes).
	Success Outcome = iota
	// ConnectFailed: the connect was refused or timed out.
	ConnectFailed
	// Reset: the connection broke (reset, closed, timed out, garbage)
	// before any response byte.
	Reset
	// ServerError: the backend answered with an HTTP 5xx status.
	ServerError
)

func (o Outcome) String() string {
	switch o {
	case ConnectFailed:
		return "connect failures"
	case Reset:
		return "resets before a response"
	case ServerError:
		return "5xx answers"
	}
	return "success"
}

// Report records the outcome of one attempt on the backend at addr. The
// proxies call it for every attempt; it is safe for concurrent use, and on
// Success it takes no lock and allocates nothing. Outcomes for addresses the
// Checker does not know (yet) are dropped.
func (c *Checker) Report(addr netip.AddrPort, o Outcome) {
	m := c.index.Load()
	if m == nil {
		return
	}
	t := (*m)[addr]
	if t == nil {
		return
	}
	switch o {
	case Success:
		// Load before Store: a healthy backend's counters stay zero, and a
		// read-only cache line is not bounced between cores.
		if t.gateway.Load() != 0 {
			t.gateway.Store(0)
		}
		if t.server.Load() != 0 {
			t.server.Store(0)
		}
	case ServerError:
		if t.gateway.Load() != 0 {
			t.gateway.Store(0) // it answered: the gateway run is broken
		}
		if t.server.Add(1) == int32(c.cfg.ServerErrors) {
			c.eject(t, o, c.cfg.ServerErrors)
		}
	default:
		if t.gateway.Add(1) == int32(c.cfg.GatewayFailures) {
			c.eject(t, o, c.cfg.GatewayFailures)
		}
	}
}
