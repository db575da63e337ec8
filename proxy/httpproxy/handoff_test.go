package httpproxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/internal/testnet"
	"github.com/pacer-lb/pacer/proxy"
)

// A service that changes mode, TCP to HTTP and back (a label changed live),
// keeps its port open throughout: its listening socket passes from one data
// plane to the other (proxy.Handoff), so a client that connects meanwhile
// waits in the backlog and is served, never refused. Before, the plane
// taking the port bound it only once the other had closed it, each on its
// own goroutine, and a bind that came first waited a BindRetry (1 s):
// clients in between were refused.
func TestModeChangeRefusesNoClient(t *testing.T) {
	handoff := proxy.NewHandoff()
	t.Cleanup(handoff.Close)
	log := testLogger(t)
	port := testnet.FreePort(t)
	r := newRigLog(t, t, Config{Handoff: handoff, PortMin: port, PortMax: port}, log)
	runTCPPlane(t, proxy.TCPConfig{Bind: "127.0.0.1", PortMin: port, PortMax: port, Handoff: handoff}, r.table, log)

	// The backend says which plane the request came through: the HTTP
	// plane adds X-Forwarded-For, the TCP plane passes bytes.
	_, web := httpBackend(t, "web", func(w http.ResponseWriter, req *http.Request) {
		if req.Header.Get("X-Forwarded-For") != "" {
			io.WriteString(w, "http")
		} else {
			io.WriteString(w, "tcp")
		}
	})
	withMode := func(mode discovery.Mode) *discovery.App {
		a := app("/web", port, nil, "", web)
		a.Services[0].Mode = mode
		return a
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: waitFor}
	waitMode := func(want string) {
		t.Helper()
		var got string
		for deadline := time.Now().Add(waitFor); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			resp, err := client.Get("http://" + addr + "/")
			if err != nil {
				got = err.Error()
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if got = string(b); got == want {
				return
			}
		}
		t.Fatalf("the port did not come to serve in mode %s: last answer %q", want, got)
	}
	r.apply(withMode(discovery.ModeTCP))
	waitMode("tcp")

	// Clients connect as fast as they can while the mode flips.
	var refused, connected atomic.Int64
	var lastErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			c, err := net.DialTimeout("tcp", addr, waitFor)
			if err != nil {
				if errors.Is(err, syscall.ECONNREFUSED) {
					refused.Add(1)
				}
				lastErr.Store(err.Error())
				continue
			}
			connected.Add(1)
			c.Close()
		}
	})
	for i := range 6 {
		mode, want := discovery.ModeHTTP, "http"
		if i%2 == 1 {
			mode, want = discovery.ModeTCP, "tcp"
		}
		r.apply(withMode(mode))
		waitMode(want)
	}
	close(stop)
	wg.Wait()
	if n := refused.Load(); n != 0 {
		t.Fatalf("%d clients refused across 6 mode changes (%d connected; last error %v)", n, connected.Load(), lastErr.Load())
	}
	if connected.Load() == 0 {
		t.Fatal("no client connected while the mode flipped")
	}
}
