package discovery

import (
	"net/netip"
	"testing"
)

// dnsView is what the indexes DNS reads say about the label "web": the
// services named so (and whether they are DNS-only), the portless apps so
// named, and who owns service port 8000.
type dnsView struct {
	named, dnsOnly, portless int
	port8000                 string
}

func viewOf(s *Snapshot) dnsView {
	var v dnsView
	for _, svc := range s.ServicesNamed("web") {
		v.named++
		if a := s.App(svc.Key.App); a != nil && len(a.DNSOnly) > 0 && a.DNSOnly[0] == svc {
			v.dnsOnly++
		}
	}
	v.portless = len(s.PortlessAppsNamed("web"))
	if svc := s.Service(8000); svc != nil {
		v.port8000 = svc.Key.App
	}
	return v
}

// An app that turns into one with a Problem (a label typo) and back, and
// between having ports and having none, is indexed for DNS at every step
// exactly as a fresh table would index it: DNS-only services are found by
// name but claim no port, and no index keeps a stale entry.
func TestTableProblemAppsStayInDNS(t *testing.T) {
	t.Parallel()
	routed := func() *App {
		return &App{ID: "/web", Services: []*Service{svc("/web", 0, 8000, "10.0.0.1:31000")}}
	}
	problem := func() *App {
		// A source leaves the service port out; the table must not let a
		// DNS-only service claim one even if it does not.
		d := svc("/web", 0, 8000, "10.0.0.1:31000")
		return &App{ID: "/web", Problem: `label HAPROXY_0_BALANCE="uri"`, DNSOnly: []*Service{d}}
	}
	portlessProblem := func() *App {
		// No ports known (an undecodable app, an unknown network mode): the
		// name stays, with whatever addresses its tasks have.
		return &App{ID: "/web", Problem: "unknown network mode", Tasks: []TaskState{
			{ID: "web.1", State: "TASK_RUNNING", Addr: netip.MustParseAddr("10.0.0.1")},
		}}
	}
	portlessRouted := func() *App {
		return &App{ID: "/web", Tasks: []TaskState{
			{ID: "web.1", State: "TASK_RUNNING", Routable: true, Addr: netip.MustParseAddr("10.0.0.1")},
		}}
	}
	steps := []struct {
		name string
		app  *App // nil removes /web
		want dnsView
	}{
		{"routed", routed(), dnsView{named: 1, port8000: "/web"}},
		{"label typo", problem(), dnsView{named: 1, dnsOnly: 1}},
		{"label fixed", routed(), dnsView{named: 1, port8000: "/web"}},
		{"typo again", problem(), dnsView{named: 1, dnsOnly: 1}},
		{"ports unknown", portlessProblem(), dnsView{portless: 1}},
		{"typo with ports", problem(), dnsView{named: 1, dnsOnly: 1}},
		{"no ports, routed", portlessRouted(), dnsView{portless: 1}},
		{"ports unknown again", portlessProblem(), dnsView{portless: 1}},
		{"routed again", routed(), dnsView{named: 1, port8000: "/web"}},
		{"typo before removal", problem(), dnsView{named: 1, dnsOnly: 1}},
		{"removed", nil, dnsView{}},
	}
	tb := NewTable()
	// /web-other shares the label "web" in another group: its entries must
	// survive every step of /web's.
	other := &App{ID: "/web-other", Services: []*Service{svc("/web-other", 0, 8001, "10.0.0.9:31000")}}
	other.Services[0].Name = "web"
	tb.Apply(Update{Source: "m", Apps: []*App{other}})
	for _, st := range steps {
		u := Update{Source: "m", Apps: []*App{st.app}}
		if st.app == nil {
			u = Update{Source: "m", Removed: []string{"/web"}}
		}
		snap := tb.Apply(u)
		want := st.want
		want.named++ // /web-other
		if got := viewOf(snap); got != want {
			t.Fatalf("%s: DNS indexes %+v, want %+v", st.name, got, want)
		}
		if s := snap.Service(8001); s == nil || s.Key.App != "/web-other" {
			t.Fatalf("%s: /web-other lost its port", st.name)
		}
		// A table built from scratch with the same apps must agree.
		fresh := NewTable()
		fresh.Apply(Update{Source: "m", Apps: []*App{other, st.app}})
		if got := viewOf(fresh.Snapshot()); got != want {
			t.Fatalf("%s: fresh table %+v, incremental %+v", st.name, got, want)
		}
	}
}
