package admin

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pacer-lb/pacer/discovery"
)

// following runs FollowChanges on a new table until the test ends, with
// grace for an empty service, and records its logs at info and above.
func following(t *testing.T, grace time.Duration) (*Server, *discovery.Table, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.InfoLevel)
	table := discovery.NewTable()
	s, err := New(Deps{Table: table}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	s.emptyGrace = grace
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go s.FollowChanges(ctx)
	return s, table, logs
}

// An operator hears, once each, of what needs them: a port claimed by two
// apps, a service whose health checks fail on most backends (all kept in
// rotation), a service left with no routable backend; and of each one
// ending. Table changes that change none of these log nothing.
func TestAlarmsLogOncePerChangeOfState(t *testing.T) {
	t.Parallel()
	s, table, logs := following(t, 10*time.Millisecond)

	b1, b2 := netip.MustParseAddrPort("10.0.0.1:31000"), netip.MustParseAddrPort("10.0.0.2:31000")
	b3 := netip.MustParseAddrPort("10.0.0.3:31000")
	app := func(id string, port int, backends ...netip.AddrPort) *discovery.App {
		svc := &discovery.Service{Key: discovery.ServiceKey{App: id}, Name: discovery.AppName(id), ServicePort: port}
		for i, b := range backends {
			svc.Backends = append(svc.Backends, discovery.Backend{TaskID: id + "." + string(rune('a'+i)), Addr: b})
		}
		return &discovery.App{ID: id, Services: []*discovery.Service{svc}}
	}
	// seen waits until msg has been logged want times in all.
	seen := func(msg string, want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := logs.FilterMessageSnippet(msg).Len()
			if n == want {
				return
			}
			if n > want || time.Now().After(deadline) {
				t.Fatalf("%q logged %d times, want %d; logs:\n%v", msg, n, want, logs.All())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	apply := func(apps ...*discovery.App) {
		table.Apply(discovery.Update{Source: "marathon", Apps: apps})
	}

	apply(app("/web", 8000, b1, b2))
	apply(app("/aaa", 8000, b1)) // takes /web's port: the lowest id wins
	seen("claimed by several apps", 1)
	if e := logs.FilterMessageSnippet("claimed by several apps").All()[0]; !strings.Contains(e.ContextMap()["winner"].(string), "/aaa") {
		t.Errorf("conflict logged with winner %v, want /aaa", e.ContextMap()["winner"])
	}
	apply(app("/other", 8001, b3)) // unrelated: nothing new
	table.Apply(discovery.Update{Source: "marathon", Removed: []string{"/aaa"}})
	seen("no longer contested", 1)

	table.SetEjected(map[netip.AddrPort]string{b1: "refused", b2: "refused"})
	seen("all kept in rotation (panic threshold)", 1)
	if _, body := get(t, s.Handler(), "/v1/services"); !strings.Contains(body, `"panic": true`) || !strings.Contains(body, "2 of 2 backends fail") {
		t.Errorf("/v1/services in panic mode lacks the flag and note:\n%s", body)
	}
	apply(app("/other", 8002, b3)) // another change, /web still in panic: nothing new
	table.SetEjected(nil)
	seen("out of panic mode", 1)

	apply(app("/web", 8000))
	seen("service has no routable backend", 1)
	apply(app("/web", 8000, b2))
	seen("service has routable backends again", 1)

	// Nothing was logged twice along the way.
	seen("claimed by several apps", 1)
	seen("all kept in rotation (panic threshold)", 1)
	seen("service has no routable backend", 1)
}

// A service left without a routable backend for a moment (its one task
// replaced; the demo's task that serves one connection and exits) is not
// warned of, nor is its return: only an absence that lasts the grace is.
// An app deleted, whose tasks are killed first, warns of nothing either.
func TestAlarmsQuietForAMomentWithoutBackend(t *testing.T) {
	t.Parallel()
	s, table, logs := following(t, time.Hour) // longer than the test: every gap here is a moment
	// FollowChanges follows from the snapshot it starts on: a change made
	// before it looked would go unseen. Poke the table until one is seen.
	for i := 0; len(s.changes.list()) == 0; i++ {
		if i == 1000 {
			t.Fatal("FollowChanges saw no change")
		}
		table.Apply(discovery.Update{Source: "marathon", Apps: []*discovery.App{{ID: "/probe" + strconv.Itoa(i)}}})
		time.Sleep(5 * time.Millisecond)
	}
	with := func(backends ...netip.AddrPort) *discovery.App {
		svc := &discovery.Service{Key: discovery.ServiceKey{App: "/nc"}, Name: "nc", ServicePort: 8000}
		for i, b := range backends {
			svc.Backends = append(svc.Backends, discovery.Backend{TaskID: "nc." + strconv.Itoa(i), Addr: b})
		}
		return &discovery.App{ID: "/nc", Services: []*discovery.Service{svc}}
	}
	// step applies u and waits until FollowChanges has seen it: it reads
	// the newest snapshot, and would skip states applied faster.
	step := func(u discovery.Update) {
		t.Helper()
		table.Apply(u)
		v := table.Snapshot().Version()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			if cs := s.changes.list(); len(cs) > 0 && cs[0].Version == v {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("FollowChanges did not see version %d: %+v", v, s.changes.list())
			}
		}
	}
	for i := range 5 { // each task answers once and is replaced
		step(discovery.Update{Source: "marathon", Apps: []*discovery.App{with(netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(31000+i)))}})
		step(discovery.Update{Source: "marathon", Apps: []*discovery.App{with()}})
	}
	step(discovery.Update{Source: "marathon", Removed: []string{"/nc"}})
	for _, e := range logs.All() {
		if strings.Contains(e.Message, "routable backend") {
			t.Errorf("logged %q (%s) for a moment without a backend", e.Message, e.Level)
		}
	}
}
