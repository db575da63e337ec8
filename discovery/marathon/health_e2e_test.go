package marathon

import (
	"slices"
	"testing"

	"github.com/pacer-lb/pacer/discovery/marathonsim"
)

func checkedApp(id string, n int) marathonsim.AppSpec {
	return marathonsim.AppSpec{ID: id, Instances: n, HealthCheck: &marathonsim.HealthCheck{Protocol: "HTTP", Path: "/"}}
}

// health_status_changed_event is applied to its task at once: the task
// leaves and rejoins the service without any fetch.
func TestHealthEventsApplyWithoutFetch(t *testing.T) {
	t.Parallel()
	sim := newSim(t, marathonsim.Config{})
	createApp(t, sim, checkedApp("/web", 3))
	waitHealthy(t, sim, "/web")
	var reqs requestLog
	reqs.install(sim)
	src, tb, _ := startLogged(t, Config{URLs: []string{withCreds(sim.URL())}})
	waitSim(t, tb, sim, "/web")
	waitFor(t, "connected", func() bool { return src.Status().Connected })
	apps, app := reqs.count("/v2/apps"), reqs.count("/v2/apps/web")

	victim := sim.Tasks("/web")[1].ID
	if err := sim.SetHealth(victim, false); err != nil {
		t.Fatal(err)
	}
	waitSim(t, tb, sim, "/web")
	if slices.ContainsFunc(backends(tb, "/web"), func(b string) bool { return b[:len(victim)] == victim }) {
		t.Fatal("unhealthy task still routed")
	}
	if err := sim.SetHealth(victim, true); err != nil {
		t.Fatal(err)
	}
	waitSim(t, tb, sim, "/web")
	if len(backends(tb, "/web")) != 3 {
		t.Fatalf("backends = %q", backends(tb, "/web"))
	}
	if n, m := reqs.count("/v2/apps")-apps, reqs.count("/v2/apps/web")-app; n != 0 || m != 0 {
		t.Errorf("%d snapshots and %d app fetches for two health events, want none", n, m)
	}
	if got := src.EventsByType()[evHealthStatusChanged]; got != 2 {
		t.Errorf("EventsByType[%s] = %d, want 2 (all: %v)", evHealthStatusChanged, got, src.EventsByType())
	}
}

// A Marathon leader failover forgets every health result
// ("healthCheckResults":[] for every task). Tasks already seen healthy keep
// their verdict, so the service keeps all its backends across the resync;
// a task seen failing stays out.
func TestFailoverKeepsHealthyBackends(t *testing.T) {
	t.Parallel()
	sim := newSim(t, marathonsim.Config{})
	createApp(t, sim, checkedApp("/web", 4))
	waitHealthy(t, sim, "/web")
	src, tb, _ := startLogged(t, Config{URLs: []string{withCreds(sim.URL())}})
	waitSim(t, tb, sim, "/web")
	sick := sim.Tasks("/web")[3].ID
	if err := sim.SetHealth(sick, false); err != nil {
		t.Fatal(err)
	}
	waitSim(t, tb, sim, "/web")
	before := backends(tb, "/web")
	if len(before) != 3 {
		t.Fatalf("backends before the failover = %q", before)
	}

	// The failover: the new leader has no results, and streams reconnect.
	resyncs := src.Status().Resyncs
	sim.ForgetHealth()
	sim.DropStreams()
	waitFor(t, "resync after the reconnect", func() bool {
		st := src.Status()
		return st.Resyncs > resyncs && st.Connected
	})
	if got := backends(tb, "/web"); !slices.Equal(got, before) {
		t.Fatalf("after the failover backends = %q, want %q", got, before)
	}
	for _, task := range tb.Snapshot().App("/web").Tasks {
		if task.ID == sick && task.Routable {
			t.Errorf("task seen failing routed after the failover")
		}
	}
}

// TASK_UNREACHABLE (and TASK_LOST) keep routing by default, as marathon-lb
// does, and drop the task with KeepUnreachable false; TASK_RUNNING brings
// it back either way.
func TestUnreachableKeepOrDrop(t *testing.T) {
	t.Parallel()
	for _, state := range []string{stateUnreachable, stateLost} {
		t.Run(state, func(t *testing.T) {
			t.Parallel()
			sim := newSim(t, marathonsim.Config{})
			createApp(t, sim, marathonsim.AppSpec{ID: "/db", Instances: 2})
			_, keep, _ := startLogged(t, Config{URLs: []string{sim.URL()}})
			_, drop, _ := startLogged(t, Config{URLs: []string{sim.URL()}, KeepUnreachable: new(false)})
			waitSim(t, keep, sim, "/db")
			waitSim(t, drop, sim, "/db")
			all := backends(keep, "/db")

			lost := sim.Tasks("/db")[0].ID
			if err := sim.SetTaskState(lost, state); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "drop source drops the task", func() bool { return len(backends(drop, "/db")) == 1 })
			waitFor(t, "keep source sees the state", func() bool {
				for _, ts := range keep.Snapshot().App("/db").Tasks {
					if ts.ID == lost {
						// TASK_LOST is raw in the event; the REST API
						// (1.4+) says TASK_UNREACHABLE.
						return (ts.State == state || ts.State == stateUnreachable) && ts.Routable
					}
				}
				return false
			})
			if got := backends(keep, "/db"); !slices.Equal(got, all) {
				t.Errorf("keep: backends = %q, want %q", got, all)
			}

			if err := sim.SetTaskState(lost, stateRunning); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "task back", func() bool { return slices.Equal(backends(drop, "/db"), all) })
		})
	}
}
