package discovery

import (
	"net/netip"
	"testing"
)

func addrs(s *Service) []string {
	var out []string
	for _, b := range s.Backends {
		out = append(out, b.Addr.String())
	}
	return out
}

func TestOverlayEjectsAndRestores(t *testing.T) {
	tb := NewTable()
	web := &App{ID: "/web", Services: []*Service{svc("/web", 0, 8000, "10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1")}}
	other := &App{ID: "/other", Services: []*Service{svc("/other", 0, 8001, "10.0.0.9:1")}}
	before := tb.Apply(Update{Source: "m", Apps: []*App{web, other}})

	bad := netip.MustParseAddrPort("10.0.0.2:1")
	s := tb.SetEjected(map[netip.AddrPort]string{bad: "3 connect failures"})
	if got := addrs(s.Service(8000)); len(got) != 2 || got[0] != "10.0.0.1:1" || got[1] != "10.0.0.3:1" {
		t.Fatalf("backends with 10.0.0.2 ejected = %v", got)
	}
	if why, ok := s.Ejected(bad); !ok || why != "3 connect failures" {
		t.Fatalf("Ejected = %q, %v", why, ok)
	}
	if s.App("/other") != before.App("/other") {
		t.Fatal("an app the overlay does not touch was rebuilt")
	}
	if len(before.Service(8000).Backends) != 3 {
		t.Fatal("the overlay changed an already published snapshot")
	}
	// A source update keeps the overlay applied.
	s = tb.Apply(Update{Source: "m", Apps: []*App{{ID: "/web", Services: []*Service{svc("/web", 0, 8000, "10.0.0.1:1", "10.0.0.2:1", "10.0.0.4:1")}}}})
	if got := addrs(s.Service(8000)); len(got) != 2 || got[1] != "10.0.0.4:1" {
		t.Fatalf("after a source update = %v, want 10.0.0.2 still out", got)
	}
	s = tb.SetEjected(nil)
	if got := addrs(s.Service(8000)); len(got) != 3 {
		t.Fatalf("after clearing the overlay = %v", got)
	}
}

func TestOverlayPanicThresholdKeepsEveryBackend(t *testing.T) {
	tb := NewTable()
	tb.Apply(Update{Source: "m", Apps: []*App{{ID: "/web", Services: []*Service{svc("/web", 0, 8000, "10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1")}}}})
	s := tb.SetEjected(map[netip.AddrPort]string{
		netip.MustParseAddrPort("10.0.0.1:1"): "down",
		netip.MustParseAddrPort("10.0.0.2:1"): "down",
	})
	if got := addrs(s.Service(8000)); len(got) != 3 {
		t.Fatalf("2 of 3 ejected: backends = %v, want all 3 (panic threshold)", got)
	}
}

func TestOverlayNoChangeNoVersion(t *testing.T) {
	tb := NewTable()
	tb.Apply(Update{Source: "m", Apps: []*App{{ID: "/web", Services: []*Service{svc("/web", 0, 8000, "10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1")}}}})
	// An address no app uses changes nothing a reader can see.
	s0 := tb.Snapshot()
	if s := tb.SetEjected(map[netip.AddrPort]string{netip.MustParseAddrPort("192.0.2.1:1"): "down"}); s != s0 {
		t.Fatalf("overlay on an unknown address published version %d", s.Version())
	}
}
