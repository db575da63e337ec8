package marathon

import (
	"encoding/json"
	"testing"
)

func TestInstanceOf(t *testing.T) {
	t.Parallel()
	tests := []struct{ id, want string }{
		// 1.8+ app task ids (marathon-api.md §2.2).
		{"shop_web.instance-5e1c0f2a-5ec9-11ea-9a3f-0242ac110004._app.1", "shop_web.instance-5e1c0f2a-5ec9-11ea-9a3f-0242ac110004"},
		{"shop_web.instance-5e1c0f2a-5ec9-11ea-9a3f-0242ac110004._app.12", "shop_web.instance-5e1c0f2a-5ec9-11ea-9a3f-0242ac110004"},
		// Instance ids stay as they are.
		{"shop_web.instance-5e1c0f2a-5ec9-11ea-9a3f-0242ac110004", "shop_web.instance-5e1c0f2a-5ec9-11ea-9a3f-0242ac110004"},
		{"nginx-green.marathon-01da9a15-68a7-11e7-a229-e6a514ca0c21", "nginx-green.marathon-01da9a15-68a7-11e7-a229-e6a514ca0c21"},
		// Up to 1.7: <safeAppId>.<uuid>, instance <safeAppId>.marathon-<uuid>.
		{"nginx-green.01da9a15-68a7-11e7-a229-e6a514ca0c21", "nginx-green.marathon-01da9a15-68a7-11e7-a229-e6a514ca0c21"},
		{"prod_talkk_audit.42256046-a9d6-11e5-b4b6-0242ac110002", "prod_talkk_audit.marathon-42256046-a9d6-11e5-b4b6-0242ac110002"},
		// Resident tasks up to 1.7: <safeAppId>.<uuid>.<attempt>, same instance.
		{"myGroup_myApp.b6ff5fa5-7714-11e7-a55c-5ecf1c4671f6.42", "myGroup_myApp.marathon-b6ff5fa5-7714-11e7-a55c-5ecf1c4671f6"},
		{"db.b6ff5fa5-7714-11e7-a55c-5ecf1c4671f6.2", "db.marathon-b6ff5fa5-7714-11e7-a55c-5ecf1c4671f6"},
		// Pod tasks: <instanceId>.<container>.
		{"pod.instance-5e1c0f2a-5ec9-11ea-9a3f-0242ac110004.web", "pod.instance-5e1c0f2a-5ec9-11ea-9a3f-0242ac110004"},
		// Not Marathon's shapes: unchanged.
		{"", ""}, {"plain", "plain"}, {"trailing.", "trailing."},
	}
	for _, tt := range tests {
		if got := instanceOf(tt.id); got != tt.want {
			t.Errorf("instanceOf(%q) = %q, want %q", tt.id, got, tt.want)
		}
	}
}

// On the real fixtures, each health result names its own task, by task id
// (0.15) or instance id (1.5): instanceOf maps both to the same instance.
func TestHealthResultIDsMatchTasks(t *testing.T) {
	t.Parallel()
	for _, f := range []string{"marathon-lb-zdd_apps.json", "marathon-lb-zdd_app_blue.json", "marathon-lb-zdd_app_blue_marathon1.5.json"} {
		apps, _, err := decodeApps(readTestdata(t, f))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, a := range apps {
			for _, tk := range a.Def.Tasks {
				for _, r := range tk.HealthCheckResults {
					id := r.InstanceID
					if id == "" {
						id = r.TaskID
					}
					if instanceOf(id) != instanceOf(tk.ID) {
						t.Errorf("%s: result for %q does not map to task %q", f, id, tk.ID)
					}
					n++
				}
			}
		}
		if n == 0 {
			t.Errorf("%s: no health results", f)
		}
	}
}

// applyHealth on state built from the 1.5 fixture (MESOS_HTTP check,
// instance ids in events, legacy task ids).
func TestApplyHealth(t *testing.T) {
	t.Parallel()
	const task1 = "nginx-green.01da9a15-68a7-11e7-a229-e6a514ca0c21"
	const inst1 = "nginx-green.marathon-01da9a15-68a7-11e7-a229-e6a514ca0c21"
	load := func(t *testing.T, checks string) *state {
		apps, _, err := decodeApps(readTestdata(t, "marathon-lb-zdd_app_blue_marathon1.5.json"))
		if err != nil {
			t.Fatal(err)
		}
		if checks != "" {
			if err := json.Unmarshal([]byte(checks), &apps[0].Def.HealthChecks); err != nil {
				t.Fatal(err)
			}
		}
		s := newState()
		s.applyFull(apps, s.next())
		return s
	}
	ev := func(js string) *event {
		var e event
		if err := json.Unmarshal([]byte(js), &e); err != nil {
			t.Fatal(err)
		}
		return &e
	}
	results := func(s *state) []healthResult {
		return s.apps["/nginx-green"].tasks[task1].t.HealthCheckResults
	}
	type want struct {
		changed, fetch bool
		alive          []bool // results of task1 afterwards
	}
	tests := []struct {
		name   string
		checks string // replaces the fixture's one MESOS_HTTP check
		events []string
		want   want
	}{
		{"instance_health_changed false", "", []string{
			`{"eventType":"instance_health_changed_event","instanceId":"` + inst1 + `","runSpecId":"/nginx-green","healthy":false}`,
		}, want{true, false, []bool{false}}},
		{"instance_health_changed null: ask Marathon", "", []string{
			`{"eventType":"instance_health_changed_event","instanceId":"` + inst1 + `","runSpecId":"/nginx-green","healthy":null}`,
		}, want{false, true, []bool{true}}},
		{"failed_health_check_event: instance id under taskId (1.5+)", "", []string{
			`{"eventType":"failed_health_check_event","appId":"/nginx-green","taskId":"` + inst1 + `","healthCheck":{}}`,
		}, want{true, false, []bool{false}}},
		{"health_status_changed with a task id (up to 1.3), false then true", "", []string{
			`{"eventType":"health_status_changed_event","appId":"/nginx-green","taskId":"` + task1 + `","alive":false}`,
			`{"eventType":"health_status_changed_event","appId":"/nginx-green","taskId":"` + task1 + `","alive":true}`,
		}, want{true, false, []bool{true}}},
		{"unknown instance: ask Marathon", "", []string{
			`{"eventType":"health_status_changed_event","appId":"/nginx-green","instanceId":"nginx-green.marathon-00000000-0000-0000-0000-000000000000","alive":false}`,
		}, want{false, true, []bool{true}}},
		{"two checks, one result so far: alive completes them", `[{"protocol":"HTTP"},{"protocol":"TCP"}]`, []string{
			`{"eventType":"health_status_changed_event","appId":"/nginx-green","instanceId":"` + inst1 + `","alive":true}`,
		}, want{true, false, []bool{true, true}}},
		{"two checks: alive after a failure cannot tell which: ask Marathon", `[{"protocol":"HTTP"},{"protocol":"TCP"}]`, []string{
			`{"eventType":"health_status_changed_event","appId":"/nginx-green","instanceId":"` + inst1 + `","alive":false}`,
			`{"eventType":"health_status_changed_event","appId":"/nginx-green","instanceId":"` + inst1 + `","alive":true}`,
		}, want{false, true, []bool{false}}},
		{"unhealthy_instance_kill_event", "", []string{
			`{"eventType":"unhealthy_instance_kill_event","appId":"/nginx-green","taskId":"` + task1 + `","instanceId":"` + inst1 + `","reason":"503"}`,
		}, want{true, false, []bool{false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := load(t, tt.checks)
			var changed, fetch bool
			for _, js := range tt.events {
				_, changed, fetch = s.applyHealth(ev(js), s.next())
			}
			if changed != tt.want.changed || fetch != tt.want.fetch {
				t.Errorf("last event: changed %v fetch %v, want %v %v", changed, fetch, tt.want.changed, tt.want.fetch)
			}
			var got []bool
			for _, r := range results(s) {
				got = append(got, r.Alive)
			}
			if len(got) != len(tt.want.alive) {
				t.Fatalf("results = %v, want %v", got, tt.want.alive)
			}
			for i := range got {
				if got[i] != tt.want.alive[i] {
					t.Fatalf("results = %v, want %v", got, tt.want.alive)
				}
			}
			// Other tasks of the app are untouched.
			for id, e := range s.apps["/nginx-green"].tasks {
				if id != task1 && (len(e.t.HealthCheckResults) != 1 || !e.t.HealthCheckResults[0].Alive) {
					t.Errorf("task %s changed: %+v", id, e.t.HealthCheckResults)
				}
			}
		})
	}
}

// A health event newer than a fetch in flight wins over its results.
func TestHealthEventBeatsOlderFetch(t *testing.T) {
	t.Parallel()
	s := newState()
	app := `{"id":"/a","ports":[1],"healthChecks":[{"protocol":"HTTP"}],"tasks":[{"id":"a.1","state":"TASK_RUNNING","healthCheckResults":[{"alive":true}]}]}`
	s.mergeFetched(fetched(t, app), s.next())
	f := s.next() // a fetch is issued...
	_, changed, _ := s.applyHealth(&event{EventType: evHealthStatusChanged, AppID: "/a", InstanceID: "a.marathon-1", Alive: new(false)}, s.next())
	if !changed {
		t.Fatal("event not applied")
	}
	s.mergeFetched(fetched(t, app), f) // ...and answers with the old verdict
	if r := s.apps["/a"].tasks["a.1"].t.HealthCheckResults; len(r) != 1 || r[0].Alive {
		t.Errorf("results = %+v, want the event's failure", r)
	}
	s.mergeFetched(fetched(t, app), s.next()) // a newer fetch is truth again
	if r := s.apps["/a"].tasks["a.1"].t.HealthCheckResults; len(r) != 1 || !r[0].Alive {
		t.Errorf("results = %+v, want the newer fetch's", r)
	}
}

// A resident task of Marathon 1.4 to 1.7 ("<safeAppId>.<uuid>.<attempt>")
// leaves routing on the health event naming its instance, at once, like any
// other task: not after a fetch of its app.
func TestResidentTaskHealthEventAppliesAtOnce(t *testing.T) {
	t.Parallel()
	const task = "db.b6ff5fa5-7714-11e7-a55c-5ecf1c4671f6.3"
	const inst = "db.marathon-b6ff5fa5-7714-11e7-a55c-5ecf1c4671f6"
	s := newState()
	s.mergeFetched(fetched(t, `{"id":"/db","ports":[1],"healthChecks":[{"protocol":"TCP"}],"tasks":[`+
		`{"id":"`+task+`","host":"10.0.0.1","ports":[31000],"state":"TASK_RUNNING","healthCheckResults":[{"alive":true,"instanceId":"`+inst+`"}]}]}`), s.next())
	for _, ev := range []*event{
		{EventType: evHealthStatusChanged, AppID: "/db", InstanceID: inst, Alive: new(false)},
		{EventType: evFailedHealthCheck, AppID: "/db", TaskID: inst},
		{EventType: evUnhealthyInstanceKill, AppID: "/db", TaskID: task, InstanceID: inst},
	} {
		_, changed, fetch := s.applyHealth(ev, s.next())
		if !changed || fetch {
			t.Errorf("%s for %s: changed %v, fetch %v; want applied without a fetch", ev.EventType, inst, changed, fetch)
		}
		if r := s.apps["/db"].tasks[task].t.HealthCheckResults; len(r) != 1 || r[0].Alive {
			t.Errorf("%s: results %+v, want one failing", ev.EventType, r)
		}
	}
}

// Out of order: TASK_STAGING after TASK_RUNNING is ignored.
func TestStatusNeverRegresses(t *testing.T) {
	t.Parallel()
	s := newState()
	s.mergeFetched(fetched(t, `{"id":"/a","ports":[1],"tasks":[{"id":"a.1","host":"10.0.0.1","ports":[1],"state":"TASK_RUNNING"}]}`), s.next())
	for _, st := range []string{stateStaging, stateStarting} {
		if _, changed, _ := s.applyStatus(&event{AppID: "/a", TaskID: "a.1", TaskStatus: st}, s.next()); changed {
			t.Errorf("%s after TASK_RUNNING applied", st)
		}
	}
	if got := s.apps["/a"].tasks["a.1"].t.State; got != stateRunning {
		t.Errorf("state = %s", got)
	}
	// UNREACHABLE and back is a real life, not a regression.
	s.applyStatus(&event{AppID: "/a", TaskID: "a.1", TaskStatus: stateUnreachable}, s.next())
	s.applyStatus(&event{AppID: "/a", TaskID: "a.1", TaskStatus: stateRunning}, s.next())
	if got := s.apps["/a"].tasks["a.1"].t.State; got != stateRunning {
		t.Errorf("state = %s", got)
	}
}

// FuzzHealthEvent feeds arbitrary event JSON to the health path: no panic,
// and an applied event leaves every task with results of the right shape.
func FuzzHealthEvent(f *testing.F) {
	for _, s := range []string{
		`{"eventType":"health_status_changed_event","appId":"/nginx-green","instanceId":"nginx-green.marathon-01da9a15-68a7-11e7-a229-e6a514ca0c21","alive":true}`,
		`{"eventType":"instance_health_changed_event","runSpecId":"/nginx-green","instanceId":"x._app.1","healthy":null}`,
		`{"eventType":"failed_health_check_event","appId":"/nginx-green","taskId":"nginx-green.01da9a15-68a7-11e7-a229-e6a514ca0c21"}`,
		`{"eventType":"unhealthy_task_kill_event","appId":"nginx-green","taskId":"._app."}`,
	} {
		f.Add([]byte(s))
	}
	raw := readTestdata(f, "marathon-lb-zdd_app_blue_marathon1.5.json")
	f.Fuzz(func(t *testing.T, data []byte) {
		var ev event
		if json.Unmarshal(data, &ev) != nil || !isHealthEvent(ev.EventType) {
			return
		}
		_ = instanceOf(ev.TaskID)
		apps, _, err := decodeApps(raw) // fresh tasks each time
		if err != nil {
			t.Fatal(err)
		}
		s := newState()
		s.applyFull(apps, s.next())
		s.applyHealth(&ev, s.next())
		for _, a := range s.apps {
			for _, e := range a.tasks {
				if n := len(e.t.HealthCheckResults); n == 0 || n > len(a.def.HealthChecks) {
					t.Fatalf("task %s has %d results", e.t.ID, n)
				}
			}
		}
	})
}
