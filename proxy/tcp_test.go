package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/internal/testnet"
)

func TestTCPForwardsRequestAndReply(t *testing.T) {
	t.Parallel()
	port := testnet.FreePorts(t, 1)[0]
	h := newHarness(t, TCPConfig{}, port)
	be := startBackend(t, echo)
	put(h.table, service(port, be.addr))
	h.waitOpened(port, 1)

	c := dial(t, port)
	if got := roundTrip(t, c, "ping"); got != "ping" {
		t.Fatalf("reply = %q, want ping", got)
	}
	c.Close()
	eventually(t, "counters after close", func() bool {
		st, _ := h.status(port)
		return st.Listening && st.Total == 1 && st.Active == 0 && st.BytesIn == 4 && st.BytesOut == 4 && st.Failed == 0
	})
}

func TestTCPRoundRobin(t *testing.T) {
	t.Parallel()
	port := testnet.FreePorts(t, 1)[0]
	h := newHarness(t, TCPConfig{}, port)
	var addrs []netip.AddrPort
	for _, name := range []string{"a", "b", "c"} {
		addrs = append(addrs, startBackend(t, namedEcho(name)).addr)
	}
	put(h.table, service(port, addrs...))
	h.waitOpened(port, 1)

	var got []string
	for range 6 {
		c := dial(t, port)
		got = append(got, readLine(t, c))
		c.Close()
	}
	// Each window of three consecutive connections covers every backend.
	for i := 0; i < len(got); i += 3 {
		seen := map[string]bool{}
		for _, n := range got[i : i+3] {
			seen[n] = true
		}
		if len(seen) != 3 {
			t.Fatalf("connections went to %v, want each backend once per three", got)
		}
	}
}

func TestTCPSourceBalanceSticksToOneBackend(t *testing.T) {
	t.Parallel()
	port := testnet.FreePorts(t, 1)[0]
	h := newHarness(t, TCPConfig{}, port)
	app := service(port, startBackend(t, namedEcho("a")).addr, startBackend(t, namedEcho("b")).addr)
	app.Services[0].Balance = discovery.BalanceSource
	put(h.table, app)
	h.waitOpened(port, 1)

	first := readLine(t, dial(t, port))
	for range 4 {
		if got := readLine(t, dial(t, port)); got != first {
			t.Fatalf("source balance sent one client to %s and %s", first, got)
		}
	}
}

func TestTCPLeastConn(t *testing.T) {
	t.Parallel()
	port := testnet.FreePorts(t, 1)[0]
	h := newHarness(t, TCPConfig{}, port)
	app := service(port, startBackend(t, namedEcho("a")).addr, startBackend(t, namedEcho("b")).addr)
	app.Services[0].Balance = discovery.BalanceLeastConn
	put(h.table, app)
	h.waitOpened(port, 1)

	// The name arrives only once the proxy tracks the connection, so the
	// second pick sees the first connection.
	first := readLine(t, dial(t, port))
	second := readLine(t, dial(t, port))
	if first == second {
		t.Fatalf("leastconn sent two open connections to %s while the other backend had none", first)
	}
}

func TestTCPSkipsDeadBackend(t *testing.T) {
	t.Parallel()
	port := testnet.FreePorts(t, 1)[0]
	h := newHarness(t, TCPConfig{}, port)
	live := startBackend(t, namedEcho("live"))
	put(h.table, service(port, deadAddr(t), live.addr, deadAddr(t)))
	h.waitOpened(port, 1)

	for i := range 4 {
		c := dial(t, port)
		if got := readLine(t, c); got != "live" {
			t.Fatalf("connection %d reached %q", i, got)
		}
		c.Close()
	}
	st, _ := h.status(port)
	if st.DialErrors == 0 || st.Failed != 0 {
		t.Fatalf("dial errors = %d, failed = %d; want some dial errors and no failed connection", st.DialErrors, st.Failed)
	}
}

// A client that speaks first has its bytes read before the backend is
// chosen and sent with the connect; when that connect is refused they go
// to the next backend, whole and once.
func TestTCPClientFirstBytesSurviveARefusedDial(t *testing.T) {
	t.Parallel()
	port := testnet.FreePorts(t, 1)[0]
	h := newHarness(t, TCPConfig{}, port)
	put(h.table, service(port, deadAddr(t), startBackend(t, echo).addr, deadAddr(t)))
	h.waitOpened(port, 1)

	for i := range 12 {
		c := dial(t, port)
		msg := fmt.Sprintf("request %d, sent before any backend answered", i)
		if got := roundTrip(t, c, msg); got != msg {
			t.Fatalf("connection %d: echo %q, want %q", i, got, msg)
		}
		// Nothing more than the request arrives: the bytes went once.
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
			t.Fatalf("connection %d: after the echo %q, %v; want EOF", i, rest, err)
		}
		c.Close()
	}
	st, _ := h.status(port)
	if st.DialErrors == 0 || st.Failed != 0 {
		t.Fatalf("dial errors = %d, failed = %d; want some dial errors and no failed connection", st.DialErrors, st.Failed)
	}
}

// A backend that never answers the SYN costs a client DialTimeout, not the
// kernel's two minutes of retries, and the next backend serves it.
func TestTCPDialTimeoutMovesOnFromSilentBackend(t *testing.T) {
	t.Parallel()
	const dialTimeout = 200 * time.Millisecond
	port := testnet.FreePorts(t, 1)[0]
	h := newHarness(t, TCPConfig{DialTimeout: dialTimeout}, port)
	put(h.table, service(port, testnet.SilentAddr(t), startBackend(t, namedEcho("live")).addr))
	h.waitOpened(port, 1)

	for i := range 2 { // round robin: one of the two starts at the silent one
		start := time.Now()
		c := dial(t, port)
		if got := readLine(t, c); got != "live" {
			t.Fatalf("connection %d reached %q", i, got)
		}
		c.Close()
		t.Logf("connection %d answered after %v", i, time.Since(start))
	}
	st, _ := h.status(port)
	if st.DialErrors != 1 || st.Failed != 0 {
		t.Fatalf("dial errors = %d, failed = %d; want 1 timed-out dial and no failed connection", st.DialErrors, st.Failed)
	}
}

// A dial still waiting for its handshake waits on a worker, never in the
// accept loop: the clients behind it are served meanwhile.
func TestTCPPendingDialDoesNotHoldUpOtherClients(t *testing.T) {
	t.Parallel()
	port := testnet.FreePorts(t, 1)[0]
	// A minute to answer the SYN, so nothing moves on from the silent
	// backend while the test runs; the short drain lets the cleanup's
	// Shutdown abort the dials still waiting.
	h := newHarness(t, TCPConfig{DialTimeout: time.Minute, DrainTimeout: 50 * time.Millisecond}, port)
	silent := testnet.SilentAddr(t)
	put(h.table, service(port, silent))
	h.waitOpened(port, 1)

	// One client more than there are accept loops (one per P), every one
	// of them waiting for the silent backend's handshake. A loop that
	// waited for the dial of the connection it accepted would stop at its
	// first, and the last client would never be accepted.
	waiting := runtime.GOMAXPROCS(0) + 1
	for range waiting {
		dial(t, port)
	}
	eventually(t, fmt.Sprintf("%d clients accepted while their dials wait", waiting), func() bool {
		st, _ := h.status(port)
		return st.Active == int64(waiting)
	})

	// A task that answers comes up: of the next two clients, round robin
	// sends one to it, and that one is served while the others still wait.
	put(h.table, service(port, silent, startBackend(t, namedEcho("live")).addr))
	lines := make(chan string, 2)
	for range 2 {
		c := dial(t, port)
		go func() {
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				line = err.Error()
			}
			lines <- strings.TrimSpace(line)
		}()
	}
	select {
	case got := <-lines:
		if got != "live" {
			t.Fatalf("first answer %q; want the live backend's while the other dials wait", got)
		}
	case <-time.After(waitFor):
		t.Fatal("no client served while the silent backend's dials wait")
	}
	if st, _ := h.status(port); st.DialErrors != 0 || st.Failed != 0 {
		t.Fatalf("dial errors = %d, failed = %d; want none: the silent backend's dials are still waiting", st.DialErrors, st.Failed)
	}
}

// The seed's case: the only task served a connection and died; Marathon
// starts a new one a moment later, and a client already waiting on the
// service port must reach it.
func TestTCPHoldsClientUntilBackendAppears(t *testing.T) {
	t.Parallel()
	port := testnet.FreePorts(t, 1)[0]
	h := newHarness(t, TCPConfig{WaitForBackend: waitFor}, port)
	put(h.table, service(port)) // the port is claimed, nothing routable
	h.waitOpened(port, 1)

	c := dial(t, port)
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the client to be held", func() bool {
		st, _ := h.status(port)
		return st.Active == 1
	})
	be := startBackend(t, echo)
	go put(h.table, service(port, be.addr))

	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("held client read %q, %v; want hello", buf, err)
	}
}

func TestTCPHeldClientRetriesWhenEveryDialFails(t *testing.T) {
	t.Parallel()
	port := testnet.FreePorts(t, 1)[0]
	h := newHarness(t, TCPConfig{WaitForBackend: waitFor}, port)
	put(h.table, service(port, deadAddr(t))) // listed, but dead (TASK_KILLED not seen yet)
	h.waitOpened(port, 1)

	c := dial(t, port)
	eventually(t, "the dial to the dead backend to fail", func() bool {
		st, _ := h.status(port)
		return st.DialErrors >= 1
	})
	put(h.table, service(port, startBackend(t, echo).addr))
	if got := roundTrip(t, c, "x"); got != "x" {
		t.Fatalf("got %q", got)
	}
}

func TestTCPNoBackendClosesAfterWait(t *testing.T) {
	t.Parallel()
	const wait = 150 * time.Millisecond
	port := testnet.FreePorts(t, 1)[0]
	h := newHarness(t, TCPConfig{WaitForBackend: wait}, port)
	put(h.table, service(port))
	h.waitOpened(port, 1)

	start := time.Now()
	c := dial(t, port)
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read = %d, %v; want the proxy to close the client", n, err)
	}
	if d := time.Since(start); d < wait {
		t.Fatalf("closed after %v, before WaitForBackend %v", d, wait)
	}
	eventually(t, "failed counter", func() bool {
		st, _ := h.status(port)
		return st.Failed == 1 && st.Active == 0
	})
}

func TestTCPHalfClose(t *testing.T) {
	t.Parallel()
	port := testnet.FreePorts(t, 1)[0]
	h := newHarness(t, TCPConfig{}, port)
	// The backend answers only after the client's EOF.
	be := startBackend(t, func(c *net.TCPConn) {
		req, err := io.ReadAll(c)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "got %d bytes: %s", len(req), strings.ToUpper(string(req)))
	})
	put(h.table, service(port, be.addr))
	h.waitOpened(port, 1)

	c := dial(t, port)
	if _, err := c.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "got 7 bytes: REQUEST" {
		t.Fatalf("reply = %q, %v", got, err)
	}
}

// Bulk data both ways after small messages: the connection starts relayed
// in the poller and is handed to the copy loops (buffered bytes first, then
// splice) without losing or reordering a byte, and the FINs still end it.
func TestTCPBulkAfterSmallMessages(t *testing.T) {
	t.Parallel()
	_, port := echoHarness(t)

	c := dial(t, port)
	for i := range 20 {
		if msg := fmt.Sprintf("small %d", i); roundTrip(t, c, msg) != msg {
			t.Fatalf("round trip %d garbled", i)
		}
	}
	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(i * 7 / 13)
	}
	sent := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.CloseWrite()
		}
		sent <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	if err := <-sent; err != nil {
		t.Fatalf("writing: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("echo of %d bytes came back as %d bytes, or reordered", len(data), len(got))
	}
}

func TestTCPBackendResetResetsClient(t *testing.T) {
	t.Parallel()
	port := testnet.FreePorts(t, 1)[0]
	h := newHarness(t, TCPConfig{}, port)
	be := startBackend(t, func(c *net.TCPConn) {
		c.Read(make([]byte, 1))
		c.SetLinger(0) // Close now sends RST
	})
	put(h.table, service(port, be.addr))
	h.waitOpened(port, 1)

	c := dial(t, port)
	c.Write([]byte("x"))
	_, err := c.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read after backend reset: %v, want ECONNRESET (a clean EOF would pass a cut stream for a whole one)", err)
	}
}

func TestTCPIdleTimeout(t *testing.T) {
	t.Parallel()
	const idle = 300 * time.Millisecond

	t.Run("idle both ways is closed", func(t *testing.T) {
		t.Parallel()
		port := testnet.FreePorts(t, 1)[0]
		h := newHarness(t, TCPConfig{IdleTimeout: idle}, port)
		put(h.table, service(port, startBackend(t, echo).addr))
		h.waitOpened(port, 1)
		c := dial(t, port)
		roundTrip(t, c, "x")
		last := time.Now()
		_, err := c.Read(make([]byte, 1))
		if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("idle connection read: %v, want closed", err)
		}
		// Closed between IdleTimeout and 1.5x (plus scheduling slack).
		if d := time.Since(last); d < idle || d > 3*idle+2*time.Second {
			t.Fatalf("idle connection closed after %v; IdleTimeout %v", d, idle)
		}
	})

	// A stream in one direction keeps the connection, whichever direction.
	const chunks = 20 // at 30ms each: 2x the idle timeout
	t.Run("backend streaming to a silent client stays", func(t *testing.T) {
		t.Parallel()
		port := testnet.FreePorts(t, 1)[0]
		h := newHarness(t, TCPConfig{IdleTimeout: idle}, port)
		put(h.table, service(port, startBackend(t, func(c *net.TCPConn) {
			tick := time.NewTicker(30 * time.Millisecond)
			defer tick.Stop()
			for range chunks {
				<-tick.C
				if _, err := c.Write([]byte("x")); err != nil {
					return
				}
			}
		}).addr))
		h.waitOpened(port, 1)
		got, err := io.ReadAll(dial(t, port))
		if err != nil || len(got) != chunks {
			t.Fatalf("client read %d bytes, %v; want the whole stream of %d", len(got), err, chunks)
		}
	})
	t.Run("client streaming to a silent backend stays", func(t *testing.T) {
		t.Parallel()
		port := testnet.FreePorts(t, 1)[0]
		h := newHarness(t, TCPConfig{IdleTimeout: idle}, port)
		put(h.table, service(port, startBackend(t, func(c *net.TCPConn) {
			n, _ := io.Copy(io.Discard, c) // silent until the client's EOF
			fmt.Fprint(c, n)
		}).addr))
		h.waitOpened(port, 1)
		c := dial(t, port)
		tick := time.NewTicker(30 * time.Millisecond)
		defer tick.Stop()
		for range chunks {
			<-tick.C
			if _, err := c.Write([]byte("x")); err != nil {
				t.Fatalf("streaming client cut off: %v", err)
			}
		}
		c.CloseWrite()
		got, err := io.ReadAll(c)
		if err != nil || string(got) != fmt.Sprint(chunks) {
			t.Fatalf("backend saw %q bytes, %v; want %d", got, err, chunks)
		}
	})
}

func TestNewTCPValidates(t *testing.T) {
	t.Parallel()
	tb := discovery.NewTable()
	for _, tc := range []struct {
		name string
		cfg  TCPConfig
	}{
		{"no range", TCPConfig{}},
		{"range out of order", TCPConfig{PortMin: 9000, PortMax: 8000}},
		{"range too high", TCPConfig{PortMin: 8000, PortMax: 70000}},
		{"bind not an IP", TCPConfig{PortMin: 8000, PortMax: 8100, Bind: "localhost"}},
		{"negative timeout", TCPConfig{PortMin: 8000, PortMax: 8100, IdleTimeout: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewTCP(tc.cfg, tb, nil); err == nil {
				t.Fatal("NewTCP accepted a bad config")
			}
		})
	}
	p, err := NewTCP(TCPConfig{PortMin: 8000, PortMax: 8100}, tb, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.cfg.DialTimeout != DefaultTCPDialTimeout || p.cfg.IdleTimeout != DefaultTCPIdleTimeout ||
		p.cfg.WaitForBackend != DefaultTCPWaitForBackend || p.cfg.MaxAttempts != DefaultTCPMaxAttempts ||
		p.cfg.DrainTimeout != DefaultTCPDrainTimeout || p.bind != "0.0.0.0" || p.window != maxCopyWindow {
		t.Fatalf("defaults not applied: %+v", p.cfg)
	}
}

// A dial startConn left in flight is finished even when the service
// changed before a worker took the connection up (a deploy while clients
// connect to backends on other hosts): dropped, its socket would stay open
// for good. The client still reaches the new backend.
func TestTCPPendingDialFinishedAcrossAServiceChange(t *testing.T) {
	port := testnet.FreePorts(t, 1)[0]
	h := newHarness(t, TCPConfig{DialTimeout: 200 * time.Millisecond, DrainTimeout: 50 * time.Millisecond}, port)
	silent := testnet.SilentAddr(t)
	live := startBackend(t, namedEcho("live")).addr
	put(h.table, service(port, silent))
	h.waitOpened(port, 1)
	// As the worker starts, the app is redeployed onto the live backend.
	hook := func() { put(h.table, service(port, live)) }
	testHookServeConn.Store(&hook)
	t.Cleanup(func() { testHookServeConn.Store(nil) })
	c := dial(t, port)
	_ = c.SetReadDeadline(time.Now().Add(waitFor))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "live" {
		t.Fatalf("client read %q, %v; want the live backend", line, err)
	}
	testHookServeConn.Store(nil)
	eventually(t, "the dial to the silent backend to be closed", func() bool {
		n, err := testnet.ConnectsInFlight(silent)
		if err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
}
