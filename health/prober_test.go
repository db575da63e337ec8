package health

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/internal/testnet"
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
	defer p.Close()
	check := &discovery.HealthCheck{Protocol: discovery.CheckTCP}
	if err := p.Probe(context.Background(), addr, check, time.Second); err != nil {
		t.Fatalf("listening port: %v", err)
	}
	ln.Close()
	// Not the port just closed: a listener of a test running in parallel
	// could take it. This one refuses every connect for the whole test.
	refused := testnet.RefusedAddr(t)
	if err := p.Probe(context.Background(), refused, check, time.Second); err == nil {
		t.Fatal("a port refusing connects passed the check")
	}
}

// hostileBackend answers every connection with answer and closes it, until
// the test ends.
func hostileBackend(t *testing.T, answer string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, 4096)
				if _, err := c.Read(buf); err != nil { // the probe's request
					return
				}
				_, _ = io.WriteString(c, answer)
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// A backend's answer to a probe ends up in the verdict's reason, which is
// logged, put in the table and served on /v1/services: a backend that
// answers with a long status line or a long line of garbage (the HTTP
// client takes up to 10 MB of either) must not put all of it there.
func TestProbeReasonIsBoundedAgainstHostileAnswers(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("x", 64<<10)
	for name, answer := range map[string]string{
		"huge reason phrase": "HTTP/1.1 503 " + huge + "\r\nContent-Length: 0\r\n\r\n",
		"not HTTP":           huge + "\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			a := hostileBackend(t, answer)
			check := &discovery.HealthCheck{Protocol: discovery.CheckHTTP, Path: "/health"}
			svc := &discovery.Service{Key: discovery.ServiceKey{App: "/hostile"}, ServicePort: 10000, Check: check,
				Backends: []discovery.Backend{{TaskID: "t1", Addr: a}}}
			h := start(t, Config{Interval: time.Second, Timeout: time.Second, Fall: 1}, &discovery.App{ID: "/hostile", Services: []*discovery.Service{svc}})
			h.waitFor("the failing probe to take the backend out", func(*discovery.Snapshot) bool {
				v, _ := h.c.Verdict(a)
				return !v.Healthy
			})
			v, _ := h.c.Verdict(a)
			if len(v.Reason) > 1024 {
				t.Fatalf("reason is %d bytes long: %.200s…", len(v.Reason), v.Reason)
			}
			if !strings.HasPrefix(v.Reason, "active: HTTP check failed") || !strings.HasSuffix(v.Reason, "…") {
				t.Fatalf("reason %q: want the start of the error, cut", v.Reason)
			}
			if why, _ := h.table.Snapshot().Ejected(a); len(why) > 1024 {
				t.Fatalf("the table's overlay reason is %d bytes long", len(why))
			}
		})
	}
}
