package health

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pacer-lb/pacer/discovery"
)

func TestNetProberHTTPReusesConnection(t *testing.T) {
	t.Parallel()
	var conns atomic.Int32
	var fail atomic.Bool
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" || fail.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	addr := netip.MustParseAddrPort(srv.Listener.Addr().String())
	p := NewNetProber()
	defer p.Close()
	check := &discovery.HealthCheck{Protocol: discovery.CheckHTTP, Path: "/health"}
	for i := range 5 {
		if err := p.Probe(context.Background(), addr, check, time.Second); err != nil {
			t.Fatalf("probe %d: %v", i, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("5 probes opened %d connections, want 1 (keep-alive)", n)
	}
	fail.Store(true)
	if err := p.Probe(context.Background(), addr, check, time.Second); err == nil {
		t.Fatal("503 passed the check")
	}
}

func TestNetProberTCP(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddrPort(ln.Addr().String())
	p := NewNetProber()
	check := &discovery.HealthCheck{Protocol: discovery.CheckTCP}
	if err := p.Probe(context.Background(), addr, check, time.Second); err != nil {
		t.Fatalf("listening port: %v", err)
	}
	ln.Close()
	if err := p.Probe(context.Background(), addr, check, time.Second); err == nil {
		t.Fatal("closed port passed the check")
	}
}
