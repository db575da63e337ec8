package httpproxy

import (
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/pacer-lb/pacer/health"
	"github.com/pacer-lb/pacer/internal/testnet"
)

// A connect that fails because pacer itself is out of descriptors is no
// fault of the backend's: reported as a failed connect, it would have
// passive health checking eject healthy backends, and take them out of
// DNS, each time pacer ran short. The client gets its 502; the backend
// keeps its good name, and serves the next request once descriptors are
// back.
func TestDialOutOfDescriptorsIsNoBackendFault(t *testing.T) {
	if !testnet.InChild(t) {
		return
	}
	var (
		mu  sync.Mutex
		bad []string
	)
	report := func(a netip.AddrPort, o health.Outcome) {
		if o != health.Success {
			mu.Lock()
			bad = append(bad, a.String()+": "+o.String())
			mu.Unlock()
		}
	}
	r := newRig(t, Config{Report: report})
	_, be := httpBackend(t, "be", nil)
	port := testnet.FreePort(t)
	r.apply(app("/web", port, nil, "", be))
	addr := r.waitPort(port)

	// Two descriptors back, before any backend connection is pooled: the
	// client's socket and the proxy's accept. The proxy's connect to the
	// backend then finds none.
	d := testnet.ExhaustDescriptors(t)
	d.Free(2)
	req := "GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"
	if got := statusOf(rawExchange(t, addr, req)); got != "HTTP/1.1 502 Bad Gateway" {
		t.Fatalf("with no descriptor for the connect: %q, want a 502", got)
	}
	mu.Lock()
	reported := append([]string(nil), bad...)
	mu.Unlock()
	if len(reported) != 0 {
		t.Fatalf("reported to health checking for pacer's own shortage: %v", reported)
	}

	d.Release()
	if got := rawExchange(t, addr, req); !strings.HasPrefix(got, "HTTP/1.1 200 OK") || !strings.HasSuffix(got, "be") {
		t.Fatalf("after the shortage: %q", got)
	}
}
