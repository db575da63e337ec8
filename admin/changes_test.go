package admin

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pacer-lb/pacer/discovery"
)

// An operator hears, once each, of what needs them: a port claimed by two
// apps, a service whose health checks fail on most backends (all kept in
// rotation), a service left with no routable backend; and of each one
// ending. Table changes that change none of these log nothing.
func TestAlarmsLogOncePerChangeOfState(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.InfoLevel)
	table := discovery.NewTable()
	s, err := New(Deps{Table: table}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.FollowChanges(ctx)

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
