package health

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/discovery"
)

// target is one backend address and everything known about its health. The
// atomics are Report's; the rest is guarded by mu.
type target struct {
	addr netip.AddrPort
	// Consecutive passive failures: gateway (connect, reset) and 5xx.
	gateway atomic.Int32
	server  atomic.Int32

	mu sync.Mutex
	// refs are the services routing to addr, with their checks (nil for
	// none); check is the one the prober runs, chosen from refs.
	refs   map[discovery.ServiceKey]*discovery.HealthCheck
	check  *discovery.HealthCheck
	cancel context.CancelFunc // stops the prober; nil when there is none

	// Active state: up until Fall probes in a row fail.
	activeDown   bool
	okRun        int
	failRun      int
	activeReason string
	lastProbe    time.Time

	// Passive state: ejected while now < ejectedUntil.
	ejectedUntil  time.Time
	ejectedBy     Outcome
	ejections     int // in the current series; the next lasts EjectionTime << ejections
	totalEjected  uint64
	lastEjectEnd  time.Time
	passiveReason string

	// The verdict.
	healthy bool
	reason  string
	since   time.Time
}

func newTarget(addr netip.AddrPort, now time.Time) *target {
	return &target{addr: addr, refs: map[discovery.ServiceKey]*discovery.HealthCheck{}, healthy: true, since: now}
}

// eject starts a passive ejection of t after n consecutive outcomes of kind o.
func (c *Checker) eject(t *target, o Outcome, n int) {
	now := time.Now()
	t.mu.Lock()
	if now.Before(t.ejectedUntil) {
		// Already out; the run that reached the limit starts again, or
		// it would count on past the limit, which Report compares with
		// ==, and the backend would never be ejected again.
		t.gateway.Store(0)
		t.server.Store(0)
		t.mu.Unlock()
		return
	}
	if !t.lastEjectEnd.IsZero() && now.Sub(t.lastEjectEnd) > c.cfg.MaxEjectionTime {
		t.ejections = 0 // a quiet spell: start the series again
	}
	d := min(c.cfg.EjectionTime<<min(t.ejections, 20), c.cfg.MaxEjectionTime)
	t.ejections++
	t.totalEjected++
	t.ejectedUntil = now.Add(d)
	t.ejectedBy = o
	t.okRun = 0 // an active un-eject needs Rise passes after this
	t.passiveReason = fmt.Sprintf("passive: %d consecutive %s; out for %v", n, o, d)
	t.gateway.Store(0)
	t.server.Store(0)
	changed := c.verdictLocked(t, now)
	t.mu.Unlock()
	c.stats.ejections.Add(1)
	if changed {
		c.wake()
	}
}

// record applies one active probe result to t, unless the prober that made
// it was stopped (ctx done), or pacer's own shortage made it fail
// (LocalShortage); it reports false when the prober was stopped. The
// check is made under t.mu, which startProber holds to install a new check
// after cancelling the old prober: a result of the old check that arrives
// after the switch must not count toward the new check's fall count.
func (c *Checker) record(ctx context.Context, t *target, check *discovery.HealthCheck, err error) bool {
	now := time.Now()
	if err != nil && LocalShortage(err) {
		// pacer could not make the probe (no descriptor, no port): it
		// says nothing about the backend, either way. Not applied, but
		// the prober goes on unless it was stopped.
		c.stats.probesFailed.Add(1)
		return ctx.Err() == nil
	}
	t.mu.Lock()
	if ctx.Err() != nil {
		t.mu.Unlock()
		return false
	}
	t.lastProbe = now
	if err == nil {
		t.okRun++
		t.failRun = 0
		if t.activeDown && t.okRun >= c.cfg.Rise {
			t.activeDown = false
			t.activeReason = ""
		}
		// A passing check refutes a connect/reset ejection (the backend
		// accepts and answers now), not a 5xx one: /health may pass while
		// real requests fail.
		if now.Before(t.ejectedUntil) && t.ejectedBy != ServerError && t.okRun >= c.cfg.Rise {
			t.ejectedUntil = now
		}
	} else {
		t.failRun++
		t.okRun = 0
		if t.failRun >= c.cfg.Fall {
			// The reason stays the same from one failed probe to the next
			// (no count in it): a new reason rebuilds the table.
			if !t.activeDown || t.activeReason == "" {
				t.activeReason = fmt.Sprintf("active: %s check failed %d times in a row: %s", check.Protocol, t.failRun, shortError(err))
			}
			t.activeDown = true
		}
	}
	changed := c.verdictLocked(t, now)
	t.mu.Unlock()
	if err == nil {
		c.stats.probesOK.Add(1)
	} else {
		c.stats.probesFailed.Add(1)
	}
	if changed {
		c.wake()
	}
	return true
}

// maxReasonError bounds the probe error quoted in a verdict's reason. The
// error may quote what the backend sent (a status line, or the first line
// of an answer that is not HTTP), as long as the HTTP client's 10 MB limit
// on response headers, and the reason is logged, published in the table
// and served on every /v1/services request.
const maxReasonError = 256

// shortError is err's text cut to maxReasonError bytes on a rune boundary.
func shortError(err error) string {
	s := err.Error()
	if len(s) <= maxReasonError {
		return s
	}
	cut := maxReasonError
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// verdictLocked recomputes t's verdict at now and reports whether it
// changed. Called with t.mu held.
func (c *Checker) verdictLocked(t *target, now time.Time) bool {
	if !t.ejectedUntil.IsZero() && !now.Before(t.ejectedUntil) {
		t.ejectedUntil = time.Time{}
		t.lastEjectEnd = now
		t.passiveReason = ""
	}
	healthy, reason := true, ""
	switch {
	case t.activeDown:
		healthy, reason = false, t.activeReason
	case !t.ejectedUntil.IsZero():
		healthy, reason = false, t.passiveReason
	}
	if healthy == t.healthy && reason == t.reason {
		return false
	}
	if healthy != t.healthy {
		t.since = now
		// Out of rotation unless most of a service's backends are (the
		// panic threshold keeps them all in; that is logged per service).
		if healthy {
			c.log.Info("backend back in rotation", zap.Stringer(keyBackend, t.addr), zap.Strings("services", t.serviceNames()))
		} else {
			c.log.Info("backend out of rotation", zap.Stringer(keyBackend, t.addr), zap.Strings("services", t.serviceNames()), zap.String("reason", reason))
		}
	}
	t.healthy, t.reason = healthy, reason
	return true
}

// serviceNames names the services routing to t ("/shop/web#0"), sorted, for
// logs. Called with t.mu held.
func (t *target) serviceNames() []string {
	names := make([]string, 0, len(t.refs))
	for k := range t.refs {
		names = append(names, k.App+"#"+strconv.Itoa(k.PortIndex))
	}
	slices.Sort(names)
	return names
}

// probeLoop probes t with check every interval until ctx is done. The first
// probe comes after a random share of the interval, and each start moves by
// up to ±10%, so the probes of many backends spread out.
func (c *Checker) probeLoop(ctx context.Context, t *target, check *discovery.HealthCheck) {
	defer c.wg.Done()
	interval := c.cfg.Interval
	if check.Interval > 0 {
		interval = check.Interval
	}
	timeout := min(c.cfg.Timeout, interval)
	timer := time.NewTimer(c.jitter(interval, 1))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		start := time.Now()
		err := c.cfg.Prober.Probe(ctx, t.addr, check, timeout)
		if !c.record(ctx, t, check, err) {
			return // stopped mid-probe: the result is about a check no longer run
		}
		timer.Reset(max(c.jitter(interval, jitter)-time.Since(start), 0))
	}
}
