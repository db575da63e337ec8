package discovery

import (
	"net/netip"
	"testing"
)

func svc(app string, idx, port int, backends ...string) *Service {
	s := &Service{Key: ServiceKey{App: app, PortIndex: idx}, Name: AppName(app), ServicePort: port}
	for _, b := range backends {
		s.Backends = append(s.Backends, Backend{TaskID: b, Addr: netip.MustParseAddrPort(b)})
	}
	return s
}

func TestTableApplyPublishesOnlyChanges(t *testing.T) {
	tb := NewTable()
	s0 := tb.Snapshot()
	a := &App{ID: "/web", Services: []*Service{svc("/web", 0, 8000, "127.0.0.1:31000")}}
	s1 := tb.Apply(Update{Source: "marathon", Apps: []*App{a}})
	if s1.Version() != 1 {
		t.Fatalf("version = %d, want 1", s1.Version())
	}
	select {
	case <-s0.Changed():
	default:
		t.Fatal("old snapshot's Changed not closed after a change")
	}
	if got := s1.Service(8000); got == nil || len(got.Backends) != 1 {
		t.Fatalf("Service(8000) = %+v", got)
	}
	// The same app again is a no-op: no new version, readers not woken.
	same := &App{ID: "/web", Services: []*Service{svc("/web", 0, 8000, "127.0.0.1:31000")}}
	if s2 := tb.Apply(Update{Source: "marathon", Apps: []*App{same}}); s2 != s1 {
		t.Fatalf("no-op update published version %d", s2.Version())
	}
	// The old snapshot is untouched by later updates.
	tb.Apply(Update{Source: "marathon", Removed: []string{"/web"}})
	if s1.Service(8000) == nil {
		t.Fatal("published snapshot changed after a later update")
	}
	if tb.Snapshot().Service(8000) != nil {
		t.Fatal("removed app still owns its port")
	}
}

func TestTablePortConflictWinnerIsDeterministic(t *testing.T) {
	tb := NewTable()
	b := &App{ID: "/b", Services: []*Service{svc("/b", 0, 8000)}}
	a := &App{ID: "/a", Services: []*Service{svc("/a", 0, 8000)}}
	tb.Apply(Update{Source: "m", Apps: []*App{b}})
	s := tb.Apply(Update{Source: "m", Apps: []*App{a}})
	if w := s.Service(8000).Key.App; w != "/a" {
		t.Fatalf("winner = %s, want /a", w)
	}
	if c := s.Conflicts(); len(c) != 1 || c[0].Losers[0].App != "/b" {
		t.Fatalf("conflicts = %+v", c)
	}
	// Re-applying the loser (as a resync does) keeps the same winner.
	s = tb.Apply(Update{Source: "m", Apps: []*App{{ID: "/b", Services: []*Service{svc("/b", 0, 8000, "127.0.0.1:1")}}}})
	if w := s.Service(8000).Key.App; w != "/a" {
		t.Fatalf("winner flapped to %s", w)
	}
}

func TestTableFullUpdateReplacesOnlyItsSource(t *testing.T) {
	tb := NewTable()
	tb.Apply(Update{Source: "zk", Apps: []*App{{ID: "zk:db", Services: []*Service{svc("zk:db", 0, 8100)}}}})
	tb.Apply(Update{Source: "marathon", Apps: []*App{{ID: "/old", Services: []*Service{svc("/old", 0, 8001)}}}})
	s := tb.Apply(Update{Source: "marathon", Full: true, Apps: []*App{{ID: "/new", Services: []*Service{svc("/new", 0, 8002)}}}})
	if s.App("/old") != nil || s.App("/new") == nil || s.App("zk:db") == nil {
		t.Fatalf("apps after full update: %v", s.Apps())
	}
}

func TestAppName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ id, want string }{
		{"/shop/web", "web-shop"},
		{"/marathon-nc", "marathon-nc"},
		{"/A_b/C.d", "c-d-a-b"},
		{"/", ""},
	} {
		if got := AppName(tc.id); got != tc.want {
			t.Errorf("AppName(%q) = %q, want %q", tc.id, got, tc.want)
		}
	}
}
