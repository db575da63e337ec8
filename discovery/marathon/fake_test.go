package marathon

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pacer-lb/pacer/discovery"
)

// fakeTask and fakeApp describe what the fake Marathon serves.
type fakeTask struct {
	ID, Host, State string
	Port            int
	Alive           *bool // nil: no health results
}

type fakeApp struct {
	ID     string
	Port   int // service port
	Checks bool
	Labels map[string]string
	Tasks  []fakeTask
}

func (a *fakeApp) json() map[string]any {
	tasks := []any{}
	for _, t := range a.Tasks {
		state := t.State
		if state == "" {
			state = stateRunning
		}
		hr := []any{}
		if t.Alive != nil {
			hr = append(hr, map[string]any{"alive": *t.Alive, "instanceId": t.ID})
		}
		tasks = append(tasks, map[string]any{
			"id": t.ID, "appId": a.ID, "host": t.Host, "ports": []int{t.Port}, "state": state,
			"ipAddresses": []any{}, "healthCheckResults": hr, "startedAt": "2020-03-05T10:15:07.331Z",
		})
	}
	checks := []any{}
	if a.Checks {
		checks = append(checks, map[string]any{"protocol": "HTTP", "portIndex": 0, "path": "/"})
	}
	labels := a.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	return map[string]any{
		"id": a.ID, "version": "2020-03-05T10:14:50.512Z", "networks": []any{map[string]any{"mode": "host"}},
		"portDefinitions": []any{map[string]any{"port": a.Port, "protocol": "tcp"}},
		"labels":          labels, "healthChecks": checks, "tasks": tasks,
		"tasksRunning": len(a.Tasks), "deployments": []any{},
	}
}

// fakeMarathon is a minimal Marathon over httptest: /v2/events, /v2/apps and
// /v2/apps/{id}, with knobs to make each misbehave, and a request log.
type fakeMarathon struct {
	t   *testing.T
	srv *httptest.Server

	mu         sync.Mutex
	apps       map[string]*fakeApp
	requests   []string      // "path?query" in arrival order
	auth       []string      // Authorization of each request
	appsStatus int           // non-zero: /v2/apps answers this status
	appsBody   string        // non-empty: /v2/apps answers this body
	eventsCode int           // non-zero: /v2/events answers this status
	onSnapshot func()        // called before /v2/apps answers
	wantAuth   string        // non-empty: requests without it get 401
	heartbeat  bool          // streams send Jetty's split heartbeat every 50 ms
	appGate    chan struct{} // non-nil: /v2/apps/{id} waits for it to close
	streams    []*fakeStream
}

type fakeStream struct {
	events chan string
	closed chan struct{}
	once   sync.Once
}

func (s *fakeStream) close() { s.once.Do(func() { close(s.closed) }) }

func newFakeMarathon(t *testing.T, apps ...*fakeApp) *fakeMarathon {
	f := &fakeMarathon{t: t, apps: map[string]*fakeApp{}}
	for _, a := range apps {
		f.apps[a.ID] = a
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(func() {
		f.mu.Lock()
		for _, s := range f.streams {
			s.close()
		}
		f.mu.Unlock()
		f.srv.Close()
	})
	return f
}

func (f *fakeMarathon) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests = append(f.requests, r.URL.Path+"?"+r.URL.RawQuery)
	f.auth = append(f.auth, r.Header.Get("Authorization"))
	wantAuth := f.wantAuth
	f.mu.Unlock()
	if wantAuth != "" && r.Header.Get("Authorization") != wantAuth {
		http.Error(w, `{"message":"Unauthorized"}`, http.StatusUnauthorized)
		return
	}
	switch {
	case r.URL.Path == "/v2/events":
		f.serveEvents(w, r)
	case r.URL.Path == "/v2/apps":
		f.mu.Lock()
		hook := f.onSnapshot
		f.mu.Unlock()
		if hook != nil {
			hook()
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.appsStatus != 0 {
			http.Error(w, `{"message":"boom"}`, f.appsStatus)
			return
		}
		if f.appsBody != "" {
			_, _ = w.Write([]byte(f.appsBody))
			return
		}
		var list []any
		for _, a := range f.apps {
			list = append(list, a.json())
		}
		if list == nil {
			list = []any{}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"apps": list})
	case strings.HasPrefix(r.URL.Path, "/v2/apps/"):
		f.mu.Lock()
		gate := f.appGate
		f.mu.Unlock()
		if gate != nil {
			<-gate
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		id := strings.TrimPrefix(r.URL.Path, "/v2/apps")
		a := f.apps[id]
		if a == nil {
			w.WriteHeader(http.StatusNotFound)
			_, _ = fmt.Fprintf(w, `{"message":"App '%s' does not exist"}`, id)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"app": a.json()})
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeMarathon) serveEvents(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Accept") != "text/event-stream" {
		http.Error(w, "HTTP method GET is not supported by this URL", http.StatusMethodNotAllowed)
		return
	}
	f.mu.Lock()
	code := f.eventsCode
	f.mu.Unlock()
	if code != 0 {
		http.Error(w, `{"message":"no leader"}`, code)
		return
	}
	// Registered before the 200 goes out, so a test reacting to the
	// subscription (the snapshot request) always finds it.
	s := &fakeStream{events: make(chan string, 100), closed: make(chan struct{})}
	f.mu.Lock()
	f.streams = append(f.streams, s)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "text/event-stream;charset=utf-8")
	w.WriteHeader(http.StatusOK)
	fl := w.(http.Flusher)
	fl.Flush()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			f.mu.Lock()
			hb := f.heartbeat
			f.mu.Unlock()
			if hb {
				_, _ = w.Write([]byte("\r"))
				fl.Flush()
				_, _ = w.Write([]byte("\n"))
				fl.Flush()
			}
		case ev := <-s.events:
			_, _ = w.Write([]byte(ev))
			fl.Flush()
		case <-s.closed:
			return
		case <-r.Context().Done():
			return
		}
	}
}

// stream returns the n-th stream (0-based), waiting for it to connect.
func (f *fakeMarathon) stream(n int) *fakeStream {
	f.t.Helper()
	waitFor(f.t, fmt.Sprintf("stream %d", n), func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.streams) > n
	})
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.streams[n]
}

// send writes one event as Jetty frames it, with the heartbeat after it
// split in two writes.
func (s *fakeStream) send(eventType string, data map[string]any) {
	data["eventType"] = eventType
	b, _ := json.Marshal(data)
	s.events <- "event: " + eventType + "\r\ndata: " + string(b) + "\r\n\r\n"
	s.events <- "\r"
	s.events <- "\n"
}

func (f *fakeMarathon) count(prefix string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, r := range f.requests {
		if strings.HasPrefix(r, prefix) {
			n++
		}
	}
	return n
}

// countPath counts requests for exactly this path.
func (f *fakeMarathon) countPath(path string) int { return f.count(path + "?") }

func (f *fakeMarathon) set(fn func(f *fakeMarathon)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// startSource runs a Source against urls until the test ends.
func startSource(t *testing.T, cfg Config) (*Source, *discovery.Table) {
	t.Helper()
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin = 10 * time.Millisecond
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = 50 * time.Millisecond
	}
	table := discovery.NewTable()
	s, err := New(cfg, table, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	runSource(t, s, nil)
	return s, table
}

// runSource runs s until the test ends; the cleanup checks that Run returns
// nil promptly after cancel, then calls after (if set).
func runSource(t *testing.T, s *Source, after func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
		if after != nil {
			after()
		}
	})
}

// backends lists "task@addr" of an app's first service in the table.
func backends(tb *discovery.Table, app string) []string {
	a := tb.Snapshot().App(app)
	if a == nil || len(a.Services) == 0 {
		return nil
	}
	var out []string
	for _, b := range a.Services[0].Backends {
		out = append(out, b.TaskID+"@"+b.Addr.String())
	}
	return out
}

func waitBackends(t *testing.T, tb *discovery.Table, app string, want ...string) {
	t.Helper()
	var have []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The table seen last is what the failure shows, not the one
		// before the wait (usually empty).
		if have = backends(tb, app); slices.Equal(have, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s backends %q (have %q)", app, want, have)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func statusUpdate(app, taskID, status, host string, port int) map[string]any {
	return map[string]any{
		"slaveId": "S1", "taskId": taskID, "taskStatus": status, "message": "", "appId": app,
		"host": host, "ipAddresses": []any{}, "ports": []int{port}, "version": "2020-03-05T10:14:50.512Z",
		"timestamp": "2020-03-05T10:15:07.331Z",
	}
}

func ptr[T any](v T) *T { return &v }
