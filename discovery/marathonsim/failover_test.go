package marathonsim

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// After ForgetHealth every task lists healthCheckResults [], as on a new
// leader; SetHealth records results again.
func TestForgetHealth(t *testing.T) {
	t.Parallel()
	s := startSim(t, Config{})
	tasks := mustCreate(t, s, AppSpec{ID: "/web", Instances: 2, HealthCheck: &HealthCheck{Path: "/"}})
	waitUntil(t, "health results", func() bool {
		for _, ti := range s.Tasks("/web") {
			if ti.Healthy == nil {
				return false
			}
		}
		return true
	})
	s.ForgetHealth()
	type results struct {
		App struct {
			Tasks []struct {
				ID                 string
				HealthCheckResults []map[string]any
			}
		}
	}
	var r results
	getJSON(t, s.URL()+"/v2/apps/web", &r)
	if len(r.App.Tasks) != 2 {
		t.Fatalf("tasks = %+v", r.App.Tasks)
	}
	for _, tk := range r.App.Tasks {
		if len(tk.HealthCheckResults) != 0 {
			t.Errorf("task %s still has results %v", tk.ID, tk.HealthCheckResults)
		}
	}
	if err := s.SetHealth(tasks[0].ID, true); err != nil {
		t.Fatal(err)
	}
	getJSON(t, s.URL()+"/v2/apps/web", &r)
	n := 0
	for _, tk := range r.App.Tasks {
		n += len(tk.HealthCheckResults)
	}
	if n != 1 {
		t.Errorf("%d results after one SetHealth, want 1", n)
	}
}

// SetLeader moves a standby's redirects and proxying to another leader.
func TestStandbySetLeader(t *testing.T) {
	t.Parallel()
	l1 := startSim(t, Config{})
	l2 := startSim(t, Config{})
	standby := startSim(t, Config{Leader: l1.URL()})
	if err := l1.SetLeader(l2.URL()); err == nil {
		t.Error("SetLeader on a leader accepted")
	}
	if err := standby.SetLeader("ftp://x"); err == nil {
		t.Error("bad leader URL accepted")
	}
	if err := standby.SetLeader(l2.URL()); err != nil {
		t.Fatal(err)
	}
	var l struct{ Leader string }
	getJSON(t, standby.URL()+"/v2/leader", &l)
	if l.Leader != strings.TrimPrefix(l2.URL(), "http://") {
		t.Errorf("/v2/leader = %q, want %q", l.Leader, l2.URL())
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("GET", standby.URL()+"/v2/events", nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); loc != l2.URL()+"/v2/events" {
		t.Errorf("Location %q", loc)
	}
}

// While nobody leads, /v2/leader is 404 and everything else fails after a
// hold with Marathon's message: 502 from 1.7, 503 before. Streams close.
func TestNoLeader(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		version string
		status  int
	}{{"1.10.17", http.StatusBadGateway}, {"1.6.322", http.StatusServiceUnavailable}} {
		t.Run(tt.version, func(t *testing.T) {
			t.Parallel()
			s := startSim(t, Config{Version: tt.version, NoLeaderHold: 20 * time.Millisecond})
			c := dialEvents(t, s.URL(), "", "text/event-stream")
			c.next() // attached
			s.SetNoLeader(true)
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			for s.Streams() != 0 {
				if ctx.Err() != nil {
					t.Fatal("stream not dropped")
				}
				time.Sleep(2 * time.Millisecond)
			}
			var msg struct{ Message string }
			if resp := getJSON(t, s.URL()+"/v2/leader", &msg); resp.StatusCode != http.StatusNotFound || msg.Message != "There is no leader" {
				t.Errorf("/v2/leader: %d %q", resp.StatusCode, msg.Message)
			}
			start := time.Now()
			if resp := getJSON(t, s.URL()+"/v2/apps", &msg); resp.StatusCode != tt.status || msg.Message != "Could not determine the current leader" {
				t.Errorf("/v2/apps: %d %q", resp.StatusCode, msg.Message)
			}
			if held := time.Since(start); held < 20*time.Millisecond {
				t.Errorf("answered after %v, want the hold first", held)
			}
			s.SetNoLeader(false)
			if resp := getJSON(t, s.URL()+"/v2/apps", nil); resp.StatusCode != http.StatusOK {
				t.Errorf("after the election: %d", resp.StatusCode)
			}
		})
	}
}
