package proxy

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/pacer-lb/pacer/internal/testnet"
)

func TestTCPRemovedBackendDrains(t *testing.T) {
	t.Parallel()
	const drain = time.Second
	port := testnet.FreePorts(t, 1)[0]
	h := newHarness(t, TCPConfig{DrainTimeout: drain}, port)
	a := startBackend(t, namedEcho("a"))
	b := startBackend(t, namedEcho("b"))
	put(h.table, service(port, a.addr))
	h.waitOpened(port, 1)

	old := dial(t, port)
	if got := readLine(t, old); got != "a" {
		t.Fatalf("first connection reached %q", got)
	}
	removed := time.Now()
	put(h.table, service(port, b.addr))
	eventually(t, "the connection to a to drain", func() bool { return h.draining(port, a.addr) })

	// Draining: the established connection still works, new ones go to b.
	if got := roundTrip(t, old, "still here"); got != "still here" {
		t.Fatalf("draining connection echoed %q", got)
	}
	if got := readLine(t, dial(t, port)); got != "b" {
		t.Fatalf("new connection reached %q, want b", got)
	}
	// And DrainTimeout bounds it.
	_, err := old.Read(make([]byte, 1))
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("draining connection read: %v; want it closed", err)
	}
	if d := time.Since(removed); d < drain || d > drain+5*time.Second {
		t.Fatalf("draining connection closed %v after removal; want DrainTimeout %v", d, drain)
	}
}

func TestTCPBackendBackStopsDraining(t *testing.T) {
	t.Parallel()
	port := testnet.FreePorts(t, 1)[0]
	h := newHarness(t, TCPConfig{DrainTimeout: 300 * time.Millisecond}, port)
	a := startBackend(t, echo)
	put(h.table, service(port, a.addr))
	h.waitOpened(port, 1)
	c := dial(t, port)
	roundTrip(t, c, "1")

	put(h.table, service(port))
	removed := time.Now()
	eventually(t, "drain to start", func() bool { return h.draining(port, a.addr) })
	put(h.table, service(port, a.addr))
	eventually(t, "drain to stop", func() bool { return !h.draining(port, a.addr) })
	h.p.mu.Lock()
	ps, _ := h.p.ports.Get(port)
	h.p.mu.Unlock()
	ps.mu.Lock()
	conns := 0
	for c := ps.backends[a.addr].head; c != nil; c = c.next {
		conns++
		if c.drain != nil {
			t.Error("a connection kept its drain timer after its backend came back")
		}
	}
	ps.mu.Unlock()
	if conns != 1 {
		t.Fatalf("%d connections on the backend that came back, want the client's", conns)
	}
	// Past the drain timeout the drain would have closed the client had
	// it still run: this wait proves that it does not happen.
	time.Sleep(time.Until(removed.Add(300*time.Millisecond + 200*time.Millisecond)))
	if got := roundTrip(t, c, "2"); got != "2" {
		t.Fatalf("got %q", got)
	}
}

func TestTCPShutdownDrains(t *testing.T) {
	t.Parallel()
	h, port := echoHarness(t)
	c := dial(t, port)
	roundTrip(t, c, "before")

	done := make(chan error, 1)
	go func() { done <- h.p.Shutdown(context.Background()) }()
	eventually(t, "listener to close", func() bool { return refused(port) })
	if got := roundTrip(t, c, "during"); got != "during" {
		t.Fatalf("open connection during shutdown: %q", got)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with a connection open", err)
	default:
	}
	c.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Shutdown did not return after the last connection closed")
	}
	if err := h.p.Shutdown(context.Background()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
}

func TestTCPShutdownDeadlineClosesConnections(t *testing.T) {
	t.Parallel()
	port := testnet.FreePorts(t, 1)[0]
	h := newHarness(t, TCPConfig{DrainTimeout: waitFor, WaitForBackend: waitFor}, port)
	put(h.table, service(port, startBackend(t, echo).addr))
	h.waitOpened(port, 1)
	c := dial(t, port)
	roundTrip(t, c, "x")

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := h.p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the context's error", err)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection still open after Shutdown's deadline: %v", err)
	}
}

func TestTCPShutdownReleasesHeldClients(t *testing.T) {
	t.Parallel()
	port := testnet.FreePorts(t, 1)[0]
	h := newHarness(t, TCPConfig{WaitForBackend: time.Hour}, port)
	put(h.table, service(port))
	h.waitOpened(port, 1)
	c := dial(t, port)
	eventually(t, "the client to be held", func() bool {
		st, _ := h.status(port)
		return st.Active == 1
	})
	if err := h.p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("held client still open after Shutdown: %v", err)
	}
}
