package discovery

import (
	"net/netip"
	"testing"
)

// RawApps shows the backends the overlay ejected; Apps does not.
func TestRawAppsKeepEjectedBackends(t *testing.T) {
	t.Parallel()
	a1, a2, a3 := netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("10.0.0.2:1"), netip.MustParseAddrPort("10.0.0.3:1")
	tb := NewTable()
	tb.Apply(Update{Source: "s", Apps: []*App{{ID: "/a", Services: []*Service{{Key: ServiceKey{App: "/a"}, ServicePort: 9000,
		Backends: []Backend{{TaskID: "1", Addr: a1}, {TaskID: "2", Addr: a2}, {TaskID: "3", Addr: a3}}}}}}})
	snap := tb.SetEjected(map[netip.AddrPort]string{a2: "dead"})
	if n := len(snap.App("/a").Services[0].Backends); n != 2 {
		t.Fatalf("overlaid backends: %d, want 2", n)
	}
	raw := snap.RawApps()
	if len(raw) != 1 || len(raw[0].Services[0].Backends) != 3 {
		t.Fatalf("raw apps: %+v, want /a with 3 backends", raw)
	}
}
