package proxy

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/internal/testnet"
)

func TestTCPListenerFollowsClaims(t *testing.T) {
	t.Parallel()
	port := testnet.FreePorts(t, 1)[0]
	h := newHarness(t, TCPConfig{}, port)
	a := startBackend(t, echo)
	b := startBackend(t, echo)
	put(h.table, service(port, a.addr))
	h.waitOpened(port, 1)

	// Backend changes keep the same listener: a connection made right after
	// each change works, and the listener never reopens.
	long := dial(t, port)
	for i, set := range [][]netip.AddrPort{{b.addr}, {a.addr, b.addr}, {a.addr}, {}, {b.addr}} {
		put(h.table, service(port, set...))
		h.waitApplied()
		if len(set) > 0 {
			msg := fmt.Sprint("change ", i)
			if got := roundTrip(t, dial(t, port), msg); got != msg {
				t.Fatalf("after change %d: %q", i, got)
			}
		}
		if got := roundTrip(t, long, "long"); got != "long" {
			t.Fatalf("long-lived connection after change %d: %q", i, got)
		}
	}
	// Another app changing does not touch this port either.
	other := testnet.FreePorts(t, 1)[0]
	put(h.table, service(other, a.addr))
	h.waitApplied()
	if n := h.openedCount(port); n != 1 {
		t.Fatalf("listener opened %d times across backend changes, want 1", n)
	}

	// Unclaimed: closed.
	h.table.Apply(discovery.Update{Source: "test", Removed: []string{service(port).ID}})
	eventually(t, "listener to close", func() bool {
		st, _ := h.status(port)
		return !st.Listening && refused(port)
	})
	// Claimed again: reopened.
	put(h.table, service(port, a.addr))
	h.waitOpened(port, 2)
	if got := roundTrip(t, dial(t, port), "again"); got != "again" {
		t.Fatalf("got %q", got)
	}
}

// A Marathon port of protocol "udp,tcp" speaks TCP too: the TCP plane carries
// it; a "udp" one it leaves to DNS.
func TestTCPCarriesUDPTCPPortsNotUDPOnes(t *testing.T) {
	t.Parallel()
	ports := testnet.FreePorts(t, 2)
	h := newHarness(t, TCPConfig{}, ports...)
	both := service(ports[0], startBackend(t, echo).addr)
	both.Services[0].Protocol = discovery.ProtoTCPUDP
	udp := service(ports[1], startBackend(t, echo).addr)
	udp.Services[0].Protocol = discovery.ProtoUDP
	put(h.table, both, udp)
	h.waitOpened(ports[0], 1)
	if got := roundTrip(t, dial(t, ports[0]), "both"); got != "both" {
		t.Fatalf("udp,tcp port: got %q", got)
	}
	if _, ok := h.status(ports[1]); ok || h.openedCount(ports[1]) != 0 {
		t.Fatal("TCP proxy bound a UDP-only service port")
	}
}

func TestTCPHTTPModePortIsNotBound(t *testing.T) {
	t.Parallel()
	ports := testnet.FreePorts(t, 2)
	h := newHarness(t, TCPConfig{}, ports...)
	web := service(ports[0], startBackend(t, echo).addr)
	web.Services[0].Mode = discovery.ModeHTTP
	put(h.table, web, service(ports[1], startBackend(t, echo).addr))
	h.waitOpened(ports[1], 1)
	if _, ok := h.status(ports[0]); ok || h.openedCount(ports[0]) != 0 {
		t.Fatal("TCP proxy bound an HTTP-mode service port")
	}
}

func TestTCPOutOfRangePortNotBound(t *testing.T) {
	t.Parallel()
	ports := testnet.FreePorts(t, 2)
	in, out := ports[0], ports[1]
	h := newHarness(t, TCPConfig{PortMin: in, PortMax: in}, in)
	be := startBackend(t, echo)
	put(h.table, service(out, be.addr), service(in, be.addr))
	h.waitOpened(in, 1)

	st, ok := h.status(out)
	if !ok || st.Listening || !strings.Contains(st.Error, "outside") {
		t.Fatalf("out-of-range port status = %+v, %v", st, ok)
	}
	if !refused(out) {
		t.Fatal("out-of-range port accepts connections")
	}
}

func TestTCPBindFailureReportedAndRetried(t *testing.T) {
	t.Parallel()
	ports := testnet.FreePorts(t, 2)
	taken, free := ports[0], ports[1]
	squatter, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", taken))
	if err != nil {
		t.Fatalf("cannot take port %d for the test: %v", taken, err)
	}
	t.Cleanup(func() { squatter.Close() })
	h := newHarness(t, TCPConfig{}, ports...)
	be := startBackend(t, echo)
	put(h.table, service(taken, be.addr), service(free, be.addr))
	h.waitOpened(free, 1) // the other port is not held back

	st, _ := h.status(taken)
	if st.Listening || st.Error == "" || !st.BindFailing {
		t.Fatalf("taken port status = %+v; want not listening, failing, with the bind error", st)
	}
	// Once the port is free it opens within a retry, with no table
	// change: a stable cluster may not change for hours.
	squatter.Close()
	h.waitOpened(taken, 1)
	if st, _ := h.status(taken); !st.Listening || st.Error != "" || st.BindFailing {
		t.Fatalf("after retry: %+v", st)
	}
}
