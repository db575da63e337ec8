package main

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/pacer-lb/pacer/discovery/marathonsim"
	"github.com/pacer-lb/pacer/internal/testnet"
)

func TestConfigMaxConns(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want int
	}{
		{nil, nil, 0}, // derived from the descriptor limit
		{[]string{"--max-conns", "5000"}, nil, 5000},
		{nil, map[string]string{"PACER_MAX_CONNS": "7000"}, 7000},
		{[]string{"--max-conns", "5000"}, map[string]string{"PACER_MAX_CONNS": "7000"}, 5000},
	} {
		c, err := parseConfig("lb", tc.args, env(tc.env), io.Discard)
		if err != nil {
			t.Fatalf("%v %v: %v", tc.args, tc.env, err)
		}
		if c.maxConns != tc.want {
			t.Errorf("%v %v: maxConns %d, want %d", tc.args, tc.env, c.maxConns, tc.want)
		}
	}
	if _, err := parseConfig("lb", []string{"--max-conns", "-1"}, env(nil), io.Discard); err == nil || !strings.HasPrefix(err.Error(), "--max-conns:") {
		t.Errorf("--max-conns -1: %v, want an error naming the flag", err)
	}
}

// serviceNote returns the note /v1/services gives app's first service.
func serviceNote(t testing.TB, p *pacer, app string) string {
	t.Helper()
	var v struct {
		Apps []struct {
			ID       string
			Services []struct{ Note string }
		}
	}
	getServices(t, p, &v)
	for _, a := range v.Apps {
		if a.ID == app && len(a.Services) > 0 {
			return a.Services[0].Note
		}
	}
	return ""
}

// The defaults put --dns :8053 inside --ports 8000-8100: an app given a
// service port that one of pacer's own listeners holds is told so in
// /v1/services (and the status page, which shows the same note), in TCP
// mode and in HTTP mode, not only "address already in use".
func TestServicePortHeldByOwnListenerIsNamed(t *testing.T) {
	sim := startSim(t, marathonsim.Config{})
	ports := testnet.FreePorts(t, 2)
	dnsPort, adminPort := ports[0], ports[1]
	if err := sim.CreateApp(marathonsim.AppSpec{ID: "/on-dns", Instances: 1, ServicePorts: []int{dnsPort}, Run: marathonsim.HTTPHello()}); err != nil {
		t.Fatal(err)
	}
	if err := sim.CreateApp(marathonsim.AppSpec{ID: "/on-admin", Instances: 1, ServicePorts: []int{adminPort},
		Labels: map[string]string{"PACER_0_MODE": "http"}, Run: marathonsim.HTTPHello()}); err != nil {
		t.Fatal(err)
	}
	p := startPacer(t, sim.URL(), min(dnsPort, adminPort), max(dnsPort, adminPort), func(c *config) {
		c.dns = fmt.Sprintf("127.0.0.1:%d", dnsPort)
		c.admin = fmt.Sprintf("127.0.0.1:%d", adminPort)
	})
	p.waitReady(t)
	for app, want := range map[string]string{
		"/on-dns":   fmt.Sprintf("DNS listener (--dns 127.0.0.1:%d) holds port %d", dnsPort, dnsPort),
		"/on-admin": fmt.Sprintf("admin listener (--admin 127.0.0.1:%d) holds port %d", adminPort, adminPort),
	} {
		var note string
		eventually(t, 5*time.Second, app+" noted as held by pacer's own listener", func() bool {
			note = serviceNote(t, p, app)
			return strings.Contains(note, want)
		})
		if !strings.Contains(note, "address already in use") {
			t.Errorf("%s: note %q lost the bind error", app, note)
		}
	}
}

// --max-conns reaches the TCP plane, and /metrics shows the cap an operator
// alerts on.
func TestMaxConnsInMetrics(t *testing.T) {
	t.Parallel()
	sim := startSim(t, marathonsim.Config{})
	port := testnet.FreePort(t)
	p := startPacer(t, sim.URL(), port, port, func(c *config) { c.maxConns = 5 })
	p.waitReady(t)
	for name, want := range map[string]float64{"pacer_tcp_max_conns": 5, "pacer_tcp_max_conns_reached": 0, "pacer_tcp_connections_open": 0} {
		if got, lines := metricSum(t, p, name); lines == "" || got != want {
			t.Errorf("/metrics: %s = %v (samples %q), want a sample of %v", name, got, lines, want)
		}
	}
}
