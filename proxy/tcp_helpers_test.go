package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/internal/testnet"
)

// waitFor is how long a test waits for a condition before it fails; it is a
// bound for a broken build, not a sleep: conditions usually hold in
// milliseconds.
const waitFor = 10 * time.Second

// backend is a test server on 127.0.0.1:0 running handle per connection.
type backend struct {
	addr netip.AddrPort
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	conn map[net.Conn]bool
}

func startBackend(t testing.TB, handle func(c *net.TCPConn)) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{addr: ln.Addr().(*net.TCPAddr).AddrPort(), ln: ln, conn: map[net.Conn]bool{}}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conn[c] = true
			b.mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				handle(c.(*net.TCPConn))
				c.Close()
				b.mu.Lock()
				delete(b.conn, c)
				b.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		for c := range b.conn {
			c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b
}

// echo sends back what it reads, then passes the EOF on.
func echo(c *net.TCPConn) {
	io.Copy(c, c)
	c.CloseWrite()
}

// namedEcho writes name and a newline, then echoes.
func namedEcho(name string) func(*net.TCPConn) {
	return func(c *net.TCPConn) {
		if _, err := c.Write([]byte(name + "\n")); err != nil {
			return
		}
		echo(c)
	}
}

// deadAddr returns an address on which nothing listens.
func deadAddr(t testing.TB) netip.AddrPort { return testnet.RefusedAddr(t) }

// service builds the app "/app<port>" offering one TCP service on port.
func service(port int, backends ...netip.AddrPort) *discovery.App {
	id := "/app" + strconv.Itoa(port)
	s := &discovery.Service{Key: discovery.ServiceKey{App: id}, Name: discovery.AppName(id), ServicePort: port}
	for i, b := range backends {
		s.Backends = append(s.Backends, discovery.Backend{TaskID: id + "." + strconv.Itoa(i), Host: "127.0.0.1", Addr: b})
	}
	return &discovery.App{ID: id, Services: []*discovery.Service{s}}
}

func put(tb *discovery.Table, apps ...*discovery.App) {
	tb.Apply(discovery.Update{Source: "test", Apps: apps})
}

// harness is a running proxy with its table.
type harness struct {
	t     testing.TB
	p     *TCP
	table *discovery.Table
	mu    sync.Mutex
	// opened counts OnListening calls per port; cond signals each one.
	opened map[int]int
	cond   *sync.Cond
}

// newHarness starts a proxy bound to 127.0.0.1 for ports [min(ports),
// max(ports)]; cfg's other fields are kept. It stops at test cleanup.
func newHarness(t testing.TB, cfg TCPConfig, ports ...int) *harness {
	t.Helper()
	return newHarnessLog(t, cfg, nil, ports...)
}

// newHarnessLog is newHarness logging to log; nil means the test's log.
func newHarnessLog(t testing.TB, cfg TCPConfig, log *zap.Logger, ports ...int) *harness {
	t.Helper()
	h := &harness{t: t, table: discovery.NewTable(), opened: map[int]int{}}
	h.cond = sync.NewCond(&h.mu)
	cfg.Bind = "127.0.0.1"
	if cfg.PortMin == 0 {
		cfg.PortMin, cfg.PortMax = 65535, 1
		for _, p := range ports {
			cfg.PortMin, cfg.PortMax = min(cfg.PortMin, p), max(cfg.PortMax, p)
		}
	}
	cfg.OnListening = func(port int, _ net.Addr) {
		h.mu.Lock()
		h.opened[port]++
		h.cond.Broadcast()
		h.mu.Unlock()
	}
	if tt, ok := t.(*testing.T); ok && log == nil {
		log = zaptest.NewLogger(tt, zaptest.Level(zap.DebugLevel))
	}
	p, err := NewTCP(cfg, h.table, log)
	if err != nil {
		t.Fatal(err)
	}
	h.p = p
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		p.Shutdown(sctx)
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return h
}

// echoHarness starts a proxy on a free port in front of one echo backend
// and waits until the port listens.
func echoHarness(t testing.TB) (*harness, int) {
	t.Helper()
	port := testnet.FreePorts(t, 1)[0]
	h := newHarness(t, TCPConfig{}, port)
	put(h.table, service(port, startBackend(t, echo).addr))
	h.waitOpened(port, 1)
	return h, port
}

// waitOpened waits until port's listener has opened n times in all.
func (h *harness) waitOpened(port, n int) {
	h.t.Helper()
	deadline := time.AfterFunc(waitFor, func() {
		h.mu.Lock()
		h.cond.Broadcast()
		h.mu.Unlock()
	})
	defer deadline.Stop()
	start := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	for h.opened[port] < n {
		if time.Since(start) >= waitFor {
			h.t.Fatalf("port %d: listener opened %d times, want %d", port, h.opened[port], n)
		}
		h.cond.Wait()
	}
}

func (h *harness) openedCount(port int) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.opened[port]
}

// status returns Ports()'s entry for port, ok false if there is none.
func (h *harness) status(port int) (PortStatus, bool) {
	for _, st := range h.p.Ports() {
		if st.Port == port {
			return st, true
		}
	}
	return PortStatus{}, false
}

// waitApplied waits until the proxy has acted on the table's newest
// snapshot: its listeners follow the table on the proxy's own goroutine.
func (h *harness) waitApplied() {
	h.t.Helper()
	v := h.table.Snapshot().Version()
	eventually(h.t, "the proxy to apply the table", func() bool { return h.p.Applied() >= v })
}

// eventually polls cond until it holds or waitFor passes (STYLE 14: poll
// with a deadline, never sleep and hope).
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func dial(t testing.TB, port int) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), waitFor)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(waitFor)) // a hung test fails, it does not hang
	return c.(*net.TCPConn)
}

// roundTrip writes msg and reads the same number of bytes back.
func roundTrip(t testing.TB, c net.Conn, msg string) string {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(buf)
}

// readLine reads up to and without the first newline, byte by byte so
// nothing after it is consumed.
func readLine(t testing.TB, c net.Conn) string {
	t.Helper()
	var out []byte
	b := make([]byte, 1)
	for {
		if _, err := c.Read(b); err != nil {
			t.Fatalf("read line: %v (got %q)", err, out)
		}
		if b[0] == '\n' {
			return string(out)
		}
		out = append(out, b[0])
	}
}

// refused reports whether a dial to port on 127.0.0.1 is refused.
func refused(port int) bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	if err == nil {
		c.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// draining reports whether the proxy has started draining port's
// connections to addr.
func (h *harness) draining(port int, addr netip.AddrPort) bool {
	h.p.mu.Lock()
	ps, _ := h.p.ports.Get(port)
	h.p.mu.Unlock()
	if ps == nil {
		return false
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	bc := ps.backends[addr]
	return bc != nil && bc.draining
}
