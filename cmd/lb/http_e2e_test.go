package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pacer-lb/pacer/discovery/marathonsim"
	"github.com/pacer-lb/pacer/internal/testnet"
)

// An app labelled with a VHOST is served in HTTP mode on its service port and
// through the --http listener by Host; an unknown Host gets 404.
func TestHTTPModeAndVirtualHost(t *testing.T) {
	sim := startSim(t, marathonsim.Config{})
	ports := testnet.FreePorts(t, 2) // two FreePort calls may return the same port
	port := ports[0]
	if err := sim.CreateApp(marathonsim.AppSpec{
		ID: "/shop/web", Instances: 2, ServicePorts: []int{port},
		Labels: map[string]string{"HAPROXY_0_VHOST": "web.example.com"},
		Run:    marathonsim.HTTPHello(),
	}); err != nil {
		t.Fatal(err)
	}
	httpAddr := fmt.Sprintf("127.0.0.1:%d", ports[1])
	p := startPacer(t, sim.URL(), port, port, func(c *config) { c.httpAddr = httpAddr })
	p.waitReady(t)
	eventually(t, 5*time.Second, "two backends", func() bool { return backends(t, p, "/shop/web") == 2 })

	client := &http.Client{Timeout: 5 * time.Second}
	do := func(url, host string) (int, string, http.Header) {
		req, _ := http.NewRequest("GET", url, nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s (Host %s): %v", url, host, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	seen := map[string]bool{}
	for range 4 {
		code, body, _ := do("http://"+httpAddr+"/", "WEB.example.com:80")
		if code != 200 || !strings.HasPrefix(body, "hello from shop_web.") {
			t.Fatalf("vhost: %d %q", code, body)
		}
		seen[body] = true
	}
	if len(seen) != 2 {
		t.Fatalf("vhost answers came from %d tasks, want 2", len(seen))
	}
	if code, body, _ := do("http://"+httpAddr+"/", "other.example.com"); code != 404 {
		t.Fatalf("unknown Host: %d %q, want 404", code, body)
	}
	// The service port speaks HTTP too (HTTP mode: the fasthttp data plane).
	if code, body, _ := do(fmt.Sprintf("http://127.0.0.1:%d/", port), "anything"); code != 200 || !strings.HasPrefix(body, "hello from") {
		t.Fatalf("service port: %d %q", code, body)
	}
	// With the app scaled to zero, the answer is a readable 503, not a hang.
	if err := sim.Scale("/shop/web", 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "no backends", func() bool { return backends(t, p, "/shop/web") == 0 })
	code, body, h := do("http://"+httpAddr+"/", "web.example.com")
	if code != 503 || h.Get("Retry-After") == "" || !strings.Contains(body, "/shop/web") {
		t.Fatalf("no tasks: %d %q Retry-After=%q, want 503 naming the service", code, body, h.Get("Retry-After"))
	}
}
