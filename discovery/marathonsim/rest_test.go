package marathonsim

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// REST shapes of Marathon 1.10 (§3), with a Marathon HTTP health check.
func TestRESTShapes(t *testing.T) {
	t.Parallel()
	s := startSim(t, Config{})
	c := dialEvents(t, s.URL(), "event_type=health_status_changed_event", "text/event-stream")
	tasks := mustCreate(t, s, AppSpec{
		ID: "/shop/web", Instances: 2, ServicePorts: []int{10004}, PortNames: []string{"http"},
		Labels:      map[string]string{"HAPROXY_GROUP": "external"},
		HealthCheck: &HealthCheck{Path: "/health"},
	})
	for range tasks {
		ev := c.next()
		mustMatch(t, `^\{"appId":"/shop/web","instanceId":"shop_web\.instance-`+uuidRE+`","version":"`+tsRE+`","alive":true,"eventType":"health_status_changed_event","timestamp":"`+tsRE+`"\}$`, ev.json)
	}
	waitUntil(t, "both healthy", func() bool {
		ts := s.Tasks("/shop/web")
		return len(ts) == 2 && ts[0].Healthy != nil && *ts[0].Healthy && ts[1].Healthy != nil && *ts[1].Healthy
	})

	_, list := getBody(t, s.URL()+"/v2/apps")
	if strings.Contains(list, `"tasks"`) {
		t.Errorf("/v2/apps without embed has tasks: %s", list)
	}
	for _, want := range []string{`"networks":[{"mode":"host"}]`, `"portDefinitions":[{"port":10004,"protocol":"tcp","name":"http","labels":{}}]`,
		`"labels":{"HAPROXY_GROUP":"external"}`, `"tasksRunning":2,"tasksHealthy":2,"tasksUnhealthy":0,"deployments":[]`,
		`"healthChecks":[{"gracePeriodSeconds":300,"ignoreHttp1xx":false,"intervalSeconds":60,"maxConsecutiveFailures":3,"path":"/health","portIndex":0,"protocol":"HTTP","ipProtocol":"IPv4","timeoutSeconds":20,"delaySeconds":15}]`} {
		if !strings.Contains(list, want) {
			t.Errorf("/v2/apps lacks %s:\n%s", want, list)
		}
	}
	if strings.Contains(list, `"ports"`) {
		t.Errorf("1.10 app has ports: %s", list)
	}

	_, embedded := getBody(t, s.URL()+"/v2/apps?embed=apps.tasks&embed=apps.counts")
	mustMatch(t, `"tasks":\[\{"appId":"/shop/web","healthCheckResults":\[\{"alive":true,"consecutiveFailures":0,"firstSuccess":"`+tsRE+
		`","instanceId":"`+tasks[0].InstanceID+`","lastSuccess":"`+tsRE+`"\}\],"host":"127\.0\.0\.1","id":"`+tasks[0].ID+
		`","ipAddresses":\[\{"ipAddress":"127\.0\.0\.1","protocol":"IPv4"\}\],"ports":\[\d+\],"servicePorts":\[\],"slaveId":"[^"]+",`+
		`"state":"TASK_RUNNING","stagedAt":"`+tsRE+`","startedAt":"`+tsRE+`","version":"`+tsRE+`","localVolumes":\[\],"role":"\*"\}`, embedded)

	var one struct {
		App struct {
			ID    string
			Tasks []json.RawMessage
		}
	}
	getJSON(t, s.URL()+"/v2/apps/shop/web", &one)
	if one.App.ID != "/shop/web" || len(one.App.Tasks) != 2 {
		t.Errorf("/v2/apps/shop/web: %+v", one)
	}
	if resp, body := getBody(t, s.URL()+"/v2/apps/nope"); resp.StatusCode != 404 || body != `{"message":"App '/nope' does not exist"}` {
		t.Errorf("unknown app: %d %s", resp.StatusCode, body)
	}
	var tl struct {
		Tasks []struct {
			ID           string
			ServicePorts []int
		}
	}
	for _, u := range []string{"/v2/apps/shop/web/tasks", "/v2/tasks", "/v2/tasks?status=running"} {
		getJSON(t, s.URL()+u, &tl)
		if len(tl.Tasks) != 2 || !slices.Equal(tl.Tasks[0].ServicePorts, []int{10004}) {
			t.Errorf("%s: %+v", u, tl)
		}
	}
	getJSON(t, s.URL()+"/v2/tasks?status=staging", &tl)
	if len(tl.Tasks) != 0 {
		t.Errorf("staging tasks: %+v", tl)
	}

	var info struct {
		Name, Version, Leader string
		Elected               bool
	}
	resp := getJSON(t, s.URL()+"/v2/info", &info)
	hostPort := strings.TrimPrefix(s.URL(), "http://")
	if info.Name != "marathon" || info.Version != "1.10.17" || info.Leader != hostPort || !info.Elected {
		t.Errorf("/v2/info: %+v", info)
	}
	if resp.Header.Get("X-Marathon-Leader") != s.URL() {
		t.Errorf("X-Marathon-Leader %q", resp.Header.Get("X-Marathon-Leader"))
	}
	if _, body := getBody(t, s.URL()+"/v2/leader"); body != `{"leader":"`+hostPort+`"}` {
		t.Errorf("/v2/leader: %s", body)
	}
	if resp, body := getBody(t, s.URL()+"/ping"); body != "pong" || resp.Header.Get("Content-Type") != "text/plain" {
		t.Errorf("/ping: %q %q", body, resp.Header.Get("Content-Type"))
	}
	req, _ := http.NewRequest("GET", s.URL()+"/ping", nil)
	req.Header.Set("Accept", "application/json")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != `"pong"` {
			t.Errorf("/ping as JSON: %q", b)
		}
	}

	// A failing check flips the verdict and is announced once.
	if err := s.SetHealth(tasks[1].ID, false); err != nil {
		t.Fatal(err)
	}
	if ev := c.next(); ev.str("instanceId") != tasks[1].InstanceID || ev.data["alive"] != false {
		t.Errorf("after SetHealth: %s", ev)
	}
}

// Marathon 0.8: service ports in "ports", tasks without state, old ids,
// no ipAddresses or instance events (§3.1, §2.1).
func TestLegacy08(t *testing.T) {
	t.Parallel()
	s := startSim(t, Config{Version: "0.8.2"})
	c := dialEvents(t, s.URL(), "", "text/event-stream")
	c.next()
	task := mustCreate(t, s, AppSpec{ID: "/x", Instances: 1, ServicePorts: []int{10001}})[0]
	mustMatch(t, `^x\.`+uuidRE+`$`, task.ID)

	ev := c.waitEvent("running", status(task.ID, "TASK_RUNNING"))
	if ev.name != "" || strings.Contains(ev.json, "ipAddresses") {
		t.Errorf("0.8 event: %s", ev)
	}
	s.Emit("marker", nil)
	if ev := c.next(); ev.str("eventType") != "deployment_step_success" {
		t.Errorf("0.8 emitted %s after TASK_RUNNING", ev)
	}

	_, body := getBody(t, s.URL()+"/v2/apps?embed=apps.tasks")
	for _, want := range []string{`"ports":[10001]`, `"tasks":[{"appId":"/x","id":"` + task.ID + `","host":"127.0.0.1","ports":[`} {
		if !strings.Contains(body, want) {
			t.Errorf("0.8 apps lack %s:\n%s", want, body)
		}
	}
	for _, unwanted := range []string{`"state"`, `"portDefinitions"`, `"networks"`} {
		if strings.Contains(body, unwanted) {
			t.Errorf("0.8 apps have %s:\n%s", unwanted, body)
		}
	}
	mustMatch(t, `"startedAt":"`+tsRE+`","stagedAt":"`+tsRE+`"`, body)
}

func TestScaleAndServicePorts(t *testing.T) {
	t.Parallel()
	s := startSim(t, Config{})
	mustCreate(t, s, AppSpec{ID: "/a", Instances: 1})
	b := mustCreate(t, s, AppSpec{ID: "/b", Instances: 1, ServicePorts: []int{0, 0}, Run: func(ctx context.Context, ln net.Listener, id string) {
		env, ok := EnvFrom(ctx)
		if !ok || len(env.Listeners) != 2 || env.TaskID != id {
			t.Errorf("TaskEnv: %+v", env)
		}
		<-ctx.Done()
	}})
	if len(b[0].Ports) != 2 {
		t.Fatalf("two-port task: %+v", b)
	}
	var apps struct {
		Apps []struct {
			ID              string
			PortDefinitions []struct{ Port int }
		}
	}
	getJSON(t, s.URL()+"/v2/apps", &apps)
	// Dynamic service ports are the lowest free from 10000 (§3.1).
	if apps.Apps[0].PortDefinitions[0].Port != 10000 || apps.Apps[1].PortDefinitions[1].Port != 10002 {
		t.Errorf("service ports: %+v", apps)
	}
	if err := s.Scale("/a", 3); err != nil {
		t.Fatal(err)
	}
	ts := s.Tasks("/a")
	if err := s.Scale("/a", 1); err != nil {
		t.Fatal(err)
	}
	if after := s.Tasks("/a"); len(after) != 1 || after[0].ID != ts[0].ID {
		t.Errorf("scale down kept %+v, want the oldest %s", after, ts[0].ID)
	}
	if err := s.CreateApp(AppSpec{ID: "/a"}); err == nil {
		t.Error("duplicate app accepted")
	}
	if err := s.Scale("/zzz", 1); err == nil {
		t.Error("scaling an unknown app succeeded")
	}
}

// The write endpoints `lb demo` users reach with curl, and SetTaskState.
func TestRESTWritesAndTaskState(t *testing.T) {
	t.Parallel()
	s := startSim(t, Config{RestartDelay: -1})
	c := dialEvents(t, s.URL(), "event_type=status_update_event", "text/event-stream")
	task := mustCreate(t, s, AppSpec{ID: "/web", Instances: 1})[0]

	if err := s.SetTaskState(task.ID, "TASK_UNREACHABLE"); err != nil {
		t.Fatal(err)
	}
	c.waitEvent("unreachable", status(task.ID, "TASK_UNREACHABLE"))
	if ts := s.Tasks("/web"); ts[0].State != "TASK_UNREACHABLE" {
		t.Errorf("REST state %s", ts[0].State)
	}
	if err := s.SetTaskState(task.ID, "TASK_KILLED"); err == nil {
		t.Error("SetTaskState accepted a terminal state")
	}

	do := func(method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, s.URL()+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := do("PUT", "/v2/apps/web", `{"instances":2}`); code != 200 || !strings.Contains(body, `"deploymentId"`) {
		t.Errorf("PUT: %d %s", code, body)
	}
	if n := len(s.Tasks("/web")); n != 2 {
		t.Errorf("after PUT: %d tasks", n)
	}
	if code, body := do("DELETE", "/v2/apps/web/tasks/"+task.ID, ""); code != 200 || !strings.Contains(body, `{"task":{"appId":"/web"`) {
		t.Errorf("DELETE task: %d %s", code, body)
	}
	c.waitEvent("killed", status(task.ID, "TASK_KILLED"))
	if code, _ := do("DELETE", "/v2/apps/web", ""); code != 200 {
		t.Errorf("DELETE app: %d", code)
	}
	if code, body := do("DELETE", "/v2/apps/web", ""); code != 404 || body != `{"message":"App '/web' does not exist"}` {
		t.Errorf("DELETE missing app: %d %s", code, body)
	}
}
