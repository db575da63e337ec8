package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/pacer-lb/pacer/discovery/marathonsim"
	"github.com/pacer-lb/pacer/internal/testnet"
)

// headerEcho is a task that answers every request with the forwarding
// headers it got, and /health with 200.
func headerEcho(ctx context.Context, ln net.Listener, _ string) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "proto=%s real-ip=%s forwarded=%s", r.Header.Get("X-Forwarded-Proto"), r.Header.Get("X-Real-IP"), r.Header.Get("Forwarded"))
	})}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	_ = srv.Serve(ln)
}

// A client's forwarding headers reach an HTTP-mode app only with
// --trust-forwarded: otherwise any client could tell the app it came over
// https, or from another address.
func TestTrustForwarded(t *testing.T) {
	t.Parallel()
	for trust, want := range map[bool]string{
		false: "proto=http real-ip= forwarded=",
		true:  "proto=https real-ip=203.0.113.9 forwarded=for=203.0.113.9;proto=https",
	} {
		t.Run(fmt.Sprint("trust=", trust), func(t *testing.T) {
			t.Parallel()
			sim := startSim(t, marathonsim.Config{})
			port := testnet.FreePort(t)
			if err := sim.CreateApp(marathonsim.AppSpec{ID: "/echo", Instances: 1, ServicePorts: []int{port},
				HealthCheck: &marathonsim.HealthCheck{Path: "/health"}, Run: headerEcho}); err != nil {
				t.Fatal(err)
			}
			p := startPacer(t, sim.URL(), port, port, func(c *config) { c.trustForwarded = trust })
			p.waitReady(t)
			eventually(t, 10*time.Second, "the task routed", func() bool { return backends(t, p, "/echo") == 1 })

			req, err := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", port), nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-Forwarded-Proto", "https")
			req.Header.Set("X-Real-IP", "203.0.113.9")
			req.Header.Set("Forwarded", "for=203.0.113.9;proto=https")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if string(body) != want {
				t.Fatalf("the app saw %q, want %q", body, want)
			}
		})
	}
}
