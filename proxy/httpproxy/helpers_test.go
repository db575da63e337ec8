package httpproxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/internal/testnet"
)

// waitFor bounds how long a test waits for a condition; a bound for a broken
// build, not a sleep.
const waitFor = 10 * time.Second

// rig is a proxy on a table, with its vhost listener and per-port listeners.
type rig struct {
	t     *testing.T
	p     *Proxy
	table *discovery.Table
	vhost string // host:port of the --http listener

	mu        sync.Mutex
	listening map[int]net.Addr
	opened    chan int
}

func newRig(t *testing.T, cfg Config) *rig { return newRigTB(t, t, cfg) }

func newRigTB(tb testing.TB, t *testing.T, cfg Config) *rig { return newRigLog(tb, t, cfg, nil) }

// newRigLog is newRigTB with the proxy logging to log (nil: the test's log).
func newRigLog(tb testing.TB, t *testing.T, cfg Config, log *zap.Logger) *rig {
	tb.Helper()
	r := &rig{t: t, table: discovery.NewTable(), listening: map[int]net.Addr{}, opened: make(chan int, 64)}
	if cfg.PortMin == 0 {
		cfg.PortMin, cfg.PortMax = 1024, 65535
	}
	cfg.Bind = "127.0.0.1"
	cfg.OnListening = func(port int, addr net.Addr) {
		r.mu.Lock()
		r.listening[port] = addr
		r.mu.Unlock()
		r.opened <- port
	}
	if log == nil {
		log = zap.NewNop()
		if t != nil {
			log = testLogger(t)
		}
	}
	p, err := New(cfg, r.table, log)
	if err != nil {
		tb.Fatal(err)
	}
	r.p = p
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	r.vhost = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	vhDone := make(chan struct{})
	go func() { defer close(runDone); _ = p.Run(ctx) }()
	go func() { defer close(vhDone); _ = p.ServeVHost(ln) }()
	tb.Cleanup(func() {
		cancel()
		sctx, c2 := context.WithTimeout(context.Background(), 5*time.Second)
		defer c2()
		_ = p.Shutdown(sctx)
		<-runDone
		<-vhDone
	})
	return r
}

// lateLogs counts the log entries testLogger's loggers wrote after their
// test's cleanup.
var lateLogs atomic.Int64

// testLogger is zaptest's logger for t until t's cleanup has run, and a
// logger to stderr after: a proxy goroutine may outlive the test that
// started it (a handler still waiting for its backend when Shutdown's
// drain gave up on it), and a t.Log after the test completed panics,
// which ends the run of every test after it. Called before the rig
// registers its own cleanup, so that its cleanup runs after the rig's.
func testLogger(t *testing.T) *zap.Logger {
	g := &logGuard{}
	t.Cleanup(g.close)
	late := zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()), zapcore.Lock(os.Stderr), zapcore.DebugLevel).
		With([]zapcore.Field{zap.String("after_test", t.Name())})
	return zaptest.NewLogger(t, zaptest.WrapOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return &guardedCore{test: c, late: late, g: g}
	})))
}

// logGuard says whether a test's cleanup has run.
type logGuard struct {
	mu   sync.RWMutex // held for reading while an entry is written to the test
	done bool
}

func (g *logGuard) close() {
	g.mu.Lock()
	g.done = true
	g.mu.Unlock()
}

// guardedCore writes to test until its guard closes, to late after.
type guardedCore struct {
	test, late zapcore.Core
	g          *logGuard
}

func (c *guardedCore) Enabled(l zapcore.Level) bool { return c.test.Enabled(l) }

func (c *guardedCore) With(f []zapcore.Field) zapcore.Core {
	return &guardedCore{test: c.test.With(f), late: c.late.With(f), g: c.g}
}

func (c *guardedCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *guardedCore) Write(e zapcore.Entry, f []zapcore.Field) error {
	c.g.mu.RLock()
	defer c.g.mu.RUnlock()
	if c.g.done {
		lateLogs.Add(1)
		return c.late.Write(e, f)
	}
	return c.test.Write(e, f)
}

func (c *guardedCore) Sync() error { return nil }

// waitPort waits until the proxy listens on port.
func (r *rig) waitPort(port int) string {
	r.t.Helper()
	deadline := time.After(waitFor)
	for {
		r.mu.Lock()
		_, ok := r.listening[port]
		r.mu.Unlock()
		if ok {
			return "127.0.0.1:" + strconv.Itoa(port)
		}
		select {
		case <-r.opened:
		case <-deadline:
			r.t.Fatalf("port %d never opened", port)
		}
	}
}

// app builds an HTTP-mode app with one service.
func app(id string, port int, vhosts []string, path string, backends ...netip.AddrPort) *discovery.App {
	s := &discovery.Service{
		Key: discovery.ServiceKey{App: id}, Name: discovery.AppName(id), ServicePort: port,
		Mode: discovery.ModeHTTP, VHosts: vhosts,
	}
	if path != "" {
		s.Paths = []string{path}
	}
	for i, b := range backends {
		s.Backends = append(s.Backends, discovery.Backend{TaskID: id + ".task" + strconv.Itoa(i), Addr: b})
	}
	return &discovery.App{ID: id, Services: []*discovery.Service{s}}
}

func (r *rig) apply(apps ...*discovery.App) {
	r.table.Apply(discovery.Update{Source: "test", Apps: apps})
}

// waitApplied waits until the proxy has acted on the table's newest
// snapshot: its listeners follow the table on the proxy's own goroutine.
func (r *rig) waitApplied() {
	r.t.Helper()
	v := r.table.Snapshot().Version()
	for deadline := time.Now().Add(waitFor); r.p.Applied() < v; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			r.t.Fatalf("the proxy never applied snapshot %d (at %d)", v, r.p.Applied())
		}
	}
}

// rawBackend listens on a free loopback port and hands every accepted
// connection to serve, on the accept loop's goroutine; it returns the address.
func rawBackend(t testing.TB, serve func(net.Conn)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			serve(c)
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// httpBackend is a net/http test server; name is echoed in X-Backend.
func httpBackend(t *testing.T, name string, h http.HandlerFunc) (*httptest.Server, netip.AddrPort) {
	t.Helper()
	if h == nil {
		h = func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) }
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, netip.MustParseAddrPort(srv.Listener.Addr().String())
}

// deadAddr returns an address nothing listens on.
func deadAddr(t *testing.T) netip.AddrPort { return testnet.RefusedAddr(t) }

// client returns a keep-alive net/http client that does not follow redirects.
func client() *http.Client {
	return &http.Client{
		Timeout:       waitFor,
		Transport:     &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// get sends a GET with Host host to addr and returns status, body and
// response; an error fails the test. Only for the test's goroutine: others
// use tryGet.
func get(t *testing.T, c *http.Client, addr, host, path string) (int, string, *http.Response) {
	t.Helper()
	status, body, resp, err := tryGet(c, addr, host, path)
	if err != nil {
		t.Fatal(err)
	}
	return status, body, resp
}

// tryGet is get returning its error.
func tryGet(c *http.Client, addr, host, path string) (int, string, *http.Response, error) {
	req, err := http.NewRequest("GET", "http://"+addr+path, nil)
	if err != nil {
		return 0, "", nil, err
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", nil, fmt.Errorf("GET %s%s (Host %s): %w", addr, path, host, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, "", nil, fmt.Errorf("GET %s%s (Host %s): body: %w", addr, path, host, err)
	}
	return resp.StatusCode, string(b), resp, nil
}

// stickyCookie returns the STICKY cookie resp sets; its absence fails the
// test.
func stickyCookie(t *testing.T, resp *http.Response) *http.Cookie {
	t.Helper()
	for _, ck := range resp.Cookies() {
		if ck.Name == DefaultStickyCookie {
			return ck
		}
	}
	t.Fatalf("no sticky cookie in %v", resp.Header)
	return nil
}

// rawExchange writes req on a fresh connection and returns everything read
// until the proxy closes it or the deadline passes.
func rawExchange(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(waitFor))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	return string(b)
}

func statusOf(raw string) string {
	line, _, _ := strings.Cut(raw, "\r\n")
	return line
}
