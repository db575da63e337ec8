package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/internal/testnet"
	"github.com/pacer-lb/pacer/proxy"
)

// quiet is how long a client held at the connection cap is watched for
// bytes it must not get. A check of absence: on a machine too slow to
// answer within it, it could only pass wrongly, never fail wrongly.
const quiet = 100 * time.Millisecond

// sharedRig is an HTTP plane (rig) and a TCP plane on the same table,
// sharing one connection cap, as cmd/lb wires them for --max-conns.
type sharedRig struct {
	*rig
	limit   *proxy.ConnLimit
	tcpAddr string // the TCP-mode service port, an echo service
	// echoConns counts the connections the TCP plane's backend accepted,
	// httpReqs the requests the HTTP plane's backend answered.
	echoConns, httpReqs atomic.Int64
}

// runTCPPlane runs a TCP plane on table beside a rig's HTTP plane, as
// cmd/lb runs both, until the test's cleanup.
func runTCPPlane(t *testing.T, cfg proxy.TCPConfig, table *discovery.Table, log *zap.Logger) {
	t.Helper()
	tcp, err := proxy.NewTCP(cfg, table, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { defer close(runDone); _ = tcp.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		sctx, c2 := context.WithTimeout(context.Background(), 5*time.Second)
		defer c2()
		_ = tcp.Shutdown(sctx)
		<-runDone
	})
}

func newSharedRig(t *testing.T, maxConns int) *sharedRig {
	log := testLogger(t)
	s := &sharedRig{limit: proxy.NewConnLimit(maxConns, log)}
	s.rig = newRigLog(t, t, Config{ConnLimit: s.limit}, log)

	tcpPort := testnet.FreePort(t)
	opened := make(chan struct{}, 1)
	runTCPPlane(t, proxy.TCPConfig{
		Bind: "127.0.0.1", PortMin: tcpPort, PortMax: tcpPort, ConnLimit: s.limit,
		OnListening: func(int, net.Addr) { opened <- struct{}{} },
	}, s.table, log)

	echo := rawBackend(t, func(c net.Conn) {
		s.echoConns.Add(1)
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	})
	_, web := httpBackend(t, "web", func(w http.ResponseWriter, _ *http.Request) {
		s.httpReqs.Add(1)
		io.WriteString(w, "web")
	})
	tcpApp := &discovery.App{ID: "/echo", Services: []*discovery.Service{{
		Key: discovery.ServiceKey{App: "/echo"}, Name: discovery.AppName("/echo"), ServicePort: tcpPort,
		Mode: discovery.ModeTCP, Backends: []discovery.Backend{{TaskID: "echo.1", Addr: echo}},
	}}}
	s.apply(app("/web", 0, []string{"web.test"}, "", web), tcpApp)
	select {
	case <-opened:
	case <-time.After(waitFor):
		t.Fatal("the TCP plane never opened its service port")
	}
	s.waitApplied()
	s.tcpAddr = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(tcpPort)).String()
	return s
}

// waitLimited waits until the shared cap is reached.
func (s *sharedRig) waitLimited(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(waitFor); !s.limit.Status().Limited; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the cap was never reached: %+v", s.limit.Status())
		}
	}
}

// dialShared connects to addr; the test's cleanup closes the connection.
func dialShared(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

const webRequest = "GET / HTTP/1.1\r\nHost: web.test\r\n\r\n"

// webResponse reads one answer to webRequest from br and checks it.
func webResponse(t *testing.T, c net.Conn, br *bufio.Reader, what string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(waitFor))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || string(body) != "web" {
		t.Fatalf("%s: %d %q, %v", what, resp.StatusCode, body, err)
	}
}

// httpClient opens a keep-alive client of the --http listener that has
// had one answer, and so holds a slot of the cap.
func (s *sharedRig) httpClient(t *testing.T) net.Conn {
	t.Helper()
	c := dialShared(t, s.vhost)
	if _, err := io.WriteString(c, webRequest); err != nil {
		t.Fatal(err)
	}
	webResponse(t, c, bufio.NewReader(c), "HTTP client below the cap")
	return c
}

// tcpClient opens a client of the TCP-mode service port that has had one
// echo, and so holds a slot of the cap.
func (s *sharedRig) tcpClient(t *testing.T) net.Conn {
	t.Helper()
	c := dialShared(t, s.tcpAddr)
	if got := echoOnce(t, c, "below"); got != "below" {
		t.Fatalf("TCP client below the cap: got %q", got)
	}
	return c
}

// echoOnce writes msg to c and reads as many bytes back.
func echoOnce(t *testing.T, c net.Conn, msg string) string {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	return readEcho(t, c, len(msg))
}

func readEcho(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(waitFor))
	buf := make([]byte, n)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("reading the echo: %v (got %q)", err, buf)
	}
	return string(buf)
}

// assertHeld fails if c gets a byte within quiet: a client past the cap
// connects (the kernel completes its handshake in the backlog) but nothing
// it sends may reach a backend.
func assertHeld(t *testing.T, c net.Conn, what string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(quiet))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s past the cap was served: read %q, %v", what, buf[:n], err)
	}
}

func (s *sharedRig) assertOpen(t *testing.T, want int64) {
	t.Helper()
	if st := s.limit.Status(); st.Open != want {
		t.Fatalf("%d connections counted against the cap, want %d: %+v", st.Open, want, st)
	}
}

// --max-conns is one budget for both planes, as HAProxy's global maxconn:
// with the cap taken by HTTP clients, a new TCP-plane client waits in the
// backlog, and an HTTP client that closes lets exactly that one in.
func TestSharedCapHTTPClientsHoldTCPClient(t *testing.T) {
	const maxConns = 2
	s := newSharedRig(t, maxConns)
	var held []net.Conn
	for range maxConns {
		held = append(held, s.httpClient(t))
	}

	waiting := dialShared(t, s.tcpAddr)
	if _, err := io.WriteString(waiting, "waiting"); err != nil {
		t.Fatal(err)
	}
	assertHeld(t, waiting, "TCP client")
	if n := s.echoConns.Load(); n != 0 {
		t.Fatalf("the TCP backend has %d connections while HTTP clients hold the cap", n)
	}
	s.waitLimited(t)
	s.assertOpen(t, maxConns)

	held[0].Close()
	if got := readEcho(t, waiting, len("waiting")); got != "waiting" {
		t.Fatalf("TCP client after an HTTP client closed: got %q", got)
	}
	s.assertOpen(t, maxConns)
	// The one freed slot went to the TCP client: a new HTTP client waits.
	next := dialShared(t, s.vhost)
	if _, err := io.WriteString(next, webRequest); err != nil {
		t.Fatal(err)
	}
	assertHeld(t, next, "HTTP client")
	waiting.Close()
	webResponse(t, next, bufio.NewReader(next), "HTTP client after the TCP client closed")
}

// The reverse: with the cap taken by TCP-plane clients, a new HTTP client
// waits in the backlog, and a TCP client that closes lets exactly that one
// in.
func TestSharedCapTCPClientsHoldHTTPClient(t *testing.T) {
	const maxConns = 2
	s := newSharedRig(t, maxConns)
	var held []net.Conn
	for range maxConns {
		held = append(held, s.tcpClient(t))
	}

	waiting := dialShared(t, s.vhost)
	if _, err := io.WriteString(waiting, webRequest); err != nil {
		t.Fatal(err)
	}
	assertHeld(t, waiting, "HTTP client")
	if n := s.httpReqs.Load(); n != 0 {
		t.Fatalf("the HTTP backend got %d requests while TCP clients hold the cap", n)
	}
	s.waitLimited(t)
	s.assertOpen(t, maxConns)

	held[0].Close()
	webResponse(t, waiting, bufio.NewReader(waiting), "HTTP client after a TCP client closed")
	s.assertOpen(t, maxConns)
	// The one freed slot went to the HTTP client: a new TCP client waits.
	next := dialShared(t, s.tcpAddr)
	if _, err := io.WriteString(next, "next"); err != nil {
		t.Fatal(err)
	}
	assertHeld(t, next, "TCP client")
	waiting.Close()
	if got := readEcho(t, next, len("next")); got != "next" {
		t.Fatalf("TCP client after the HTTP client closed: got %q", got)
	}
}

// Without a shared cap the HTTP plane keeps one of its own, of MaxConns.
func TestOwnCapWithoutSharedLimit(t *testing.T) {
	r := newRig(t, Config{MaxConns: 1})
	_, web := httpBackend(t, "web", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "web") })
	r.apply(app("/web", 0, []string{"web.test"}, "", web))
	r.waitApplied()
	first := dialShared(t, r.vhost)
	if _, err := io.WriteString(first, webRequest); err != nil {
		t.Fatal(err)
	}
	webResponse(t, first, bufio.NewReader(first), "first client")
	if st := r.p.capped.Status(); st.Max != 1 || st.Open != 1 {
		t.Fatalf("own cap: %+v, want 1 of 1 open", st)
	}
	second := dialShared(t, r.vhost)
	if _, err := io.WriteString(second, webRequest); err != nil {
		t.Fatal(err)
	}
	assertHeld(t, second, "second client")
	first.Close()
	webResponse(t, second, bufio.NewReader(second), "second client after the first closed")
}

// An HTTP listener with no client pending holds no slot of the shared
// cap: were it to take one before it accepts, every idle HTTP listener
// (the --http one, each HTTP-mode service port) would keep a slot from
// the TCP plane, and with a cap of 1 the TCP plane could serve no one.
func TestSharedCapIdleHTTPListenerHoldsNoSlot(t *testing.T) {
	s := newSharedRig(t, 1)
	c := s.tcpClient(t)
	s.assertOpen(t, 1)
	c.Close()
	// And the other way: the slot the TCP client gave back serves an
	// HTTP client.
	s.httpClient(t)
}
