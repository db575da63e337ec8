package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/internal/testnet"
)

// A Shutdown that comes while ServeVHost is starting (cmd/lb runs them on
// two goroutines, and a signal may come at any time) makes ServeVHost
// return nil without serving, not crash the process.
func TestShutdownWhileServeVHostStarts(t *testing.T) {
	var (
		p    *Proxy
		shut = errors.New("Shutdown never ran")
	)
	// ServeVHost logs this line between taking its listener and serving
	// it: the Shutdown runs there, as one from another goroutine may.
	hook := zap.Hooks(func(e zapcore.Entry) error {
		if e.Message == "http vhost listener serving" {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			shut = p.Shutdown(ctx)
		}
		return nil
	})
	core, _ := observer.New(zap.InfoLevel)
	p, err := New(Config{PortMin: 1024, PortMax: 65535, Bind: "127.0.0.1"}, discovery.NewTable(), zap.New(core, hook))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.ServeVHost(ln); err != nil {
		t.Fatalf("ServeVHost: %v", err)
	}
	if shut != nil {
		t.Fatalf("Shutdown: %v", shut)
	}
}

// A service port the table drops and claims again (an app deleted and
// created again, a mode switched there and back) is served as fast as
// before: the drain of the old listener does not keep the poller off the
// new one.
func TestPollerServesAPortClaimedAgain(t *testing.T) {
	// The old listener's drain may outlast the test: not logged to it.
	r := newRigLog(t, t, Config{}, zap.NewNop())
	be := keepAliveBackend(t, nil, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
		fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.URL.Path), req.URL.Path)
		return true
	})
	port, addr, _ := r.webPort(t, be)
	inPoller := func() uint64 {
		t.Helper()
		nc, br := dialRaw(t, addr)
		defer nc.Close()
		before := r.p.Totals().InPoller
		for range 8 {
			io.WriteString(nc, "GET /x HTTP/1.1\r\nHost: web.test\r\n\r\n")
			if raw := readRaw(t, br, false); !strings.HasSuffix(raw, "/x") {
				t.Fatalf("answer %q", raw)
			}
		}
		return r.p.Totals().InPoller - before
	}
	if n := inPoller(); n == 0 {
		t.Fatal("no request answered in the poller before the port left: the test proves nothing")
	}
	r.table.Apply(discovery.Update{Source: "test", Removed: []string{"/web"}})
	r.waitApplied()
	r.apply(app("/web", port, nil, "", be))
	r.waitApplied()
	if n := inPoller(); n == 0 {
		t.Fatal("0 of 8 requests answered in the poller on the port claimed again")
	}
}

// hangInPoller leaves a request on addr in the poller's hands, which the
// backend holds (got tells when it has it): lr's drain then waits for it,
// up to the drain's deadline.
func hangInPoller(t *testing.T, addr string, lr *listenRun, got <-chan struct{}) {
	t.Helper()
	// A stall past peekAfter since the warm-up sends the request
	// fasthttp's way; a fresh connection then tries again.
	for range 5 {
		nc, br := dialRaw(t, addr)
		io.WriteString(nc, "GET / HTTP/1.1\r\nHost: web.test\r\n\r\n")
		readRaw(t, br, false)
		io.WriteString(nc, "GET /hang HTTP/1.1\r\nHost: web.test\r\n\r\n")
		select {
		case <-got:
		case <-time.After(waitFor):
			t.Fatal("the request never reached the backend")
		}
		if lr.exchanges.Load() == 1 {
			return
		}
	}
	t.Fatal("the hanging request never went through the poller in 5 tries")
}

// A keep-alive client of a listener that drains is told to close with
// its next answer, and is closed: while the drain waits for requests to
// finish, fasthttp keeps its connections alive, and the client would stay
// on the draining listener, answered 503 for a port that left the table,
// or served past the new listener of a port claimed again.
func TestDrainingListenerClosesKeepAliveClients(t *testing.T) {
	for _, how := range []string{"port removed", "port claimed again"} {
		t.Run(how, func(t *testing.T) {
			be, got, release := hangingBackend(t)
			defer release()
			// The drain outlasts the test: it waits for the hanging
			// request. (So does the old listener's server, which must not
			// log to the test once it ended.)
			r := newRigLog(t, t, Config{DrainTimeout: waitFor}, zap.NewNop())
			port, addr, lr := r.webPort(t, be)
			nc, br := dialRaw(t, addr)
			io.WriteString(nc, "GET / HTTP/1.1\r\nHost: web.test\r\n\r\n")
			readRaw(t, br, false)
			hangInPoller(t, addr, lr, got)

			r.table.Apply(discovery.Update{Source: "test", Removed: []string{"/web"}})
			r.waitApplied()
			want := 503
			if how == "port claimed again" {
				r.apply(app("/web", port, nil, "", be))
				r.waitApplied()
				want = 200
			}
			io.WriteString(nc, "GET / HTTP/1.1\r\nHost: web.test\r\n\r\n")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != want || !resp.Close {
				t.Fatalf("the draining listener answered %d %q with Connection %q; want %d and close",
					resp.StatusCode, body, resp.Header.Get("Connection"), want)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Fatalf("after the answer: %v; want the connection closed", err)
			}
		})
	}
}

// A connection still busy when a port's drain ends is closed then: the
// drain bounds every request on the port, not only those that finish.
func TestPortDrainClosesBusyConnectionsAtItsDeadline(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	got := make(chan struct{}, 1)
	be := keepAliveBackend(t, nil, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
		if req.URL.Path == "/hold" {
			got <- struct{}{}
			<-release
		}
		io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	const drain = 200 * time.Millisecond
	core, logs := observer.New(zap.InfoLevel)
	r := newRigLog(t, t, Config{DrainTimeout: drain}, zap.New(core))
	port, addr, _ := r.webPort(t, be)
	// The first request to a cold pool: fasthttp's path, which dials.
	nc, br := dialRaw(t, addr)
	io.WriteString(nc, "GET /hold HTTP/1.1\r\nHost: web.test\r\n\r\n")
	select {
	case <-got:
	case <-time.After(waitFor):
		t.Fatal("the request never reached the backend")
	}
	// The app moves to another service port: its backend stays, the
	// old port drains.
	moved := time.Now()
	r.apply(app("/web", testnet.FreePort(t), nil, "", be))
	_, err := br.ReadByte()
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the connection is still open %v after its port left with a drain of %v: %v",
			time.Since(moved).Round(time.Millisecond), drain, err)
	}
	if el := time.Since(moved); el < drain {
		t.Fatalf("the connection was closed %v after its port left, before the drain's deadline (%v)", el, drain)
	}
	const closed = "closed connections still open at the end of the drain"
	for deadline := time.Now().Add(waitFor); logs.FilterMessage(closed).Len() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q logged", closed)
		}
	}
	e := logs.FilterMessage(closed).All()[0].ContextMap()
	if e["port"] != int64(port) || e["connections"] != int64(1) {
		t.Fatalf("logged %v; want port %d and 1 connection", e, port)
	}
}

// An answer that streams for good (a feed, a long download) from a task
// that left the table ends within DrainTimeout, cut short: a body that
// keeps moving never trips the body's silence timer.
func TestStreamFromALeftBackendEndsWithinTheDrain(t *testing.T) {
	feed := feedBackend(t)
	_, next := httpBackend(t, "next", nil)
	const drain = 300 * time.Millisecond
	r := newRig(t, Config{DrainTimeout: drain})
	r.apply(app("/feed", 0, []string{"feed.test"}, "", feed))
	resp := getFeed(t, r)
	tick := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, tick); err != nil || string(tick) != "tick\n" {
		t.Fatalf("the feed: %q, %v", tick, err)
	}
	// A deploy replaces the task; the old process lingers, and streams on.
	left := time.Now()
	r.apply(app("/feed", 0, []string{"feed.test"}, "", next))
	n, err := io.Copy(io.Discard, resp.Body)
	el := time.Since(left)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.Fatalf("the answer still streams %v after its backend left, with a drain of %v", el.Round(time.Millisecond), drain)
	case err == nil:
		t.Fatal("the cut answer ended as if it were whole")
	case el < drain:
		t.Fatalf("the answer was cut %v after its backend left, before the drain's deadline (%v)", el, drain)
	case n == 0:
		t.Fatal("nothing streamed after the backend left: cut at once, not drained")
	}
	// The service goes on, on the new task.
	if s, body, _ := get(t, client(), r.vhost, "feed.test", "/"); s != 200 || body != "next" {
		t.Fatalf("after the drain: %d %q", s, body)
	}
}

// An answer streaming from a backend that leaves and comes back within
// DrainTimeout (a health check that flapped) streams on.
func TestStreamFromABackendThatCameBackGoesOn(t *testing.T) {
	feed := feedBackend(t)
	_, next := httpBackend(t, "next", nil)
	const drain = 200 * time.Millisecond
	core, logs := observer.New(zap.InfoLevel)
	r := newRigLog(t, t, Config{DrainTimeout: drain}, zap.New(core))
	r.apply(app("/feed", 0, []string{"feed.test"}, "", feed))
	resp := getFeed(t, r)
	tick := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, tick); err != nil {
		t.Fatal(err)
	}
	r.apply(app("/feed", 0, []string{"feed.test"}, "", next))
	waitLogged(t, logs, "backend left; draining its streaming answers", 1)
	r.apply(app("/feed", 0, []string{"feed.test"}, "", feed))
	waitLogged(t, logs, "backend is back; its streaming answers stop draining", 1)
	for start := time.Now(); time.Since(start) < 3*drain; {
		if _, err := io.ReadFull(resp.Body, tick); err != nil {
			t.Fatalf("the answer %v after its backend came back: %v", time.Since(start).Round(time.Millisecond), err)
		}
	}
	// It leaves again: the drain starts again.
	left := time.Now()
	r.apply(app("/feed", 0, []string{"feed.test"}, "", next))
	_, err := io.Copy(io.Discard, resp.Body)
	if el := time.Since(left); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the answer after its backend left a second time: %v after %v, want it cut within the drain (%v)", err, el.Round(time.Millisecond), drain)
	}
}

// A request still waiting for its answer when its backend leaves and comes
// back: the answer, once it streams, streams on.
func TestStreamStartingAfterItsBackendCameBackGoesOn(t *testing.T) {
	arrived, gate := make(chan struct{}, 1), make(chan struct{})
	feed := feedBackendAfter(t, arrived, gate)
	_, next := httpBackend(t, "next", nil)
	const drain = 200 * time.Millisecond
	r := newRigLog(t, t, Config{DrainTimeout: drain}, zap.NewNop())
	r.apply(app("/feed", 0, []string{"feed.test"}, "", feed))
	nc, br := dialRaw(t, r.vhost)
	io.WriteString(nc, "GET /feed HTTP/1.1\r\nHost: feed.test\r\n\r\n")
	<-arrived // at the feed, waiting for its answer
	r.apply(app("/feed", 0, []string{"feed.test"}, "", next))
	r.waitApplied()
	r.apply(app("/feed", 0, []string{"feed.test"}, "", feed))
	r.waitApplied()
	close(gate)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	streamsOn(t, resp, 3*drain)
}

// feedBackend answers every request with an endless chunked feed, a
// "tick\n" every 10 ms, until the test ends.
func feedBackend(t *testing.T) netip.AddrPort { return feedBackendAfter(t, nil, nil) }

// feedBackendAfter is feedBackend telling arrived of each request (if not
// nil) and answering only once gate is closed (a nil gate: at once).
func feedBackendAfter(t *testing.T, arrived chan<- struct{}, gate <-chan struct{}) netip.AddrPort {
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	return keepAliveBackend(t, nil, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
		if arrived != nil {
			arrived <- struct{}{}
		}
		if gate != nil {
			select {
			case <-gate:
			case <-stop:
				return false
			}
		}
		io.WriteString(bw, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
		for {
			io.WriteString(bw, "5\r\ntick\n\r\n")
			if bw.Flush() != nil {
				return false
			}
			select {
			case <-stop:
				return false
			case <-time.After(10 * time.Millisecond):
			}
		}
	})
}

// getFeed asks r's vhost listener for feed.test and returns the answer,
// its body streaming.
func getFeed(t *testing.T, r *rig) *http.Response {
	t.Helper()
	nc, br := dialRaw(t, r.vhost)
	io.WriteString(nc, "GET /feed HTTP/1.1\r\nHost: feed.test\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// wsPing sends a frame through a tunnel and reads its echo.
func wsPing(c *net.TCPConn, br *bufio.Reader) error {
	msg := maskedFrame("ping")
	if _, err := c.Write(msg); err != nil {
		return err
	}
	_, err := io.ReadFull(br, make([]byte, len(msg)))
	return err
}

// waitLogged waits until msg was logged n times in all.
func waitLogged(t *testing.T, logs *observer.ObservedLogs, msg string, n int) []observer.LoggedEntry {
	t.Helper()
	for deadline := time.Now().Add(waitFor); logs.FilterMessage(msg).Len() < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%q logged %d times, want %d", msg, logs.FilterMessage(msg).Len(), n)
		}
	}
	return logs.FilterMessage(msg).All()
}

// WebSockets to a task that left the table (a deploy replaced it, its
// health check failed, its app was deleted) drain as the TCP plane's
// connections do: DrainTimeout, then closed, pings or not; the drain is
// logged once for the backend, not once per tunnel.
func TestTunnelsDrainWhenTheirBackendLeaves(t *testing.T) {
	const drain = 300 * time.Millisecond
	core, logs := observer.New(zap.InfoLevel)
	r := newRigLog(t, t, Config{DrainTimeout: drain}, zap.New(core))
	old, next := wsBackend(t, echoWS), wsBackend(t, echoWS)
	r.apply(app("/ws", 0, []string{"ws.test"}, "", old))
	type ws struct {
		c  *net.TCPConn
		br *bufio.Reader
	}
	var tunnels []ws
	for range 3 {
		c, br := wsDial(t, r.vhost, nil)
		if err := wsPing(c, br); err != nil {
			t.Fatal(err)
		}
		tunnels = append(tunnels, ws{c, br})
	}
	left := time.Now()
	r.apply(app("/ws", 0, []string{"ws.test"}, "", next))
	// The first keeps its pings going, as a chat client does.
	var err error
	for err = wsPing(tunnels[0].c, tunnels[0].br); err == nil; err = wsPing(tunnels[0].c, tunnels[0].br) {
		time.Sleep(20 * time.Millisecond) // the pings' pace
	}
	el := time.Since(left)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a tunnel with pings still open %v after its backend left, with a drain of %v", el.Round(time.Millisecond), drain)
	}
	if el < drain {
		t.Fatalf("a tunnel was closed %v after its backend left, before the drain's deadline (%v): %v", el, drain, err)
	}
	for i, w := range tunnels[1:] {
		if _, err := w.br.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("tunnel %d still open after the drain: %v", i+1, err)
		}
	}
	e := waitLogged(t, logs, "backend left; draining its tunnels", 1)
	if len(e) != 1 || e[0].ContextMap()["tunnels"] != int64(3) || e[0].ContextMap()["backend"] != old.String() {
		t.Fatalf("logged %+v; want one line for %s and its 3 tunnels", e, old)
	}
	// New tunnels go to the new task.
	c, br := wsDial(t, r.vhost, nil)
	if err := wsPing(c, br); err != nil {
		t.Fatal(err)
	}
}

// A backend that leaves and comes back within DrainTimeout (a health
// check that flapped) keeps its tunnels.
func TestTunnelSurvivesItsBackendComingBack(t *testing.T) {
	const drain = 200 * time.Millisecond
	core, logs := observer.New(zap.InfoLevel)
	r := newRigLog(t, t, Config{DrainTimeout: drain}, zap.New(core))
	be, other := wsBackend(t, echoWS), wsBackend(t, echoWS)
	r.apply(app("/ws", 0, []string{"ws.test"}, "", be))
	c, br := wsDial(t, r.vhost, nil)
	r.apply(app("/ws", 0, []string{"ws.test"}, "", other))
	waitLogged(t, logs, "backend left; draining its tunnels", 1)
	r.apply(app("/ws", 0, []string{"ws.test"}, "", be))
	waitLogged(t, logs, "backend is back; its tunnels stop draining", 1)
	for start := time.Now(); time.Since(start) < 3*drain; time.Sleep(20 * time.Millisecond) { // the pings' pace
		if err := wsPing(c, br); err != nil {
			t.Fatalf("the tunnel %v after its backend came back: %v", time.Since(start).Round(time.Millisecond), err)
		}
	}
}

// A stop that comes while a port that left the table still drains gives
// that port's requests the rest of the stop's drain, as it gives its own:
// it does not cut them at once.
func TestShutdownLetsALeftPortFinishItsDrain(t *testing.T) {
	arrived, held := make(chan struct{}, 1), make(chan struct{})
	release := sync.OnceFunc(func() { close(held) })
	_, heldAddr0 := httpBackend(t, "held", func(w http.ResponseWriter, req *http.Request) {
		arrived <- struct{}{}
		<-held
		io.WriteString(w, "held")
	})
	t.Cleanup(release) // before the backend's Close waits for its handler
	_, other := httpBackend(t, "other", nil)
	r := newRigLog(t, t, Config{DrainTimeout: 5 * time.Second}, zap.NewNop())
	ports := testnet.FreePorts(t, 3)
	r.apply(app("/held", ports[0], nil, "", heldAddr0), app("/other", ports[1], nil, "", other))
	heldAddr := r.waitPort(ports[0])
	otherAddr := r.waitPort(ports[1])
	nc, br := dialRaw(t, heldAddr)
	io.WriteString(nc, "GET /slow HTTP/1.1\r\nHost: held\r\n\r\n")
	<-arrived // accepted, forwarded, and waiting for its answer
	// /held moves to another port: its old one drains, the request held.
	r.apply(app("/held", ports[2], nil, "", heldAddr0), app("/other", ports[1], nil, "", other))
	r.waitApplied()
	killing := make(chan struct{})
	hook := sync.OnceFunc(func() { close(killing) })
	testHookBeforeKill.Store(&hook)
	t.Cleanup(func() { testHookBeforeKill.Store(nil) })
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- r.p.Shutdown(ctx)
	}()
	// The stop has begun once the other port refuses.
	for deadline := time.Now().Add(waitFor); ; time.Sleep(5 * time.Millisecond) {
		if c, err := net.Dial("tcp", otherAddr); err != nil {
			break
		} else {
			c.Close()
		}
		if time.Now().After(deadline) {
			t.Fatal("the stop did not close the other port")
		}
	}
	// The request is still held: the stop must not end its drain now. (A
	// stop that did would do so at once; 200 ms is ample to see it.)
	select {
	case <-killing:
		t.Fatal("the stop closed what was open while a request on the left port was still held")
	case <-time.After(200 * time.Millisecond):
	}
	release()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("the request held on the left port, during the stop: %v", err)
	}
	if body, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(body) != "held" {
		t.Fatalf("the request held on the left port: %d %q", resp.StatusCode, body)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Shutdown did not return after the last request ended")
	}
}

// streamsOn reads resp's streaming body, a tick at a time, for d: the
// answer goes on though its backend left and came back.
func streamsOn(t *testing.T, resp *http.Response, d time.Duration) {
	t.Helper()
	tick := make([]byte, 5)
	for start := time.Now(); time.Since(start) < d; {
		if _, err := io.ReadFull(resp.Body, tick); err != nil {
			t.Fatalf("the answer (%s) %v after it began, its backend back: %v", resp.Status, time.Since(start).Round(time.Millisecond), err)
		}
	}
}
