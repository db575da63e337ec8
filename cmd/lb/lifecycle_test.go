package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pacer-lb/pacer/discovery/marathonsim"
	"github.com/pacer-lb/pacer/internal/testnet"
)

// Stopping (SIGTERM cancels run's context): /healthz fails first, the
// service port stops accepting, a connection already open keeps working
// until it ends, and run returns nil (exit 0).
func TestStopDrainsOpenConnections(t *testing.T) {
	sim := startSim(t, marathonsim.Config{})
	port := testnet.FreePort(t)
	if err := sim.CreateApp(marathonsim.AppSpec{ID: "/web", Instances: 1, ServicePorts: []int{port}, Run: marathonsim.HTTPHello()}); err != nil {
		t.Fatal(err)
	}
	p := startPacer(t, sim.URL(), port, port, func(c *config) { c.drainTimeout = 5 * time.Second })
	p.waitReady(t)

	// A keep-alive client with one request answered.
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	ask := func() (int, error) {
		if _, err := fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: web\r\n\r\n"); err != nil {
			return 0, err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := ask(); err != nil || code != 200 {
		t.Fatalf("before stop: %d %v", code, err)
	}

	p.stop()
	eventually(t, 5*time.Second, "healthz fails while draining", func() bool {
		resp, err := http.Get(p.admin + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	eventually(t, 5*time.Second, "service port stops accepting", func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	// The open connection is not cut: it is still answered.
	if code, err := ask(); err != nil || code != 200 {
		t.Fatalf("open connection during drain: %d %v", code, err)
	}
	conn.Close()
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("run returned %v, want nil (exit 0)", err)
		}
		p.done <- nil // for the cleanup registered by startPacer
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after its last connection closed")
	}
}

func TestDemoAppsAnswerAsPrinted(t *testing.T) {
	cfg, err := parseConfig("lb", []string{"--ports", "9000-9001"}, env(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	apps := demoApps(cfg)
	if len(apps) != 2 || apps[0].ID != "/marathon-nc" || apps[0].ServicePorts[0] != 9000 || apps[1].ServicePorts[0] != 9001 {
		t.Fatalf("demo apps = %+v", apps)
	}
	var b strings.Builder
	printDemoHelp(&b, cfg, &net.TCPAddr{Port: 9090}, &net.UDPAddr{Port: 8053})
	for _, want := range []string{"curl localhost:9000\n", "curl localhost:9001\n", "dig @127.0.0.1 -p 8053 _marathon-nc._tcp.marathon.mesos SRV\n", "curl localhost:9090/v1/services\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("demo help lacks %q:\n%s", want, b.String())
		}
	}
}
