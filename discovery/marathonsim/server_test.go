package marathonsim

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestStandbyRedirectsEvents(t *testing.T) {
	t.Parallel()
	leader := startSim(t, Config{})
	standby := startSim(t, Config{Leader: leader.URL()})
	mustCreate(t, leader, AppSpec{ID: "/web", Instances: 1})

	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("GET", standby.URL()+"/v2/events?event_type=status_update_event", nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := leader.URL() + "/v2/events?event_type=status_update_event"
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != want {
		t.Errorf("got %d Location %q, want 302 %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}

	// Everything else is proxied, with a Via header naming the standby.
	var apps struct {
		Apps []struct{ ID string } `json:"apps"`
	}
	resp = getJSON(t, standby.URL()+"/v2/apps", &apps)
	if len(apps.Apps) != 1 || apps.Apps[0].ID != "/web" {
		t.Errorf("proxied /v2/apps: %+v", apps)
	}
	if via := resp.Header.Get("Via"); via != "1.1 "+strings.TrimPrefix(standby.URL(), "http://") {
		t.Errorf("Via %q", via)
	}
	var l struct{ Leader string }
	getJSON(t, standby.URL()+"/v2/leader", &l)
	if l.Leader != strings.TrimPrefix(leader.URL(), "http://") {
		t.Errorf("/v2/leader through standby: %q", l.Leader)
	}
}

// Before 1.7 a standby streams the leader's events through itself.
func TestStandbyProxiesEventsBefore17(t *testing.T) {
	t.Parallel()
	leader := startSim(t, Config{Version: "1.6.322"})
	standby := startSim(t, Config{Version: "1.6.322", Leader: leader.URL()})
	req, _ := http.NewRequest("GET", standby.URL()+"/v2/events", nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, len("event: event_stream_attached\r\n"))
	if _, err := io.ReadFull(resp.Body, buf); err != nil || resp.StatusCode != 200 {
		t.Fatalf("status %d, read %q, %v", resp.StatusCode, buf, err)
	}
	if string(buf) != "event: event_stream_attached\r\n" {
		t.Errorf("proxied stream starts %q", buf)
	}
}

func TestIntercept(t *testing.T) {
	t.Parallel()
	s := startSim(t, Config{})
	s.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/v2/apps" {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, `{"apps":[{"id":"/trunc`)
		return true
	})
	if resp, body := getBody(t, s.URL()+"/v2/apps"); resp.StatusCode != 500 || body != `{"apps":[{"id":"/trunc` {
		t.Errorf("intercepted: %d %q", resp.StatusCode, body)
	}
	if resp, body := getBody(t, s.URL()+"/ping"); resp.StatusCode != 200 || body != "pong" {
		t.Errorf("not intercepted: %d %q", resp.StatusCode, body)
	}
	s.Intercept(nil)
	if resp, body := getBody(t, s.URL()+"/v2/apps"); resp.StatusCode != 200 || body != `{"apps":[]}` {
		t.Errorf("after removing the hook: %d %q", resp.StatusCode, body)
	}
}
