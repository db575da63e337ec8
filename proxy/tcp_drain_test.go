package proxy

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

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
	h, port, a, c := oneEchoConn(t, 300*time.Millisecond)

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

// A drain that runs out of time and cuts clients off says so, once per
// backend with the number cut, so an operator can tell it from a drain
// that ended on its own; one that ends on its own says nothing more.
func TestTCPDrainTimeoutCutIsLoggedOnce(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zap.InfoLevel)
	port := testnet.FreePort(t)
	h := newHarnessLog(t, TCPConfig{DrainTimeout: 200 * time.Millisecond}, zap.New(core), port)
	a := startBackend(t, namedEcho("a"))
	b := startBackend(t, namedEcho("b"))
	put(h.table, service(port, a.addr, b.addr))
	h.waitOpened(port, 1)
	var onA, onB []*net.TCPConn
	for len(onA) < 3 || len(onB) < 1 {
		c := dial(t, port)
		if readLine(t, c) == "a" {
			onA = append(onA, c)
		} else {
			onB = append(onB, c)
		}
	}
	for _, c := range onB {
		c.Close() // b's connections end before its drain does
	}
	eventually(t, "b's connections to end", func() bool { st, _ := h.status(port); return st.Active == int64(len(onA)) })
	put(h.table, service(port))
	for _, c := range onA {
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("a connection outlived its drain")
		}
	}
	const msg = "drain timeout reached; closing the backend's connections still open"
	eventually(t, "the cut logged", func() bool { return logs.FilterMessage(msg).Len() > 0 })
	cut := logs.FilterMessage(msg).All()
	if len(cut) != 1 || cut[0].Level != zap.WarnLevel || cut[0].ContextMap()["backend"] != a.addr.String() ||
		cut[0].ContextMap()["connections"] != int64(len(onA)) {
		t.Fatalf("drain cut logged as %+v; want one warning naming %s and %d connections", cut, a.addr, len(onA))
	}
}

// A drain timer that fires just as its backend comes back (or as its
// connection ends and hands its client on) finds itself stopped, and
// leaves the connection be: a connection to a routable backend is not cut.
// Not parallel: it sets a package hook.
func TestTCPDrainTimerStoppedAfterItFiredCutsNothing(t *testing.T) {
	h, port, a, c := oneEchoConn(t, 50*time.Millisecond)

	fired, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hook := func() {
		once.Do(func() {
			close(fired)
			<-release
		})
	}
	testHookDrainFired.Store(&hook)
	t.Cleanup(func() { testHookDrainFired.Store(nil) })

	put(h.table, service(port))
	select {
	case <-fired:
	case <-time.After(waitFor):
		t.Fatal("the drain timer did not fire")
	}
	put(h.table, service(port, a.addr)) // back, while the timer's function runs
	eventually(t, "drain to stop", func() bool { return !h.draining(port, a.addr) })
	close(release)
	if got := roundTrip(t, c, "2"); got != "2" {
		t.Fatalf("the connection to the backend that came back echoed %q", got)
	}
	if st, _ := h.status(port); st.Active != 1 {
		t.Fatalf("active = %d; want the client's connection", st.Active)
	}
}

// oneEchoConn serves a port from one echo backend with drain timeout
// drain, and returns a client connection that has had an answer through
// it.
func oneEchoConn(t *testing.T, drain time.Duration) (*harness, int, *backend, *net.TCPConn) {
	t.Helper()
	port := testnet.FreePorts(t, 1)[0]
	h := newHarness(t, TCPConfig{DrainTimeout: drain}, port)
	a := startBackend(t, echo)
	put(h.table, service(port, a.addr))
	h.waitOpened(port, 1)
	c := dial(t, port)
	roundTrip(t, c, "1")
	return h, port, a, c
}
