package discovery

import (
	"fmt"
	"net/netip"
	"testing"
)

// BenchmarkApplyOneApp changes one app's backends in tables of growing size:
// the cost per update must stay flat as the cluster grows.
func BenchmarkApplyOneApp(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("apps=%d", n), func(b *testing.B) {
			tb := NewTable()
			apps := make([]*App, n)
			for i := range apps {
				id := fmt.Sprintf("/group-%d/app-%d", i%50, i)
				apps[i] = &App{ID: id, Services: []*Service{svc(id, 0, 10000+i, "10.0.0.1:31000", "10.0.0.2:31000")}}
			}
			tb.Apply(Update{Source: "m", Full: true, Apps: apps})
			target := apps[n/2].ID
			addrs := []netip.AddrPort{netip.MustParseAddrPort("10.0.0.3:31000"), netip.MustParseAddrPort("10.0.0.4:31000")}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				s := svc(target, 0, 10000+n/2)
				s.Backends = []Backend{{TaskID: "t", Addr: addrs[i%2]}}
				tb.Apply(Update{Source: "m", Apps: []*App{{ID: target, Services: []*Service{s}}}})
				i++
			}
		})
	}
}

// BenchmarkSnapshotService is the proxy's per-connection lookup.
func BenchmarkSnapshotService(b *testing.B) {
	tb := NewTable()
	apps := make([]*App, 1000)
	for i := range apps {
		id := fmt.Sprintf("/app-%d", i)
		apps[i] = &App{ID: id, Services: []*Service{svc(id, 0, 10000+i, "10.0.0.1:31000")}}
	}
	tb.Apply(Update{Source: "m", Full: true, Apps: apps})
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if tb.Snapshot().Service(10000+i%1000) == nil {
			b.Fatal("missing")
		}
		i++
	}
}
