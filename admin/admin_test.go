package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/dnsserver"
	"github.com/pacer-lb/pacer/proxy"
	"github.com/pacer-lb/pacer/proxy/httpproxy"
)

// fakeSource reports st. Tests that serve the admin handler to another
// goroutine while they change st do so through set.
type fakeSource struct {
	mu sync.Mutex
	st discovery.SourceStatus
}

func (f *fakeSource) Status() discovery.SourceStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

func (f *fakeSource) set(change func(*discovery.SourceStatus)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(&f.st)
}

func newTestServer(t *testing.T) (*Server, *discovery.Table, *fakeSource) {
	t.Helper()
	table := discovery.NewTable()
	src := &fakeSource{st: discovery.SourceStatus{Name: "marathon", Endpoint: "http://marathon:8080"}}
	s, err := New(Deps{
		Table:   table,
		Sources: []discovery.StatusReporter{src},
		Ports: func() []proxy.PortStatus {
			// One port on both planes, as during a mode change's drain:
			// two series, told apart by plane.
			// 8002 fails to bind; 9500 is outside --ports (no plane).
			return []proxy.PortStatus{{Port: 8000, Plane: "tcp", Listening: true, Active: 2, Total: 10}, {Port: 8000, Plane: "http", Active: 1, Total: 3},
				{Port: 8002, Plane: "tcp", Error: "address already in use", BindFailing: true}, {Port: 9500, Error: "outside --ports 8000-8100; not bound"}}
		},
		HTTP: func() []httpproxy.ServiceStats {
			return []httpproxy.ServiceStats{{App: "/shop/web", ServicePort: 8001, Responses: [5]uint64{0, 9, 0, 1, 1}, Own: [3]uint64{0, 1, 0},
				LatencyCounts: make([]uint64, len(httpproxy.LatencyBuckets)+1)}}
		},
		DNS: func() dnsserver.Stats {
			return dnsserver.Stats{Queries: map[string]uint64{"SRV": 3}, Responses: map[string]uint64{"NOERROR": 3}}
		},
		ConnLimit: func() proxy.ConnLimitStatus {
			return proxy.ConnLimitStatus{Max: 7000, Open: 7000, Limited: true, LowMark: 6300, Reached: 2}
		},
	}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	return s, table, src
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec.Code, rec.Body.String()
}

func webApp() *discovery.App {
	return &discovery.App{ID: "/shop/web", Services: []*discovery.Service{{
		Key: discovery.ServiceKey{App: "/shop/web"}, Name: "web-shop", ServicePort: 8000,
		Backends: []discovery.Backend{{TaskID: "shop_web.1", Host: "10.0.0.1", Addr: netip.MustParseAddrPort("10.0.0.1:31000")}},
	}}, Tasks: []discovery.TaskState{
		{ID: "shop_web.1", State: "TASK_RUNNING", Routable: true},
		{ID: "shop_web.2", State: "TASK_STAGING", Reason: "not running yet"},
	}}
}

func TestHealthzLifecycle(t *testing.T) {
	t.Parallel()
	s, table, src := newTestServer(t)
	h := s.Handler()
	if code, body := get(t, h, "/healthz"); code != 503 || !strings.Contains(body, "waiting for the first sync") {
		t.Fatalf("before sync: %d %s", code, body)
	}
	table.Apply(discovery.Update{Source: "marathon", Full: true, Apps: []*discovery.App{webApp()}})
	src.st.Synced, src.st.Connected, src.st.LastSync = true, true, time.Now()
	if code, body := get(t, h, "/healthz"); code != 200 || !strings.Contains(body, `"status": "ok"`) {
		t.Fatalf("synced: %d %s", code, body)
	}
	// The stream up but the snapshot failing: still 200, but stale, saying
	// why and since when, in /healthz and in /metrics.
	src.st.Behind, src.st.BehindSince = "full resync (GET /v2/apps) failing: 500", time.Now()
	if code, body := get(t, h, "/healthz"); code != 200 || !strings.Contains(body, `"status": "stale"`) || !strings.Contains(body, "GET /v2/apps) failing: 500, since") {
		t.Fatalf("behind: %d %s", code, body)
	}
	if _, body := get(t, h, "/metrics"); !strings.Contains(body, `pacer_source_current{source="marathon"} 0`) {
		t.Fatalf("behind: metrics lack pacer_source_current 0:\n%s", body)
	}
	src.st.Behind, src.st.BehindSince = "", time.Time{}
	// Marathon lost: still 200 (the last good table serves), but stale.
	src.st.Connected = false
	if code, body := get(t, h, "/healthz"); code != 200 || !strings.Contains(body, `"status": "stale"`) || !strings.Contains(body, "sync_age") {
		t.Fatalf("stale: %d %s", code, body)
	}
	if code, _ := get(t, h, "/_haproxy_health_check"); code != 200 {
		t.Fatalf("marathon-lb health URI: %d", code)
	}
	s.SetDraining()
	if code, body := get(t, h, "/healthz"); code != 503 || !strings.Contains(body, "draining") {
		t.Fatalf("draining: %d %s", code, body)
	}
}

func TestServicesShowsBackendsAndReasons(t *testing.T) {
	t.Parallel()
	s, table, _ := newTestServer(t)
	table.Apply(discovery.Update{Source: "marathon", Apps: []*discovery.App{webApp(),
		{ID: "/broken", Problem: `label HAPROXY_0_PORT: "x" is not a port`}}})
	code, body := get(t, s.Handler(), "/v1/services")
	if code != 200 {
		t.Fatal(code)
	}
	var v servicesView
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Apps) != 2 || v.Apps[0].ID != "/broken" || v.Apps[0].Problem == "" {
		t.Fatalf("apps = %+v", v.Apps)
	}
	web := v.Apps[1]
	if len(web.Services) != 1 || !web.Services[0].Serving || len(web.Services[0].Backends) != 1 || web.Services[0].Backends[0].Addr != "10.0.0.1:31000" {
		t.Fatalf("web = %+v", web)
	}
	if web.Tasks[1].Reason != "not running yet" {
		t.Fatalf("non-routed task reason lost: %+v", web.Tasks)
	}
}

func TestMetricsPassPromtool(t *testing.T) {
	t.Parallel()
	s, table, src := newTestServer(t)
	table.Apply(discovery.Update{Source: "marathon", Apps: []*discovery.App{webApp()}})
	src.st.Synced, src.st.LastSync, src.st.Events = true, time.Now(), 7
	src.st.EventsByType = map[string]uint64{"status_update_event": 5, "api_post_event": 2}
	code, body := get(t, s.Handler(), "/metrics")
	if code != 200 {
		t.Fatal(code)
	}
	for _, want := range []string{
		`pacer_service_backends{app="/shop/web",port_index="0",service_port="8000"} 1`,
		`pacer_source_events_total{source="marathon"} 7`,
		`pacer_source_events_by_type_total{source="marathon",type="status_update_event"} 5`,
		`pacer_tcp_connections_active{port="8000",plane="tcp"} 2`,
		`pacer_tcp_connections_active{port="8000",plane="http"} 1`,
		`pacer_tcp_bind_failing{port="8002",plane="tcp"} 1`,
		`pacer_tcp_bind_failing{port="8000",plane="tcp"} 0`,
		`pacer_dns_queries_total{qtype="SRV"} 3`,
		`pacer_tcp_max_conns 7000`,
		`pacer_tcp_connections_open 7000`,
		`pacer_tcp_max_conns_reached 1`,
		`pacer_tcp_max_conns_reached_total 2`,
		`pacer_http_responses_total{app="/shop/web",port_index="0",service_port="8001",code="2xx"} 9`,
		`pacer_http_own_responses_total{app="/shop/web",port_index="0",service_port="8001",code="503"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(body, `port="9500"`) {
		t.Error("metrics have series for a port outside --ports, which has no listener")
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: run `make test`, which installs Debian's prometheus package")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out.String())
	}
}

func TestResyncEndpoint(t *testing.T) {
	t.Parallel()
	table := discovery.NewTable()
	called := 0
	s, err := New(Deps{Table: table, Resync: func() { called++ }}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("POST", "/v1/resync", nil))
	if rec.Code != http.StatusAccepted || called != 1 {
		t.Fatalf("POST /v1/resync: %d, resync called %d times", rec.Code, called)
	}
	rec = httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/v1/resync", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /v1/resync: %d, want 405", rec.Code)
	}
}

// POST /v1/resync costs Marathon a full snapshot of every app and task, and
// the admin port answers anyone who reaches it: a burst of requests starts
// one resync now and schedules one more at the end of the minimum gap (so a
// change made meanwhile is still picked up), not one resync each.
func TestResyncRequestsAreSpacedOut(t *testing.T) {
	t.Parallel()
	called := make(chan struct{}, 100)
	newServer := func(gap time.Duration) *Server {
		s, err := New(Deps{Table: discovery.NewTable(), Resync: func() { called <- struct{}{} }}, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		s.resyncs.gap = gap
		return s
	}
	post := func(s *Server) string {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest("POST", "/v1/resync", nil))
		if rec.Code != http.StatusAccepted {
			t.Fatalf("POST /v1/resync: %d %s", rec.Code, rec.Body.String())
		}
		return rec.Body.String()
	}

	// A gap longer than the test: only the first request starts a resync.
	s := newServer(time.Hour)
	for i := range 50 {
		body := post(s)
		if i > 0 && !strings.Contains(body, "resync scheduled in") {
			t.Fatalf("request %d within the gap: %s", i, body)
		}
	}
	if n := len(called); n != 1 {
		t.Fatalf("50 requests within the gap started %d resyncs, want 1", n)
	}
	<-called
	_ = s.Shutdown(context.Background()) // cancels the scheduled one

	// A short gap: the request made within it still gets its resync, once
	// the gap is over.
	s = newServer(10 * time.Millisecond)
	defer s.Shutdown(context.Background())
	post(s)
	post(s)
	post(s)
	for i := range 2 {
		select {
		case <-called:
		case <-time.After(10 * time.Second):
			t.Fatalf("resync %d of 2 never started", i+1)
		}
	}
}
