package health

import (
	"net/netip"
	"slices"
	"time"

	"github.com/pacer-lb/pacer/discovery"
)

// Verdict is pacer's view of one backend address, for /v1/services, metrics
// and the status page.
type Verdict struct {
	Addr netip.AddrPort `json:"addr"`
	// Healthy is false while the backend is out of rotation (unless the
	// table's panic threshold keeps its service whole).
	Healthy bool `json:"healthy"`
	// Reason says why it is out; empty when healthy.
	Reason string `json:"reason,omitempty"`
	// Since is when Healthy last changed (or the backend was first seen).
	Since time.Time `json:"since"`
	// Check describes the active check, e.g. "HTTP /health (marathon HTTP
	// check)"; empty when there is none.
	Check string `json:"check,omitempty"`
	// Active is "up", "down" or "none" (no active check).
	Active string `json:"active"`
	// LastProbe is when the active check last ran.
	LastProbe time.Time `json:"last_probe,omitzero"`
	// EjectedUntil is when the current passive ejection ends; zero if none.
	EjectedUntil time.Time `json:"ejected_until,omitzero"`
	// Ejections counts passive ejections since the backend was first seen.
	Ejections uint64 `json:"ejections"`
}

// Stats are the Checker's counters.
type Stats struct {
	ProbesOK     uint64 `json:"probes_ok"`
	ProbesFailed uint64 `json:"probes_failed"`
	Ejections    uint64 `json:"ejections"`
	Backends     int    `json:"backends"`
	Unhealthy    int    `json:"unhealthy"`
}

// Verdicts returns the verdict on every backend the table lists, sorted by
// address.
func (c *Checker) Verdicts() []Verdict {
	c.mu.Lock()
	ts := make([]*target, 0, len(c.targets))
	for _, t := range c.targets {
		ts = append(ts, t)
	}
	c.mu.Unlock()
	out := make([]Verdict, 0, len(ts))
	for _, t := range ts {
		out = append(out, t.verdict())
	}
	slices.SortFunc(out, func(a, b Verdict) int { return a.Addr.Compare(b.Addr) })
	return out
}

// Verdict returns the verdict on the backend at addr, and false if the
// table lists no such backend.
func (c *Checker) Verdict(addr netip.AddrPort) (Verdict, bool) {
	c.mu.Lock()
	t := c.targets[addr]
	c.mu.Unlock()
	if t == nil {
		return Verdict{}, false
	}
	return t.verdict(), true
}

func (t *target) verdict() Verdict {
	t.mu.Lock()
	defer t.mu.Unlock()
	v := Verdict{
		Addr: t.addr, Healthy: t.healthy, Reason: t.reason, Since: t.since, Active: "none",
		LastProbe: t.lastProbe, EjectedUntil: t.ejectedUntil, Ejections: t.totalEjected,
	}
	if hc := t.check; hc != nil {
		v.Check = hc.Protocol.String()
		if hc.Protocol != discovery.CheckTCP { // HTTP(S): name the path
			p := hc.Path
			if p == "" {
				p = "/"
			}
			v.Check += " " + p
		}
		if hc.Interval > 0 {
			v.Check += " every " + hc.Interval.String()
		}
		if hc.Origin != "" {
			v.Check += " (" + hc.Origin + ")"
		}
		v.Active = "up"
		if t.activeDown {
			v.Active = "down"
		}
	}
	return v
}

// Stats returns the Checker's counters.
func (c *Checker) Stats() Stats {
	st := Stats{
		ProbesOK:     c.stats.probesOK.Load(),
		ProbesFailed: c.stats.probesFailed.Load(),
		Ejections:    c.stats.ejections.Load(),
	}
	for _, v := range c.Verdicts() {
		st.Backends++
		if !v.Healthy {
			st.Unhealthy++
		}
	}
	return st
}
