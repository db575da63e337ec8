package marathon

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/pacer-lb/pacer/discovery"
)

func webApp() *fakeApp {
	return &fakeApp{ID: "/shop/web", Port: 10000, Tasks: []fakeTask{
		{ID: "shop_web.1", Host: "10.0.0.1", Port: 31001},
	}}
}

// The source subscribes before it takes the snapshot, and an event that
// arrives while the snapshot is on its way is held and applied on top of
// it: here a TASK_RUNNING for an app the snapshot brings routes without a
// per-app fetch (had it been applied before, the app would be unknown).
func TestSubscribeThenSnapshot(t *testing.T) {
	t.Parallel()
	f := newFakeMarathon(t, webApp())
	var src atomic.Pointer[Source] // set once startSource returns
	f.set(func(f *fakeMarathon) {
		f.onSnapshot = func() {
			// Only the first snapshot: send an event and wait until the
			// source has read it, so it is queued before the answer. This
			// runs on a server goroutine, so no t.Fatal here.
			f.set(func(f *fakeMarathon) { f.onSnapshot = nil })
			f.mu.Lock()
			st := f.streams[0] // subscribed before the snapshot: exists
			f.mu.Unlock()
			st.send(evStatusUpdate, statusUpdate("/shop/web", "shop_web.2", stateRunning, "10.0.0.2", 31002))
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				if s := src.Load(); s != nil && s.Status().Events >= 1 {
					return
				}
			}
			t.Error("event not read before the snapshot answer")
		}
	})
	s, tb := startSource(t, Config{URLs: []string{f.srv.URL}})
	src.Store(s)
	waitBackends(t, tb, "/shop/web", "shop_web.1@10.0.0.1:31001", "shop_web.2@10.0.0.2:31002")

	f.mu.Lock()
	var reqs []string
	for _, r := range f.requests {
		if !strings.HasPrefix(r, "/v2/leader?") { // leader discovery, before each subscription
			reqs = append(reqs, r)
		}
	}
	f.mu.Unlock()
	if len(reqs) < 2 || !strings.HasPrefix(reqs[0], "/v2/events?") || !strings.HasPrefix(reqs[1], "/v2/apps?") {
		t.Fatalf("requests = %q, want the subscription first, then the snapshot", reqs)
	}
	if !strings.Contains(reqs[0], "plan-format=light") || !strings.Contains(reqs[0], "event_type=status_update_event") {
		t.Errorf("subscription = %q", reqs[0])
	}
	if !strings.Contains(reqs[1], "embed=apps.tasks") || !strings.Contains(reqs[1], "embed=apps.readiness") {
		t.Errorf("snapshot = %q", reqs[1])
	}
	if n := f.count("/v2/apps/"); n != 0 {
		t.Errorf("%d per-app fetches, want 0", n)
	}
	st := s.Status()
	if !st.Synced || !st.Connected || st.Resyncs != 1 || st.LastSync.IsZero() || st.Name != "marathon" {
		t.Errorf("status = %+v", st)
	}
}

// status_update_event is a delta: a new task routes, and a kill removes it,
// without any fetch; a late TASK_RUNNING does not bring a killed task back.
func TestStatusUpdateDelta(t *testing.T) {
	t.Parallel()
	f := newFakeMarathon(t, webApp())
	s, tb := startSource(t, Config{URLs: []string{f.srv.URL}})
	waitBackends(t, tb, "/shop/web", "shop_web.1@10.0.0.1:31001")
	st := f.stream(0)

	st.send(evStatusUpdate, statusUpdate("/shop/web", "shop_web.2", stateStaging, "10.0.0.2", 31002))
	st.send(evStatusUpdate, statusUpdate("/shop/web", "shop_web.2", stateRunning, "10.0.0.2", 31002))
	waitBackends(t, tb, "/shop/web", "shop_web.1@10.0.0.1:31001", "shop_web.2@10.0.0.2:31002")

	st.send(evStatusUpdate, statusUpdate("/shop/web", "shop_web.1", stateKilling, "10.0.0.1", 31001))
	waitBackends(t, tb, "/shop/web", "shop_web.2@10.0.0.2:31002")
	task := tb.Snapshot().App("/shop/web").Tasks[0]
	if task.ID != "shop_web.1" || task.State != stateKilling || task.Routable {
		t.Errorf("killing task state = %+v", task)
	}
	st.send(evStatusUpdate, statusUpdate("/shop/web", "shop_web.1", stateKilled, "10.0.0.1", 31001))
	st.send(evStatusUpdate, statusUpdate("/shop/web", "shop_web.2", stateKilled, "10.0.0.2", 31002))
	// Out of order: a TASK_RUNNING after the kill must not resurrect it.
	st.send(evStatusUpdate, statusUpdate("/shop/web", "shop_web.2", stateRunning, "10.0.0.2", 31002))
	st.send(evStatusUpdate, statusUpdate("/shop/web", "shop_web.3", stateRunning, "10.0.0.3", 31003))
	waitBackends(t, tb, "/shop/web", "shop_web.3@10.0.0.3:31003")
	if n := len(tb.Snapshot().App("/shop/web").Tasks); n != 1 {
		t.Errorf("%d tasks, want 1", n)
	}

	if n := f.count("/v2/apps/"); n != 0 {
		t.Errorf("%d per-app fetches, want 0", n)
	}
	if n := f.countPath("/v2/apps"); n != 1 {
		t.Errorf("%d snapshots, want 1", n)
	}
	if got := s.Status().Events; got != 7 {
		t.Errorf("events = %d, want 7", got)
	}
}

// An app with health checks is re-fetched on TASK_RUNNING (the new task
// needs health results); a burst of events for one app coalesces.
func TestHealthCheckedAppRefetchCoalesces(t *testing.T) {
	t.Parallel()
	api := &fakeApp{ID: "/shop/api", Port: 10001, Checks: true, Tasks: []fakeTask{
		{ID: "shop_api.1", Host: "10.0.0.1", Port: 32001, Alive: ptr(true)},
	}}
	f := newFakeMarathon(t, api)
	s, tb := startSource(t, Config{URLs: []string{f.srv.URL}})
	waitBackends(t, tb, "/shop/api", "shop_api.1@10.0.0.1:32001")
	st := f.stream(0)

	// Marathon now knows the new task, without health results yet.
	f.set(func(f *fakeMarathon) {
		f.apps["/shop/api"].Tasks = append(f.apps["/shop/api"].Tasks, fakeTask{ID: "shop_api.2", Host: "10.0.0.2", Port: 32002})
	})
	st.send(evStatusUpdate, statusUpdate("/shop/api", "shop_api.2", stateRunning, "10.0.0.2", 32002))
	waitFor(t, "app fetch", func() bool { return f.count("/v2/apps/shop/api?") >= 1 })
	waitFor(t, "task listed", func() bool {
		a := tb.Snapshot().App("/shop/api")
		return a != nil && len(a.Tasks) == 2
	})
	if got := backends(tb, "/shop/api"); len(got) != 1 {
		t.Fatalf("unhealthy-yet task routed: %q", got)
	}
	if r := tb.Snapshot().App("/shop/api").Tasks[1].Reason; !strings.Contains(r, "waiting for health") {
		t.Errorf("reason = %q", r)
	}

	// Health turns green, and Marathon sends a burst of events that need
	// a fetch (instance_changed_event carries no health): held up by a
	// slow fetch, they cause one or two fetches, not twenty.
	gate := make(chan struct{})
	f.set(func(f *fakeMarathon) { f.apps["/shop/api"].Tasks[1].Alive = ptr(true); f.appGate = gate })
	before := f.count("/v2/apps/shop/api?")
	events := s.Status().Events
	for range 20 {
		st.send(evInstanceChanged, map[string]any{"runSpecId": "/shop/api", "instanceId": "shop_api.marathon-2", "condition": "Running"})
	}
	waitFor(t, "events read", func() bool { return s.Status().Events == events+20 })
	waitFor(t, "fetch in flight", func() bool { return f.count("/v2/apps/shop/api?") == before+1 })
	close(gate)
	waitBackends(t, tb, "/shop/api", "shop_api.1@10.0.0.1:32001", "shop_api.2@10.0.0.2:32002")
	// One fetch if the whole burst was drained at once, two if it was
	// split around the start of the first; three only if split twice.
	if n := f.count("/v2/apps/shop/api?") - before; n > 3 {
		t.Errorf("%d fetches for a burst of 20 events, want at most 3", n)
	}
}

// Deployment events re-fetch the apps their plan names; a 404 removes the app.
func TestDeploymentEventFetchesAndRemoves(t *testing.T) {
	t.Parallel()
	f := newFakeMarathon(t, webApp())
	_, tb := startSource(t, Config{URLs: []string{f.srv.URL}})
	waitBackends(t, tb, "/shop/web", "shop_web.1@10.0.0.1:31001")
	st := f.stream(0)

	f.set(func(f *fakeMarathon) {
		f.apps["/new"] = &fakeApp{ID: "/new", Port: 10005, Tasks: []fakeTask{{ID: "new.1", Host: "10.0.0.9", Port: 31009}}}
	})
	st.send(evDeploymentSuccess, map[string]any{"id": "d1", "plan": map[string]any{"id": "d1", "steps": []any{
		map[string]any{"actions": []any{map[string]any{"action": "StartApplication", "app": "/new"}}},
	}}})
	waitBackends(t, tb, "/new", "new.1@10.0.0.9:31009")

	f.set(func(f *fakeMarathon) { delete(f.apps, "/new") })
	st.send(evAppTerminated, map[string]any{"appId": "/new"})
	waitFor(t, "app removed", func() bool { return tb.Snapshot().App("/new") == nil })
	if tb.Snapshot().App("/shop/web") == nil {
		t.Fatal("unrelated app removed")
	}
}

// A stream that ends causes a reconnect and a full resync.
func TestStreamCloseReconnectsAndResyncs(t *testing.T) {
	t.Parallel()
	f := newFakeMarathon(t, webApp())
	s, tb := startSource(t, Config{URLs: []string{f.srv.URL}})
	waitBackends(t, tb, "/shop/web", "shop_web.1@10.0.0.1:31001")

	// While disconnected, Marathon changes and the event is missed.
	f.set(func(f *fakeMarathon) {
		f.apps["/shop/web"].Tasks = []fakeTask{{ID: "shop_web.9", Host: "10.0.0.9", Port: 31009}}
	})
	f.stream(0).close()
	waitBackends(t, tb, "/shop/web", "shop_web.9@10.0.0.9:31009")
	f.stream(1)
	waitFor(t, "status", func() bool {
		st := s.Status()
		return st.Reconnects == 1 && st.Resyncs == 2 && st.Connected
	})
	if n := f.countPath("/v2/events"); n != 2 {
		t.Errorf("%d subscriptions, want 2", n)
	}
	if e := s.Status().LastError; !strings.Contains(e, "closed by Marathon") {
		t.Errorf("LastError = %q", e)
	}
}

// A snapshot that fails in any way keeps the last good table and shows the
// error; the next good one is applied.
func TestBadSnapshotKeepsLastGoodTable(t *testing.T) {
	t.Parallel()
	f := newFakeMarathon(t, webApp())
	s, tb := startSource(t, Config{URLs: []string{f.srv.URL}})
	waitBackends(t, tb, "/shop/web", "shop_web.1@10.0.0.1:31001")
	good := tb.Snapshot()

	bad := []struct {
		name   string
		status int
		body   string
		errHas string
	}{
		{"500", http.StatusInternalServerError, "", "HTTP 500"},
		{"garbage", 0, "<html>Bad Gateway</html>", "decoding apps"},
		{"half JSON", 0, `{"apps":[{"id":"/shop/web","tasks":[`, "decoding apps"},
		{"no apps", 0, `{"message":"Could not determine the current leader"}`, `no "apps"`},
	}
	for _, b := range bad {
		f.set(func(f *fakeMarathon) { f.appsStatus, f.appsBody = b.status, b.body })
		before := s.Status().ErrorAt
		s.Resync()
		waitFor(t, b.name+" error", func() bool { return s.Status().ErrorAt.After(before) })
		if e := s.Status().LastError; !strings.Contains(e, b.errHas) {
			t.Errorf("%s: LastError = %q, want %q", b.name, e, b.errHas)
		}
		if tb.Snapshot() != good {
			t.Fatalf("%s: table changed", b.name)
		}
	}
	f.set(func(f *fakeMarathon) {
		f.appsStatus, f.appsBody = 0, ""
		f.apps["/shop/web"].Tasks[0].Port = 31111
	})
	waitBackends(t, tb, "/shop/web", "shop_web.1@10.0.0.1:31111") // the retry after backoff
	if !s.Status().Synced {
		t.Error("not synced")
	}
}

// Marathon down at start: retry forever, no update until it answers.
func TestMarathonDownAtStart(t *testing.T) {
	t.Parallel()
	f := newFakeMarathon(t, webApp())
	f.set(func(f *fakeMarathon) {
		f.eventsCode, f.appsStatus = http.StatusServiceUnavailable, http.StatusServiceUnavailable
	})
	s, tb := startSource(t, Config{URLs: []string{f.srv.URL}})
	waitFor(t, "retries", func() bool { return f.countPath("/v2/events") >= 3 })
	if tb.Snapshot().Version() != 0 || s.Status().Synced {
		t.Fatal("published while Marathon was down")
	}
	if e := s.Status().LastError; !strings.Contains(e, "503") {
		t.Errorf("LastError = %q", e)
	}
	f.set(func(f *fakeMarathon) { f.eventsCode, f.appsStatus = 0, 0 })
	waitBackends(t, tb, "/shop/web", "shop_web.1@10.0.0.1:31001")
	waitFor(t, "connected", func() bool { return s.Status().Connected })
}

// Marathon 1.7+ redirects /v2/events on a standby to the leader; the
// credentials must follow, and never show in Status.
func TestRedirectKeepsAuthorization(t *testing.T) {
	t.Parallel()
	leader := newFakeMarathon(t, webApp())
	const basic = "Basic dXNlcjpzM2NyZXQ=" // user:s3cret
	leader.set(func(f *fakeMarathon) { f.wantAuth = basic })
	standby := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/events" {
			http.Redirect(w, r, leader.srv.URL+r.URL.RequestURI(), http.StatusFound)
			return
		}
		// Other endpoints are proxied by a standby; redirecting is enough here.
		http.Redirect(w, r, leader.srv.URL+r.URL.RequestURI(), http.StatusTemporaryRedirect)
	}))
	t.Cleanup(standby.Close)
	// 127.0.0.1 vs localhost: a different host, so net/http drops the header.
	url := strings.Replace(standby.URL, "http://127.0.0.1", "http://user:s3cret@localhost", 1)
	s, tb := startSource(t, Config{URLs: []string{url}})
	waitBackends(t, tb, "/shop/web", "shop_web.1@10.0.0.1:31001")
	waitFor(t, "connected", func() bool { return s.Status().Connected })
	leader.mu.Lock()
	for i, a := range leader.auth {
		if a != basic {
			t.Errorf("leader request %s had Authorization %q", leader.requests[i], a)
		}
	}
	leader.mu.Unlock()
	if ep := s.Status().Endpoint; strings.Contains(ep, "s3cret") || strings.Contains(ep, "user") {
		t.Errorf("Endpoint %q shows credentials", ep)
	}
}

func TestTokenAuthAndRedaction(t *testing.T) {
	t.Parallel()
	f := newFakeMarathon(t, webApp())
	f.set(func(f *fakeMarathon) { f.wantAuth = "token=right" })
	s, _ := startSource(t, Config{URLs: []string{f.srv.URL}, Token: "wrong-secret-token"})
	waitFor(t, "401", func() bool { return strings.Contains(s.Status().LastError, "401") })
	if e := s.Status().LastError; strings.Contains(e, "wrong-secret-token") || !strings.Contains(e, "credentials") {
		t.Errorf("LastError = %q", e)
	}
}

// A stream silent past StreamIdleTimeout is dead; heartbeats keep it alive.
//
// Not parallel: it measures time, and the CPU-heavy decode tests running
// beside it under -race on two cores could starve the heartbeat writer.
func TestIdleStreamDetection(t *testing.T) {
	f := newFakeMarathon(t, webApp())
	s, _ := startSource(t, Config{URLs: []string{f.srv.URL}, StreamIdleTimeout: 500 * time.Millisecond})
	f.stream(0) // never sends a byte
	f.stream(1)
	waitFor(t, "reconnect", func() bool { return s.Status().Reconnects >= 1 })
	if e := s.Status().LastError; !strings.Contains(e, "silent") {
		t.Errorf("LastError = %q", e)
	}

	// With Jetty's split heartbeat (here every 50 ms) streams live on.
	f.set(func(f *fakeMarathon) { f.heartbeat = true })
	time.Sleep(600 * time.Millisecond) // a stream already dying may still reconnect
	n := f.countPath("/v2/events")
	time.Sleep(1500 * time.Millisecond) // three idle timeouts
	if got := f.countPath("/v2/events"); got != n {
		t.Errorf("reconnected %d times despite heartbeats; last error %q", got-n, s.Status().LastError)
	}
}

// Groups, SelfAppID and an undecodable app stay within their own app.
func TestGroupsSelfAndBadApps(t *testing.T) {
	t.Parallel()
	ext := &fakeApp{ID: "/ext", Port: 10010, Labels: map[string]string{"HAPROXY_GROUP": "external,edge"},
		Tasks: []fakeTask{{ID: "ext.1", Host: "10.0.0.1", Port: 1}}}
	internal := &fakeApp{ID: "/int", Port: 10011, Labels: map[string]string{"PACER_GROUP": "internal"}}
	self := &fakeApp{ID: "/pacer", Port: 10012, Labels: map[string]string{"HAPROXY_GROUP": "edge"}}
	badLabel := &fakeApp{ID: "/badlabel", Port: 10013, Labels: map[string]string{"HAPROXY_GROUP": "edge", "HAPROXY_0_BALANCE": "uri"},
		Tasks: []fakeTask{{ID: "badlabel.1", Host: "10.0.0.1", Port: 2}}}
	f := newFakeMarathon(t, ext, internal, self, badLabel)
	src, tb := startSource(t, Config{URLs: []string{f.srv.URL}, Groups: []string{"edge"}, SelfAppID: "pacer"})
	waitBackends(t, tb, "/ext", "ext.1@10.0.0.1:1")
	snap := tb.Snapshot()
	if snap.App("/int") != nil || snap.App("/pacer") != nil {
		t.Errorf("apps outside the group or pacer itself routed: %v", snap.Apps())
	}
	bad := snap.App("/badlabel")
	if bad == nil || !strings.Contains(bad.Problem, "HAPROXY_0_BALANCE") || len(bad.Services) != 0 ||
		len(bad.Tasks) != 1 || bad.Tasks[0].Routable || bad.Tasks[0].Reason == "" {
		t.Errorf("bad app = %+v", bad)
	}
	if snap.Service(10010) == nil {
		t.Error("good app lost its port")
	}
	// A label pacer cannot read is the app's problem, not a decode error:
	// that counter is for what Marathon sent that does not parse.
	if n := src.Status().DecodeErrors; n != 0 {
		t.Errorf("decode errors = %d for a bad label", n)
	}

	// A list naming "*" serves every app, whatever else it names.
	_, all := startSource(t, Config{URLs: []string{f.srv.URL}, Groups: []string{"edge", "*"}, SelfAppID: "pacer"})
	waitBackends(t, all, "/ext", "ext.1@10.0.0.1:1")
	if snap := all.Snapshot(); snap.App("/int") == nil {
		t.Errorf("groups edge,* left out the internal app: %v", snap.Apps())
	}
}

func TestNewValidatesURLs(t *testing.T) {
	t.Parallel()
	tb := discovery.NewTable()
	for _, tt := range []struct{ url, errHas string }{
		{"", "scheme"},
		{"ftp://m:8080", "scheme"},
		{"http://", "no host"},
		{"http://user:hunter2@m:99999", "bad port"},
		{"http://user:hunter2@m:8080/?x=1", "query"},
		{"http://user:hunter2@m :8080", "bad URL"},
	} {
		_, err := New(Config{URLs: []string{tt.url}}, tb, nil)
		if err == nil || !strings.Contains(err.Error(), tt.errHas) {
			t.Errorf("New(%q) = %v, want an error with %q", tt.url, err, tt.errHas)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error shows the password: %v", err)
		}
	}
	if _, err := New(Config{}, tb, nil); err == nil {
		t.Error("no URLs accepted")
	}
	if _, err := New(Config{URLs: []string{"http://m:8080"}, HTTPClient: &http.Client{Timeout: time.Second}}, tb, nil); err == nil {
		t.Error("HTTPClient with Timeout accepted")
	}
	s, err := New(Config{URLs: []string{"https://u:p@m1:8443/service/marathon/", "http://m2:8080"}}, tb, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ep := s.Status().Endpoint; ep != "https://m1:8443/service/marathon/" {
		t.Errorf("Endpoint = %q", ep)
	}
}

// URLs are tried in order and the last good one sticks.
func TestFailoverSticksToGoodURL(t *testing.T) {
	t.Parallel()
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no leader", http.StatusBadGateway)
	}))
	t.Cleanup(down.Close)
	f := newFakeMarathon(t, webApp())
	s, tb := startSource(t, Config{URLs: []string{down.URL, f.srv.URL}})
	waitBackends(t, tb, "/shop/web", "shop_web.1@10.0.0.1:31001")
	if ep := s.Status().Endpoint; ep != f.srv.URL {
		t.Errorf("Endpoint = %q, want %q", ep, f.srv.URL)
	}
}

// A status update for an app the source does not know fetches that app.
func TestUnknownAppEventFetchesIt(t *testing.T) {
	t.Parallel()
	f := newFakeMarathon(t, webApp())
	_, tb := startSource(t, Config{URLs: []string{f.srv.URL}})
	waitBackends(t, tb, "/shop/web", "shop_web.1@10.0.0.1:31001")
	f.set(func(f *fakeMarathon) {
		f.apps["/late"] = &fakeApp{ID: "/late", Port: 10007, Tasks: []fakeTask{{ID: "late.1", Host: "10.0.0.7", Port: 31007}}}
	})
	f.stream(0).send(evStatusUpdate, statusUpdate("/late", "late.1", stateRunning, "10.0.0.7", 31007))
	waitBackends(t, tb, "/late", "late.1@10.0.0.7:31007")
	if n := f.count("/v2/apps/late?"); n != 1 {
		t.Errorf("%d fetches of /late, want 1", n)
	}
}

// Full resyncs also run every ResyncInterval, whatever the stream says.
func TestPeriodicResync(t *testing.T) {
	t.Parallel()
	f := newFakeMarathon(t, webApp())
	s, tb := startSource(t, Config{URLs: []string{f.srv.URL}, ResyncInterval: 50 * time.Millisecond})
	waitBackends(t, tb, "/shop/web", "shop_web.1@10.0.0.1:31001")
	// An event Marathon dropped (pre-1.8 slow consumer): only a resync heals.
	f.set(func(f *fakeMarathon) { f.apps["/shop/web"].Tasks[0].Host = "10.0.0.2" })
	waitBackends(t, tb, "/shop/web", "shop_web.1@10.0.0.2:31001")
	waitFor(t, "resyncs", func() bool { return s.Status().Resyncs >= 3 })
}

// An operator who saw the event stream said down at warn sees it said back
// at info: also after a stream that died young, whose reconnections the
// flap damping (Source.flapErr) says at debug only once the same flap
// repeats.
func TestStreamBackIsSaidAfterADropWasWarned(t *testing.T) {
	t.Parallel()
	f := newFakeMarathon(t, webApp())
	_, tb, logs := startLogged(t, Config{URLs: []string{f.srv.URL}})
	waitBackends(t, tb, "/shop/web", "shop_web.1@10.0.0.1:31001")
	f.stream(0).close()
	f.stream(1)
	waitFor(t, "the disconnection said at warn, then the reconnection at info", func() bool {
		var down, back bool
		for _, e := range logs.All() {
			switch {
			case e.Message == "event stream disconnected; reconnecting" && e.Level == zapcore.WarnLevel:
				down = true
			case e.Message == "connected to the event stream" && e.Level == zapcore.InfoLevel && down:
				back = true
			}
		}
		return back
	})
}

// A Marathon that refuses connections is reported by path and endpoint,
// not by the request's whole URL: the event stream's carries every
// event_type parameter, some 900 characters in every log line and in
// /v1/services' last error.
func TestConnectErrorNamesThePathNotTheWholeURL(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: connections are refused
	s, _, logs := startLogged(t, Config{URLs: []string{"http://" + addr}})
	waitFor(t, "the refused event stream reported", func() bool { return logged(logs, "/v2/events") })
	for _, e := range logs.All() {
		if line := fmt.Sprint(e.Message, e.ContextMap()); strings.Contains(line, "event_type=") {
			t.Errorf("logged with the whole URL (%d characters): %s", len(line), line)
		}
	}
	if st := s.Status(); strings.Contains(st.LastError, "event_type=") || !strings.Contains(st.LastError, "connection refused") {
		t.Errorf("LastError = %q; want the refusal, without the URL's query", st.LastError)
	}
}

// A stream that sends the same undecodable event on every connection (a
// proxy in front of Marathon that mangles it) is warned of once, not on
// every reconnect; each one still counts as a decode error and resyncs.
func TestSameUndecodableEventWarnedOnce(t *testing.T) {
	t.Parallel()
	f := newFakeMarathon(t, webApp())
	s, tb, logs := startLogged(t, Config{URLs: []string{f.srv.URL}})
	waitBackends(t, tb, "/shop/web", "shop_web.1@10.0.0.1:31001")
	for n := range 3 {
		st := f.stream(n)
		st.events <- "event: status_update_event\r\ndata: {\"eventType\":\"status_update_event\",\"taskId\":\r\n\r\n"
		waitFor(t, "the garbage counted", func() bool { return s.Status().DecodeErrors == uint64(n+1) })
		st.close()
	}
	if n := logs.FilterMessage("cannot decode event; resyncing").FilterLevelExact(zapcore.WarnLevel).Len(); n != 1 {
		t.Errorf("the same garbage on 3 connections warned of %d times, want once", n)
	}
}
