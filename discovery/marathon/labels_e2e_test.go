package marathon

import (
	"testing"

	"github.com/pacer-lb/pacer/discovery/marathonsim"
)

// Against the simulator: PACER_* labels win over HAPROXY_*, two apps
// claiming one service port give one winner that does not flap across
// reconnects and resyncs, and pacer never routes to its own app.
func TestLabelsConflictsAndSelf(t *testing.T) {
	t.Parallel()
	sim := newSim(t, marathonsim.Config{})
	// /b first: arrival order must not decide.
	createApp(t, sim, marathonsim.AppSpec{ID: "/b", Instances: 1, Labels: map[string]string{"HAPROXY_0_PORT": "10500"}})
	createApp(t, sim, marathonsim.AppSpec{ID: "/a", Instances: 1, Labels: map[string]string{"HAPROXY_0_PORT": "10500"}})
	createApp(t, sim, marathonsim.AppSpec{ID: "/c", Instances: 1, Labels: map[string]string{"PACER_0_PORT": "10501", "HAPROXY_0_PORT": "10502"}})
	createApp(t, sim, marathonsim.AppSpec{ID: "/infra/pacer", Instances: 1, Labels: map[string]string{"HAPROXY_0_PORT": "10503"}})
	src, tb, _ := startLogged(t, Config{URLs: []string{sim.URL()}, SelfAppID: "/infra/pacer"})
	waitSim(t, tb, sim, "/c")
	waitSim(t, tb, sim, "/a")
	waitSim(t, tb, sim, "/b")

	check := func(when string) {
		t.Helper()
		snap := tb.Snapshot()
		if s := snap.Service(10500); s == nil || s.Key.App != "/a" {
			t.Errorf("%s: port 10500 served by %+v, want /a", when, s)
		}
		if c := snap.Conflicts(); len(c) != 1 || c[0].Port != 10500 || len(c[0].Losers) != 1 || c[0].Losers[0].App != "/b" {
			t.Errorf("%s: conflicts = %+v", when, c)
		}
		if s := snap.Service(10501); s == nil || s.Key.App != "/c" {
			t.Errorf("%s: PACER_0_PORT not used: %+v", when, s)
		}
		if snap.Service(10502) != nil {
			t.Errorf("%s: HAPROXY_0_PORT used despite PACER_0_PORT", when)
		}
		if snap.App("/infra/pacer") != nil || snap.Service(10503) != nil {
			t.Errorf("%s: pacer routes to itself", when)
		}
	}
	check("first sync")

	// Events for the loser, a reconnect and a resync: still /a.
	if err := sim.Scale("/b", 2); err != nil {
		t.Fatal(err)
	}
	waitSim(t, tb, sim, "/b")
	resyncs := src.Status().Resyncs
	sim.DropStreams()
	waitFor(t, "resync", func() bool { return src.Status().Resyncs > resyncs && src.Status().Connected })
	check("after events and a resync")
}
