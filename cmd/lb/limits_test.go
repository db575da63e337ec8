package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

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

// --max-conns reaches the data planes, and /metrics shows the cap an
// operator alerts on.
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

// --max-conns is one budget for both planes, as HAProxy's global maxconn:
// an HTTP client holding the only slot keeps a TCP-mode client waiting in
// the backlog (it connects, but its request reaches no task) until the
// HTTP client closes; then the TCP client holds it, and a new HTTP client
// waits in turn. /metrics counts both planes' clients.
func TestMaxConnsSharedByBothPlanes(t *testing.T) {
	t.Parallel()
	sim := startSim(t, marathonsim.Config{})
	tcpPort, httpPort := createBothModes(t, sim)
	p := startPacer(t, sim.URL(), tcpPort, httpPort, func(c *config) { c.maxConns = 1 })
	p.waitReady(t)
	eventually(t, 5*time.Second, "both apps routed", func() bool {
		return backends(t, p, "/tcpapp") == 1 && backends(t, p, "/webapp") == 1
	})

	httpClient := heldClient(t, httpPort)
	httpClient.get(t, "HTTP client below the cap")
	tcpClient := heldClient(t, tcpPort)
	tcpClient.send(t)
	tcpClient.assertHeld(t, "TCP-mode client")
	eventually(t, 5*time.Second, "the cap reached in /metrics", func() bool {
		v, _ := metricSum(t, p, "pacer_tcp_max_conns_reached")
		return v == 1
	})
	if v, lines := metricSum(t, p, "pacer_tcp_connections_open"); v != 1 {
		t.Fatalf("pacer_tcp_connections_open = %v (%q), want the HTTP client's 1", v, lines)
	}

	httpClient.c.Close()
	tcpClient.answer(t, "TCP-mode client after the HTTP client closed")
	next := heldClient(t, httpPort)
	next.send(t)
	next.assertHeld(t, "HTTP client")
	tcpClient.c.Close()
	next.answer(t, "HTTP client after the TCP-mode client closed")
}

// lbClient is a keep-alive HTTP client connection of a test.
type lbClient struct {
	c  net.Conn
	br *bufio.Reader
}

func heldClient(t *testing.T, port int) *lbClient {
	t.Helper()
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &lbClient{c: c, br: bufio.NewReader(c)}
}

func (c *lbClient) send(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(c.c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
}

// answer reads the answer to the request sent, which must be the task's.
func (c *lbClient) answer(t *testing.T, what string) {
	t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || !strings.HasPrefix(string(body), "hello from") {
		t.Fatalf("%s: %d %q, %v", what, resp.StatusCode, body, err)
	}
}

func (c *lbClient) get(t *testing.T, what string) {
	t.Helper()
	c.send(t)
	c.answer(t, what)
}

// assertHeld fails if the client gets a byte within a tenth of a second:
// past the cap nothing it sent may reach a task. A check of absence, which
// a slow machine can only make pass wrongly, never fail wrongly.
func (c *lbClient) assertHeld(t *testing.T, what string) {
	t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if b, err := c.br.Peek(1); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s past the cap was served: read %q, %v", what, b, err)
	}
}

// A service port another process holds (a second pacer started on the
// ports of the first, marathon-lb during a migration) is not served here:
// the line saying pacer is ready must say so and name the port, not claim
// that the service ports are open.
func TestReadyLineNamesPortsThatCannotBind(t *testing.T) {
	sim := startSim(t, marathonsim.Config{})
	ports := testnet.FreePorts(t, 2)
	held, free := ports[0], ports[1]
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", held))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for id, port := range map[string]int{"/held": held, "/free": free} {
		if err := sim.CreateApp(marathonsim.AppSpec{ID: id, Instances: 1, ServicePorts: []int{port}}); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := parseConfig("lb", []string{"--marathon", sim.URL(), "--bind", "127.0.0.1",
		"--ports", fmt.Sprintf("%d-%d", min(held, free), max(held, free)),
		"--admin", "127.0.0.1:0", "--dns", "127.0.0.1:0"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	log := zap.New(zapcore.NewTee(core, zaptest.NewLogger(t).Core()))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan struct{})
	go func() { done <- run(ctx, nil, cfg, log, &hooks{ready: func() { close(ready) }}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	select {
	case <-ready:
	case err := <-done:
		done <- err
		t.Fatalf("run returned before ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not ready after 10s")
	}
	lines := logs.FilterMessageSnippet("ready").All()
	if len(lines) != 1 {
		t.Fatalf("%d lines saying ready, want 1: %+v", len(lines), lines)
	}
	got := lines[0]
	fields := got.ContextMap()
	failing, _ := fields["failing_ports"].([]any)
	if got.Level != zapcore.WarnLevel || strings.Contains(got.Message, "ports open") ||
		len(failing) != 1 || fmt.Sprint(failing[0]) != fmt.Sprint(held) || fields["open_ports"] != int64(1) ||
		!strings.Contains(fmt.Sprint(fields["error"]), "address already in use") {
		t.Errorf("ready line: %s %q %v; want a warning naming port %d as failing, 1 port open and the bind error",
			got.Level, got.Message, fields, held)
	}
}
