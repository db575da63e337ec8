package marathon

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/pacer-lb/pacer/discovery"
)

// Active checks come from the app's Marathon checks on each port index, or
// from PACER_{n}_HEALTHCHECK_* labels when Marathon defines none.
func TestHealthChecksFromMarathonAndLabels(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		app     string
		want    []string // per port index: "PROTO path interval origin", or "-"
		problem string
	}{
		{
			name: "marathon HTTP on index 0, MESOS_TCP on index 1",
			app: `{"id":"/a","portDefinitions":[{"port":10000},{"port":10001}],"healthChecks":[
				{"protocol":"HTTP","path":"/health","portIndex":0,"intervalSeconds":60,"timeoutSeconds":20},
				{"protocol":"MESOS_TCP","portIndex":1}]}`,
			want: []string{"HTTP /health 0s marathon HTTP check", "TCP  0s marathon MESOS_TCP check"},
		},
		{
			name: "no portIndex means 0; HTTP wins over TCP; COMMAND and fixed ports are skipped",
			app: `{"id":"/a","portDefinitions":[{"port":10000},{"port":10001}],"healthChecks":[
				{"protocol":"TCP"},{"protocol":"MESOS_HTTPS","path":"/ok"},{"protocol":"COMMAND","portIndex":1},{"protocol":"HTTP","port":8080}]}`,
			want: []string{"HTTPS /ok 0s marathon MESOS_HTTPS check", "-"},
		},
		{
			name: "labels when Marathon defines none; the interval label paces a Marathon check too",
			app: `{"id":"/a","portDefinitions":[{"port":10000},{"port":10001},{"port":10002}],
				"healthChecks":[{"protocol":"TCP","portIndex":2}],
				"labels":{"PACER_0_HEALTHCHECK_PATH":"/ping","PACER_0_HEALTHCHECK_INTERVAL":"500ms",
				          "HAPROXY_1_HEALTHCHECK_INTERVAL":"2","PACER_2_HEALTHCHECK_INTERVAL":"3s","PACER_2_HEALTHCHECK_PATH":"/ignored"}}`,
			want: []string{"HTTP /ping 500ms label PACER_0_HEALTHCHECK_PATH", "TCP  2s label HAPROXY_1_HEALTHCHECK_INTERVAL", "TCP  3s marathon TCP check"},
		},
		{
			name:    "a bad interval label is the app's problem, visibly",
			app:     `{"id":"/a","portDefinitions":[{"port":10000}],"labels":{"PACER_0_HEALTHCHECK_INTERVAL":"soon"}}`,
			problem: "PACER_0_HEALTHCHECK_INTERVAL",
		},
		{
			name:    "a bad path label too",
			app:     `{"id":"/a","portDefinitions":[{"port":10000}],"labels":{"PACER_0_HEALTHCHECK_PATH":"health"}}`,
			problem: "PACER_0_HEALTHCHECK_PATH",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := decodeOneApp(json.RawMessage(tt.app))
			if d.Def == nil {
				t.Fatalf("decode: %s", d.Problem)
			}
			app := testBuilder(true).build(d.Def, nil)
			if tt.problem != "" {
				if !strings.Contains(app.Problem, tt.problem) {
					t.Fatalf("problem %q, want one naming %s", app.Problem, tt.problem)
				}
				return
			}
			if app.Problem != "" {
				t.Fatalf("problem: %s", app.Problem)
			}
			var got []string
			for _, s := range app.Services {
				got = append(got, describeCheck(s.Check))
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Fatalf("checks:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// A Marathon HTTP check makes its port HTTP mode; an HTTPS one does not:
// the port speaks TLS, and the HTTP proxy would send it plain HTTP. Its
// TLS passes through the TCP proxy, and the check still probes it.
func TestHTTPSCheckKeepsTCPMode(t *testing.T) {
	t.Parallel()
	d := decodeOneApp(json.RawMessage(`{"id":"/a","portDefinitions":[{"port":10000},{"port":10001},{"port":10002}],"healthChecks":[
		{"protocol":"HTTP","path":"/h","portIndex":0},{"protocol":"HTTPS","path":"/h","portIndex":1},{"protocol":"MESOS_HTTPS","path":"/h","portIndex":2}]}`))
	if d.Def == nil {
		t.Fatalf("decode: %s", d.Problem)
	}
	app := testBuilder(true).build(d.Def, nil)
	var got []string
	for _, s := range app.Services {
		got = append(got, s.Mode.String()+" "+describeCheck(s.Check))
	}
	want := []string{"http HTTP /h 0s marathon HTTP check", "tcp HTTPS /h 0s marathon HTTPS check", "tcp HTTPS /h 0s marathon MESOS_HTTPS check"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("modes and checks:\n got %q\nwant %q", got, want)
	}
}

func describeCheck(hc *discovery.HealthCheck) string {
	if hc == nil {
		return "-"
	}
	return hc.Protocol.String() + " " + hc.Path + " " + hc.Interval.String() + " " + hc.Origin
}

func TestParseInterval(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{"2s": 2 * time.Second, "1.5": 1500 * time.Millisecond, " 250ms ": 250 * time.Millisecond} {
		if got, err := parseInterval(in); err != nil || got != want {
			t.Errorf("parseInterval(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "1ms", "2h", "-1s"} {
		if _, err := parseInterval(in); err == nil {
			t.Errorf("parseInterval(%q) accepted", in)
		}
	}
}
