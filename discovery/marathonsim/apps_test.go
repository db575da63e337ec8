package marathonsim

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

const uuidRE = `[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`

// The deployment of one instance, event by event (marathon-api.md §2.2).
func TestCreateAndDeleteEventSequence(t *testing.T) {
	t.Parallel()
	s := startSim(t, Config{})
	c := dialEvents(t, s.URL(), "", "text/event-stream")
	c.next()
	tasks := mustCreate(t, s, AppSpec{ID: "/shop/web", Instances: 1})
	if len(tasks) != 1 || tasks[0].State != "TASK_RUNNING" || tasks[0].Host != "127.0.0.1" || len(tasks[0].Ports) != 1 {
		t.Fatalf("Tasks: %+v", tasks)
	}
	id := tasks[0].ID
	mustMatch(t, `^shop_web\.instance-`+uuidRE+`\._app\.1$`, id)

	want := []string{
		"api_post_event", "group_change_success",
		"deployment_info", "deployment_step_success", "deployment_info",
		"status_update_event TASK_STAGING", "instance_changed_event Staging",
		"status_update_event TASK_STARTING", "instance_changed_event Starting",
		"status_update_event TASK_RUNNING", "instance_changed_event Running",
		"deployment_step_success", "deployment_success",
	}
	var got []event
	for range want {
		got = append(got, c.next())
	}
	if d := diffTypes(got, want); d != "" {
		t.Fatal(d)
	}
	// Field order and shape are Marathon 1.10's serializers' (§2.1).
	mustMatch(t, `^\{"slaveId":"`+uuidRE+`-S\d","taskId":"`+id+`","taskStatus":"TASK_STAGING","message":"","appId":"/shop/web",`+
		`"host":"127\.0\.0\.1","ipAddresses":\[\{"ipAddress":"127\.0\.0\.1","protocol":"IPv4"\}\],"ports":\[`+
		fmt.Sprint(tasks[0].Ports[0])+`\],"version":"`+tsRE+`","eventType":"status_update_event","timestamp":"`+tsRE+`"\}$`, got[5].json)
	mustMatch(t, `^\{"instanceId":"`+tasks[0].InstanceID+`","condition":"Staging","runSpecId":"/shop/web","agentId":"[^"]+",`+
		`"host":"127\.0\.0\.1","runSpecVersion":"`+tsRE+`","timestamp":"`+tsRE+`","eventType":"instance_changed_event"\}$`, got[6].json)
	mustMatch(t, `^\{"id":"`+uuidRE+`","plan":\{"id":"`+uuidRE+`","steps":\[\{"actions":\[\{"action":"StartApplication","app":"/shop/web"\}\]\},`+
		`\{"actions":\[\{"action":"ScaleApplication","app":"/shop/web"\}\]\}\],"version":"`+tsRE+`"\},"eventType":"deployment_success","timestamp":"`+tsRE+`"\}$`, got[12].json)

	if err := s.DeleteApp("shop/web"); err != nil {
		t.Fatal(err)
	}
	want = []string{
		"group_change_success", "deployment_info", "app_terminated_event",
		"status_update_event TASK_KILLED", "instance_changed_event Killed",
		"deployment_step_success", "deployment_success",
	}
	got = got[:0]
	for range want {
		got = append(got, c.next())
	}
	if d := diffTypes(got, want); d != "" {
		t.Fatal(d)
	}
	if ts := s.Tasks("/shop/web"); len(ts) != 0 {
		t.Errorf("tasks after delete: %+v", ts)
	}
	if err := s.DeleteApp("/shop/web"); err == nil {
		t.Error("deleting twice succeeded")
	}
}

// diffTypes compares events with "eventType [taskStatus|condition]" strings.
func diffTypes(got []event, want []string) string {
	var g []string
	for _, e := range got {
		d := e.str("eventType")
		if st := e.str("taskStatus") + e.str("condition"); st != "" {
			d += " " + st
		}
		if e.name != e.str("eventType") {
			d += " (SSE name " + e.name + ")"
		}
		g = append(g, d)
	}
	if slices.Equal(g, want) {
		return ""
	}
	return fmt.Sprintf("events:\n got %q\nwant %q", g, want)
}

// The seed's nc task: one connection, then it exits and Marathon restarts
// it with a new task id and port.
func TestOneShotHelloRestarts(t *testing.T) {
	t.Parallel()
	s := startSim(t, Config{RestartDelay: 10 * time.Millisecond})
	c := dialEvents(t, s.URL(), "event_type=status_update_event", "text/event-stream")
	first := mustCreate(t, s, AppSpec{ID: "/hello", Instances: 1, Run: OneShotHello(false)})[0]

	if got := readAllFrom(t, first.Ports[0]); got != "hello "+first.ID+"\n" {
		t.Fatalf("task said %q", got)
	}
	c.waitEvent("TASK_FINISHED", status(first.ID, "TASK_FINISHED"))
	staging := c.waitEvent("replacement staging", status("", "TASK_STAGING"))
	running := c.waitEvent("replacement running", status(staging.str("taskId"), "TASK_RUNNING"))
	second := running.str("taskId")
	// 1.8+ relaunches the same instance with the next incarnation (§2.1).
	if want := first.InstanceID + "._app.2"; second != want {
		t.Errorf("replacement id %q, want %q", second, want)
	}
	tasks := s.Tasks("/hello")
	if len(tasks) != 1 || tasks[0].ID != second || tasks[0].Ports[0] == first.Ports[0] {
		t.Fatalf("after restart: %+v (first %+v)", tasks, first)
	}
	if got := readAllFrom(t, tasks[0].Ports[0]); got != "hello "+second+"\n" {
		t.Fatalf("replacement said %q", got)
	}
}

// With httpReply the greeting is an HTTP/1.0 response a stock client takes.
func TestOneShotHelloHTTP(t *testing.T) {
	t.Parallel()
	s := startSim(t, Config{})
	task := mustCreate(t, s, AppSpec{ID: "/hello", Instances: 1, Run: OneShotHello(true)})[0]
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: waitTimeout}
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", task.Ports[0]))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || string(body) != "hello "+task.ID+"\n" || resp.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("got %d %q %v (%s)", resp.StatusCode, body, err, resp.Header.Get("Content-Type"))
	}
	waitUntil(t, "a replacement", func() bool {
		ts := s.Tasks("/hello")
		return len(ts) == 1 && ts[0].ID != task.ID && ts[0].State == "TASK_RUNNING"
	})
}

func TestKillTaskWithGrace(t *testing.T) {
	t.Parallel()
	s := startSim(t, Config{RestartDelay: -1})
	c := dialEvents(t, s.URL(), "event_type=status_update_event", "text/event-stream")
	task := mustCreate(t, s, AppSpec{ID: "/web", Instances: 1})[0]
	c.waitEvent("running", status(task.ID, "TASK_RUNNING"))

	const grace = 200 * time.Millisecond
	start := time.Now()
	if err := s.KillTask(task.ID, KillOptions{Grace: grace}); err != nil {
		t.Fatal(err)
	}
	if ev := c.next(); !status(task.ID, "TASK_KILLING")(ev) {
		t.Fatalf("first event after kill: %s", ev)
	}
	// During the grace period the task is listed as killing and still serves.
	if ts := s.Tasks("/web"); len(ts) != 1 || ts[0].State != "TASK_KILLING" {
		t.Errorf("during grace: %+v", ts)
	}
	if _, body := getBody(t, fmt.Sprintf("http://127.0.0.1:%d/", task.Ports[0])); body != "hello from "+task.ID+"\n" {
		t.Errorf("during grace the task said %q", body)
	}
	if ev := c.next(); !status(task.ID, "TASK_KILLED")(ev) {
		t.Fatalf("event after KILLING: %s", ev)
	}
	if el := time.Since(start); el < grace {
		t.Errorf("TASK_KILLED after %v, before the %v grace", el, grace)
	}
	if ev := c.next(); !status("", "TASK_STAGING")(ev) || ev.str("taskId") == task.ID {
		t.Fatalf("no replacement: %s", ev)
	}
}

// An abrupt death is silent: connections reset, the port refuses, and
// Marathon still lists the task until it is killed for real.
func TestKillTaskAbrupt(t *testing.T) {
	t.Parallel()
	s := startSim(t, Config{})
	c := dialEvents(t, s.URL(), "", "text/event-stream")
	task := mustCreate(t, s, AppSpec{ID: "/web", Instances: 1})[0]
	c.waitEvent("deployment", named("deployment_success"))

	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", task.Ports[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	_ = conn.SetReadDeadline(time.Now().Add(waitTimeout))
	buf := make([]byte, 4096)
	if _, err := conn.Read(buf); err != nil {
		t.Fatal(err)
	}

	if err := s.KillTask(task.ID, KillOptions{Abrupt: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(conn); err == nil {
		t.Error("open connection ended with FIN, want RST")
	}
	if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", task.Ports[0])); err == nil {
		c.Close()
		t.Error("dead task's port still accepts")
	}
	if ts := s.Tasks("/web"); len(ts) != 1 || ts[0].ID != task.ID || ts[0].State != "TASK_RUNNING" {
		t.Errorf("after abrupt death: %+v", ts)
	}
	s.Emit("marker", nil)
	if ev := c.next(); ev.str("eventType") != "marker" {
		t.Fatalf("abrupt death emitted %s", ev)
	}
	// Killing the zombie reports it and brings a replacement.
	if err := s.KillTask(task.ID, KillOptions{}); err != nil {
		t.Fatal(err)
	}
	c.waitEvent("killed", status(task.ID, "TASK_KILLED"))
	c.waitEvent("replacement", status("", "TASK_RUNNING"))
}

func TestKillTaskNoRestartAndState(t *testing.T) {
	t.Parallel()
	s := startSim(t, Config{RestartDelay: -1})
	c := dialEvents(t, s.URL(), "event_type=status_update_event&event_type=marker", "text/event-stream")
	tasks := mustCreate(t, s, AppSpec{ID: "/web", Instances: 2})
	if err := s.KillTask(tasks[0].ID, KillOptions{NoRestart: true, State: "TASK_FAILED"}); err != nil {
		t.Fatal(err)
	}
	c.waitEvent("failed", status(tasks[0].ID, "TASK_FAILED"))
	s.Emit("marker", nil)
	if ev := c.next(); ev.str("eventType") != "marker" {
		t.Fatalf("NoRestart kill was followed by %s", ev)
	}
	if ts := s.Tasks("/web"); len(ts) != 1 || ts[0].ID != tasks[1].ID {
		t.Errorf("after NoRestart kill: %+v", ts)
	}
	if err := s.KillTask(tasks[1].ID, KillOptions{State: "TASK_RUNNING"}); err == nil {
		t.Error("KillTask accepted a non-terminal state")
	}
	if err := s.KillTask("nope", KillOptions{}); err == nil {
		t.Error("KillTask of an unknown task succeeded")
	}
}

// Silently changes state without a single event, including the launches it
// causes later.
func TestSilently(t *testing.T) {
	t.Parallel()
	s := startSim(t, Config{RestartDelay: 10 * time.Millisecond})
	c := dialEvents(t, s.URL(), "", "text/event-stream")
	first := mustCreate(t, s, AppSpec{ID: "/web", Instances: 1})[0]
	c.waitEvent("deployment", named("deployment_success"))

	s.Silently(func() {
		if err := s.Scale("/web", 3); err != nil {
			t.Error(err)
		}
		if err := s.KillTask(first.ID, KillOptions{}); err != nil {
			t.Error(err)
		}
	})
	waitUntil(t, "three tasks without the first", func() bool {
		ts := s.Tasks("/web")
		return len(ts) == 3 && !slices.ContainsFunc(ts, func(ti TaskInfo) bool { return ti.ID == first.ID })
	})
	s.Emit("marker", nil)
	if ev := c.next(); ev.str("eventType") != "marker" {
		t.Fatalf("Silently leaked %s", ev)
	}
	var app struct {
		App struct {
			Instances int
			Tasks     []struct{ ID string }
		}
	}
	getJSON(t, s.URL()+"/v2/apps/web", &app)
	if app.App.Instances != 3 || len(app.App.Tasks) != 3 {
		t.Errorf("REST after Silently: %+v", app)
	}
}

// Close stops the server, streams and tasks, and leaves no goroutine behind.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	s := New(Config{Heartbeat: 5 * time.Millisecond})
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, AppSpec{ID: "/once", Instances: 2, Run: OneShotHello(false)})
	web := mustCreate(t, s, AppSpec{ID: "/web", Instances: 2, HealthCheck: &HealthCheck{Protocol: "TCP"}})
	if err := s.KillTask(web[0].ID, KillOptions{Grace: time.Hour}); err != nil {
		t.Fatal(err)
	}
	c := dialEvents(t, s.URL(), "", "text/event-stream")
	c.next()
	// A standby keeps a transport to its leader; Close drops it too.
	standby := New(Config{Leader: s.URL()})
	if err := standby.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(standby.URL() + "/v2/apps")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	standby.Close()
	s.Close()
	s.Close() // twice is fine
	if err := s.CreateApp(AppSpec{ID: "/late"}); err == nil {
		t.Error("CreateApp after Close succeeded")
	}
	c.deadline()
	if _, err := io.ReadAll(c.br); err != nil {
		t.Errorf("stream after Close: %v", err)
	}
	c.conn.Close()
	waitUntil(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}

// UpdateApp is a PUT of a new definition: api_post_event carries the new
// labels, new tasks start before the old ones are killed, and the service
// port stays.
func TestUpdateAppRestartsWithTheNewDefinition(t *testing.T) {
	t.Parallel()
	s := startSim(t, Config{})
	old := mustCreate(t, s, AppSpec{ID: "/web", Instances: 2, ServicePorts: []int{10500}})
	c := dialEvents(t, s.URL(), "", "text/event-stream")
	if err := s.UpdateApp(AppSpec{ID: "web", Instances: 2, Labels: map[string]string{"HAPROXY_0_MODE": "http"}}); err != nil {
		t.Fatal(err)
	}
	post := c.waitEvent("api_post_event", named("api_post_event"))
	if !strings.Contains(post.json, `"HAPROXY_0_MODE":"http"`) {
		t.Errorf("api_post_event without the new label: %s", post.json)
	}
	running := 0
	for running < 2 {
		ev := c.waitEvent("a status update", named("status_update_event"))
		switch ev.str("taskStatus") {
		case "TASK_RUNNING":
			running++
		case "TASK_KILLED":
			t.Fatalf("old task killed with %d of 2 new tasks running", running)
		}
	}
	for _, o := range old {
		c.waitEvent("old task killed", status(o.ID, "TASK_KILLED"))
	}
	var r struct {
		App struct {
			Labels          map[string]string
			PortDefinitions []struct{ Port int }
			Tasks           []struct{ ID string }
		}
	}
	getJSON(t, s.URL()+"/v2/apps/web", &r)
	if r.App.Labels["HAPROXY_0_MODE"] != "http" || len(r.App.PortDefinitions) != 1 || r.App.PortDefinitions[0].Port != 10500 || len(r.App.Tasks) != 2 {
		t.Errorf("after UpdateApp: %+v", r.App)
	}
	for _, tk := range r.App.Tasks {
		for _, o := range old {
			if tk.ID == o.ID {
				t.Errorf("old task %s still listed", o.ID)
			}
		}
	}
	if err := s.UpdateApp(AppSpec{ID: "/nope"}); !errors.Is(err, ErrUnknownApp) {
		t.Errorf("UpdateApp of an unknown app: %v", err)
	}
}
