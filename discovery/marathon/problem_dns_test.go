package marathon

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/discovery/marathonsim"
)

// dnsOnlyBackends is what DNS answers for app's first DNS-only service, as
// "task@addr" in the table's order.
func dnsOnlyBackends(tb *discovery.Table, app string) []string {
	a := tb.Snapshot().App(app)
	if a == nil || len(a.DNSOnly) == 0 {
		return nil
	}
	var out []string
	for _, b := range a.DNSOnly[0].Backends {
		out = append(out, b.TaskID+"@"+b.Addr.String())
	}
	return out
}

// An app whose load-balancer label pacer cannot read is not routed, but
// keeps what DNS answers without that label, as mesos-dns (which reads no
// label) would: its running, healthy tasks on the ports its port definitions
// name. An unhealthy task leaves DNS as it would leave a routed service.
func TestProblemAppKeepsHealthyTasksForDNS(t *testing.T) {
	t.Parallel()
	sim := newSim(t, marathonsim.Config{})
	spec := checkedApp("/shop/typo", 3)
	spec.PortNames = []string{"web"}
	spec.Labels = map[string]string{"HAPROXY_0_BALANCE": "uri"} // no pacer equivalent
	createApp(t, sim, spec)
	waitHealthy(t, sim, "/shop/typo")
	_, tb, _ := startLogged(t, Config{URLs: []string{sim.URL()}})

	waitFor(t, fmt.Sprintf("DNS-only backends %q to match the sim %q", dnsOnlyBackends(tb, "/shop/typo"), simBackends(sim, "/shop/typo")), func() bool {
		return slices.Equal(dnsOnlyBackends(tb, "/shop/typo"), simBackends(sim, "/shop/typo"))
	})
	snap := tb.Snapshot()
	app := snap.App("/shop/typo")
	if !strings.Contains(app.Problem, "HAPROXY_0_BALANCE") || len(app.Services) != 0 {
		t.Fatalf("problem %q, %d services: want the label named and nothing routed", app.Problem, len(app.Services))
	}
	if svc := app.DNSOnly[0]; svc.Name != "typo-shop" || svc.PortName != "web" || svc.ServicePort != 0 || svc.Protocol != discovery.ProtoTCP {
		t.Errorf("DNS-only service = %+v, want typo-shop, port name web, no service port, TCP", svc)
	}
	for _, port := range snap.Ports() {
		if snap.Service(port).Key.App == "/shop/typo" {
			t.Errorf("app with a problem claims service port %d", port)
		}
	}
	if got := snap.ServicesNamed("typo-shop"); len(got) != 1 || got[0] != app.DNSOnly[0] {
		t.Errorf("ServicesNamed(typo-shop) = %v, want the DNS-only service", got)
	}
	for _, ts := range app.Tasks {
		if ts.Routable || !strings.HasPrefix(ts.Reason, "app not routed: ") || !ts.Addr.IsValid() {
			t.Errorf("task %+v: want not routable, the problem as reason, and an address for DNS", ts)
		}
	}

	sick := sim.Tasks("/shop/typo")[1].ID
	if err := sim.SetHealth(sick, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the unhealthy task to leave DNS", func() bool {
		want := simBackends(sim, "/shop/typo")
		return len(want) == 2 && slices.Equal(dnsOnlyBackends(tb, "/shop/typo"), want)
	})
	for _, ts := range tb.Snapshot().App("/shop/typo").Tasks {
		if ts.ID == sick && ts.Addr.IsValid() {
			t.Errorf("unhealthy task keeps an address DNS would answer: %+v", ts)
		}
	}
}
