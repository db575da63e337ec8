package admin

import (
	"encoding/json"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/discovery"
	healthcheck "github.com/pacer-lb/pacer/health"
)

// /v1/services lists each backend with pacer's verdict, and the backends the
// health overlay ejected under out_of_rotation; /metrics has the verdicts.
func TestHealthVerdictsShown(t *testing.T) {
	t.Parallel()
	table := discovery.NewTable()
	a1, a2 := netip.MustParseAddrPort("10.0.0.1:31000"), netip.MustParseAddrPort("10.0.0.2:31000")
	table.Apply(discovery.Update{Source: "marathon", Apps: []*discovery.App{{ID: "/web", Services: []*discovery.Service{{
		Key: discovery.ServiceKey{App: "/web"}, ServicePort: 8000,
		Backends: []discovery.Backend{{TaskID: "web.1", Addr: a1}, {TaskID: "web.2", Addr: a2}, {TaskID: "web.3", Addr: netip.MustParseAddrPort("10.0.0.3:31000")}},
	}}}}})
	table.SetEjected(map[netip.AddrPort]string{a2: "active: HTTP check failed"})
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s, err := New(Deps{
		Table: table,
		Health: func() []healthcheck.Verdict {
			return []healthcheck.Verdict{
				{Addr: a1, Healthy: true, Since: since, Active: "up"},
				{Addr: a2, Healthy: false, Reason: "active: HTTP check failed", Since: since, Active: "down", Ejections: 2},
			}
		},
		HealthStats: func() healthcheck.Stats { return healthcheck.Stats{ProbesOK: 10, ProbesFailed: 2, Ejections: 3} },
	}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	code, body := get(t, s.Handler(), "/v1/services")
	if code != 200 {
		t.Fatal(code, body)
	}
	var v struct {
		Apps []struct {
			Services []struct {
				Backends      []backendView `json:"backends"`
				OutOfRotation []backendView `json:"out_of_rotation"`
			}
		}
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	svc := v.Apps[0].Services[0]
	if len(svc.Backends) != 2 || svc.Backends[0].Health == nil || !svc.Backends[0].Health.Healthy {
		t.Fatalf("backends: %+v", svc.Backends)
	}
	if len(svc.OutOfRotation) != 1 || svc.OutOfRotation[0].TaskID != "web.2" || svc.OutOfRotation[0].Health.Reason != "active: HTTP check failed" ||
		!svc.OutOfRotation[0].Health.Since.Equal(since) {
		t.Fatalf("out of rotation: %+v", svc.OutOfRotation)
	}
	_, metrics := get(t, s.Handler(), "/metrics")
	for _, want := range []string{
		`pacer_health_backend_healthy{backend="10.0.0.2:31000"} 0`,
		`pacer_health_backend_ejections_total{backend="10.0.0.2:31000"} 2`,
		`pacer_health_probes_total{result="failed"} 2`,
		`pacer_health_ejections_total 3`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: run `make test`, which installs Debian's prometheus package")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(metrics)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}
