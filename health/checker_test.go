package health

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pacer-lb/pacer/discovery"
)

// fakeProber fails the addresses in down and counts probes per address.
type fakeProber struct {
	mu     sync.Mutex
	down   map[netip.AddrPort]bool
	probes map[netip.AddrPort]int
	probed chan netip.AddrPort // if set, told of every probe (never blocks)
}

func (f *fakeProber) Probe(_ context.Context, addr netip.AddrPort, _ *discovery.HealthCheck, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.probes[addr]++
	if f.probed != nil {
		select {
		case f.probed <- addr:
		default:
		}
	}
	if f.down[addr] {
		return errors.New("connection refused")
	}
	return nil
}

func (f *fakeProber) set(addr netip.AddrPort, down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down[addr] = down
}

func (f *fakeProber) count(addr netip.AddrPort) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.probes[addr]
}

func addr(i int) netip.AddrPort { return netip.MustParseAddrPort(fmt.Sprintf("10.0.0.%d:31000", i)) }

// app returns an app whose one service routes to n backends 10.0.0.1..n.
func app(id string, n int, check *discovery.HealthCheck) *discovery.App {
	s := &discovery.Service{Key: discovery.ServiceKey{App: id}, ServicePort: 10000, Check: check}
	for i := 1; i <= n; i++ {
		s.Backends = append(s.Backends, discovery.Backend{TaskID: fmt.Sprintf("t%d", i), Addr: addr(i)})
	}
	return &discovery.App{ID: id, Services: []*discovery.Service{s}}
}

// harness runs a Checker on a table and lets a test wait for the table to
// show (or stop showing) a backend.
type harness struct {
	t     *testing.T
	table *discovery.Table
	c     *Checker
}

func start(t *testing.T, cfg Config, apps ...*discovery.App) *harness {
	t.Helper()
	table := discovery.NewTable()
	table.Apply(discovery.Update{Source: "test", Full: true, Apps: apps})
	c, err := New(cfg, table, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	h := &harness{t: t, table: table, c: c}
	// Run has synced once the index knows every backend.
	h.waitFor("the checker to know every backend", func(*discovery.Snapshot) bool {
		return len(*c.index.Load()) == countBackends(apps)
	})
	return h
}

func countBackends(apps []*discovery.App) int {
	seen := map[netip.AddrPort]bool{}
	for _, a := range apps {
		for _, s := range a.Services {
			for _, b := range s.Backends {
				seen[b.Addr] = true
			}
		}
	}
	return len(seen)
}

// waitFor waits, on snapshot changes and otherwise every few milliseconds
// (the index is not a snapshot), until cond holds; 10s is the failure
// bound, far above any expected time.
func (h *harness) waitFor(what string, cond func(*discovery.Snapshot) bool) time.Duration {
	h.t.Helper()
	start := time.Now()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		snap := h.table.Snapshot()
		if cond(snap) {
			return time.Since(start)
		}
		tick := time.NewTimer(5 * time.Millisecond)
		select {
		case <-snap.Changed():
		case <-tick.C:
		case <-deadline.C:
			h.t.Fatalf("after 10s: %s", what)
		}
		tick.Stop()
	}
}

func routes(snap *discovery.Snapshot, app string, a netip.AddrPort) bool {
	for _, s := range snap.App(app).Services {
		for _, b := range s.Backends {
			if b.Addr == a {
				return true
			}
		}
	}
	return false
}

func TestPassiveEjectionAndReturn(t *testing.T) {
	t.Parallel()
	h := start(t, Config{Prober: &fakeProber{}, EjectionTime: 100 * time.Millisecond, GatewayFailures: 3}, app("/a", 4, nil))
	// Two failures and a success: the run is broken, nothing happens.
	h.c.Report(addr(1), ConnectFailed)
	h.c.Report(addr(1), Reset)
	h.c.Report(addr(1), Success)
	h.c.Report(addr(1), ConnectFailed)
	h.c.Report(addr(1), ConnectFailed)
	if v, _ := h.c.Verdict(addr(1)); !v.Healthy {
		t.Fatalf("ejected after a broken run: %+v", v)
	}
	h.c.Report(addr(1), Reset)
	h.waitFor("the third failure in a row to eject 10.0.0.1", func(s *discovery.Snapshot) bool { return !routes(s, "/a", addr(1)) })
	v, _ := h.c.Verdict(addr(1))
	if v.Healthy || v.Reason == "" || v.EjectedUntil.IsZero() || v.Ejections != 1 {
		t.Fatalf("verdict while ejected: %+v", v)
	}
	if why, ok := h.table.Snapshot().Ejected(addr(1)); !ok || why != v.Reason {
		t.Fatalf("table overlay says %q %v, verdict %q", why, ok, v.Reason)
	}
	// The raw view keeps the ejected backend, so the checker keeps it.
	if n := len(h.table.Snapshot().RawApps()[0].Services[0].Backends); n != 4 {
		t.Fatalf("raw backends: %d, want 4", n)
	}
	h.waitFor("the ejection to end", func(s *discovery.Snapshot) bool { return routes(s, "/a", addr(1)) })

	// A second ejection lasts twice as long. Report ejects before it
	// returns, at a time between before and after: the end is exactly
	// 200ms past that, however slowly the test runs.
	before := time.Now()
	for range 3 {
		h.c.Report(addr(1), ConnectFailed)
	}
	after := time.Now()
	v, _ = h.c.Verdict(addr(1))
	lo, hi := before.Add(200*time.Millisecond), after.Add(200*time.Millisecond)
	if v.EjectedUntil.Before(lo) || v.EjectedUntil.After(hi) {
		t.Fatalf("second ejection ends %v after the reports began (verdict %+v), want 200ms (within the %v the reports took)",
			v.EjectedUntil.Sub(before), v, after.Sub(before))
	}
	h.waitFor("the second ejection", func(s *discovery.Snapshot) bool { return !routes(s, "/a", addr(1)) })
}

// A backend that keeps failing while it is out (the panic rule keeps it
// in rotation, or requests chose it before it went out) is ejected again
// once its ejection ended and it fails as many times again. Its failures
// during the ejection must not count on past the limit, where the run
// would never equal it again.
func TestFailuresWhileEjectedDoNotDisarmEjection(t *testing.T) {
	t.Parallel()
	h := start(t, Config{Prober: &fakeProber{}, EjectionTime: 100 * time.Millisecond, GatewayFailures: 3, ServerErrors: 3}, app("/a", 4, nil))
	for _, o := range []Outcome{ConnectFailed, ServerError} {
		for range 3 {
			h.c.Report(addr(1), o)
		}
		h.waitFor(fmt.Sprintf("%v to eject 10.0.0.1", o), func(s *discovery.Snapshot) bool { return !routes(s, "/a", addr(1)) })
		for range 10 { // reported while out
			h.c.Report(addr(1), o)
		}
		h.waitFor("the ejection to end", func(s *discovery.Snapshot) bool { return routes(s, "/a", addr(1)) })
		for range 3 {
			h.c.Report(addr(1), o)
		}
		h.waitFor(fmt.Sprintf("%v after the ejection to eject 10.0.0.1 again", o), func(s *discovery.Snapshot) bool { return !routes(s, "/a", addr(1)) })
		h.waitFor("the second ejection to end", func(s *discovery.Snapshot) bool { return routes(s, "/a", addr(1)) })
	}
}

func TestServerErrorsEject(t *testing.T) {
	t.Parallel()
	h := start(t, Config{Prober: &fakeProber{}, ServerErrors: 5}, app("/a", 4, nil))
	for range 4 {
		h.c.Report(addr(2), ServerError)
	}
	h.c.Report(addr(2), Success)
	for range 4 {
		h.c.Report(addr(2), ServerError)
	}
	if v, _ := h.c.Verdict(addr(2)); !v.Healthy {
		t.Fatalf("ejected after broken runs of 5xx: %+v", v)
	}
	h.c.Report(addr(2), ServerError)
	h.waitFor("five 5xx in a row to eject", func(s *discovery.Snapshot) bool { return !routes(s, "/a", addr(2)) })
}

func TestActiveCheckFallAndRise(t *testing.T) {
	t.Parallel()
	fp := &fakeProber{down: map[netip.AddrPort]bool{}, probes: map[netip.AddrPort]int{}}
	check := &discovery.HealthCheck{Protocol: discovery.CheckHTTP, Path: "/health", Origin: "test"}
	h := start(t, Config{Prober: fp, Interval: 20 * time.Millisecond, Fall: 2, Rise: 2}, app("/a", 3, check))
	fp.set(addr(3), true)
	took := h.waitFor("the failing check to take 10.0.0.3 out", func(s *discovery.Snapshot) bool { return !routes(s, "/a", addr(3)) })
	t.Logf("out after %v (interval 20ms, fall 2)", took)
	v, _ := h.c.Verdict(addr(3))
	if v.Active != "down" || v.Check != "HTTP /health (test)" || v.Reason == "" {
		t.Fatalf("verdict: %+v", v)
	}
	fp.set(addr(3), false)
	h.waitFor("the passing check to bring 10.0.0.3 back", func(s *discovery.Snapshot) bool { return routes(s, "/a", addr(3)) })
	if v, _ := h.c.Verdict(addr(3)); !v.Healthy || v.Active != "up" {
		t.Fatalf("verdict after rise: %+v", v)
	}
}

// A gateway ejection ends as soon as the active check passes Rise times.
func TestActiveCheckEndsGatewayEjection(t *testing.T) {
	t.Parallel()
	fp := &fakeProber{down: map[netip.AddrPort]bool{}, probes: map[netip.AddrPort]int{}}
	check := &discovery.HealthCheck{Protocol: discovery.CheckTCP}
	h := start(t, Config{Prober: fp, Interval: 20 * time.Millisecond, EjectionTime: time.Hour, MaxEjectionTime: time.Hour}, app("/a", 3, check))
	for range DefaultGatewayFailures {
		h.c.Report(addr(1), ConnectFailed)
	}
	h.waitFor("the ejection", func(s *discovery.Snapshot) bool { return !routes(s, "/a", addr(1)) })
	h.waitFor("the passing check to end it", func(s *discovery.Snapshot) bool { return routes(s, "/a", addr(1)) })
}

// One prober per address, however many services route to it.
func TestOneProberPerAddress(t *testing.T) {
	t.Parallel()
	fp := &fakeProber{down: map[netip.AddrPort]bool{}, probes: map[netip.AddrPort]int{}, probed: make(chan netip.AddrPort, 1)}
	check := &discovery.HealthCheck{Protocol: discovery.CheckTCP, Interval: 50 * time.Millisecond}
	a, b := app("/a", 1, check), app("/b", 1, check)
	b.Services = append(b.Services, &discovery.Service{Key: discovery.ServiceKey{App: "/b", PortIndex: 1}, Check: check,
		Backends: []discovery.Backend{{TaskID: "x", Addr: addr(1)}}})
	h := start(t, Config{Prober: fp}, a, b)
	for fp.count(addr(1)) < 10 {
		<-fp.probed
	}
	begin := time.Now()
	for fp.count(addr(1)) < 20 {
		<-fp.probed
	}
	took := time.Since(begin)
	// Three services, one prober: 10 probes take about 10 intervals (500ms);
	// three probers would take a third of that.
	if took < 300*time.Millisecond {
		t.Fatalf("10 probes of one address took %v with a 50ms interval: more than one prober", took)
	}
	if vs := h.c.Verdicts(); len(vs) != 1 {
		t.Fatalf("verdicts: %+v, want one", vs)
	}
}

// Removing the last service of a backend stops its prober and forgets it.
func TestRemovedBackendIsForgotten(t *testing.T) {
	t.Parallel()
	fp := &fakeProber{down: map[netip.AddrPort]bool{}, probes: map[netip.AddrPort]int{}}
	check := &discovery.HealthCheck{Protocol: discovery.CheckTCP, Interval: 10 * time.Millisecond}
	h := start(t, Config{Prober: fp}, app("/a", 2, check))
	h.table.Apply(discovery.Update{Source: "test", Apps: []*discovery.App{app("/a", 1, check)}})
	h.waitFor("10.0.0.2 forgotten", func(*discovery.Snapshot) bool {
		_, ok := h.c.Verdict(addr(2))
		return !ok
	})
	n := fp.count(addr(2))
	// The prober may be mid-probe when stopped; after that, silence. Wait
	// for ten probes of the remaining backend to be sure.
	m := fp.count(addr(1))
	h.waitFor("more probes of 10.0.0.1", func(*discovery.Snapshot) bool { return fp.count(addr(1)) >= m+10 })
	if got := fp.count(addr(2)); got > n+1 {
		t.Fatalf("10.0.0.2 probed %d more times after it left", got-n)
	}
	h.c.Report(addr(2), ConnectFailed) // an unknown address: dropped, no panic
}

// Report's success path allocates nothing (it runs once per request).
func TestReportSuccessDoesNotAllocate(t *testing.T) {
	h := start(t, Config{Prober: &fakeProber{}}, app("/a", 4, nil))
	a := addr(2)
	if n := testing.AllocsPerRun(1000, func() { h.c.Report(a, Success) }); n != 0 {
		t.Fatalf("Report(Success): %v allocs per call, want 0", n)
	}
}

func BenchmarkReportSuccess(b *testing.B) {
	table := discovery.NewTable()
	table.Apply(discovery.Update{Source: "test", Full: true, Apps: []*discovery.App{app("/a", 4, nil)}})
	c, err := New(Config{Prober: &fakeProber{}}, table, nil)
	if err != nil {
		b.Fatal(err)
	}
	c.sync(table.Snapshot())
	a := addr(3)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Report(a, Success)
		}
	})
}
