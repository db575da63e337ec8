package httpproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/internal/testnet"
)

// keepAliveBackend serves every connection with answer, request after
// request, until answer returns false or the client goes; seen gets a copy
// of every request as the backend read it (header and body).
func keepAliveBackend(t *testing.T, seen chan<- []byte, answer func(req *http.Request, c net.Conn, bw *bufio.Writer) bool) netip.AddrPort {
	t.Helper()
	return rawBackend(t, func(c net.Conn) {
		go func() {
			defer c.Close()
			br := bufio.NewReader(c)
			bw := bufio.NewWriter(c)
			for {
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				if seen != nil {
					raw, _ := httputil.DumpRequest(req, true)
					select {
					case seen <- raw:
					default:
					}
				}
				if !answer(req, c, bw) || bw.Flush() != nil {
					return
				}
			}
		}()
	})
}

// pathRig is a rig whose web.test answers every request with its path,
// and seen, the requests the backend got.
func pathRig(t *testing.T) (*rig, <-chan []byte) {
	t.Helper()
	r := newRig(t, Config{})
	seen := make(chan []byte, 16)
	be := keepAliveBackend(t, seen, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
		fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.URL.Path), req.URL.Path)
		return true
	})
	r.apply(app("/web", 0, []string{"web.test"}, "", be))
	return r, seen
}

// dialRaw opens a client connection to addr, closed at the test's end.
func dialRaw(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(waitFor))
	return c, bufio.NewReader(c)
}

// readRaw reads one response with a Content-Length (or none, for HEAD and
// 204) from br and returns its bytes exactly as they came.
func readRaw(t *testing.T, br *bufio.Reader, head bool) string {
	t.Helper()
	var b strings.Builder
	cl := 0
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading a response: %v (so far %q)", err, b.String())
		}
		b.WriteString(line)
		if line == "\r\n" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "Content-Length") {
			cl, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if head {
		return b.String()
	}
	body := make([]byte, cl)
	if _, err := io.ReadFull(br, body); err != nil {
		t.Fatalf("reading a body of %d: %v", cl, err)
	}
	b.Write(body)
	return b.String()
}

// The poller answers keep-alive requests itself once a pooled connection
// is warm, and what it sends either way is byte for byte what fasthttp's
// path sends: the first request of a cold pool goes that way, the rest
// through the poller, and the client and the backend cannot tell them
// apart.
func TestPollerAnswersAsFasthttpDoes(t *testing.T) {
	r := newRig(t, Config{})
	seen := make(chan []byte, 16)
	be := keepAliveBackend(t, seen, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
		// Hop-by-hop headers pacer must drop, and a fixed Date, so that
		// every answer is the same.
		io.WriteString(bw, "HTTP/1.1 200 OK\r\nServer: raw\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n"+
			"Connection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nX-App: web\r\n"+
			"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
		return true
	})
	r.apply(app("/web", 0, []string{"web.test"}, "", be))

	c, br := dialRaw(t, r.vhost)
	const n = 6
	var answers, requests []string
	for i := range n {
		if _, err := io.WriteString(c, "GET /x?y=1 HTTP/1.1\r\nHost: web.test\r\nUser-Agent: t\r\nX-Forwarded-For: 10.0.0.1\r\nConnection: keep-alive\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		answers = append(answers, readRaw(t, br, false))
		select {
		case req := <-seen:
			requests = append(requests, string(req))
		case <-time.After(waitFor):
			t.Fatalf("request %d never reached the backend", i)
		}
	}
	// All but the cold pool's first, unless the machine stalled past
	// peekAfter between two requests (a pooled connection that old is
	// fasthttp's path's to check).
	if got := r.p.Totals().InPoller; got == 0 || got > n-1 {
		t.Fatalf("%d requests answered in the poller, want up to %d, at least one", got, n-1)
	}
	for i := 1; i < n; i++ {
		if answers[i] != answers[0] {
			t.Errorf("answer %d differs from fasthttp's:\n%q\n%q", i, answers[i], answers[0])
		}
		if requests[i] != requests[0] {
			t.Errorf("request %d reached the backend differently:\n%q\n%q", i, requests[i], requests[0])
		}
	}
	for _, hop := range []string{"Keep-Alive", "X-Hop", "Connection"} {
		if strings.Contains(answers[n-1], "\r\n"+hop+":") {
			t.Errorf("answer kept hop-by-hop %s: %q", hop, answers[n-1])
		}
	}
	if !strings.Contains(requests[n-1], "X-Forwarded-For: 10.0.0.1, 127.0.0.1\r\n") || !strings.Contains(requests[n-1], "X-Forwarded-Host: web.test\r\n") {
		t.Errorf("forwarded headers missing: %q", requests[n-1])
	}
	if st := r.p.Stats(); st[0].Responses[1] != n || st[0].Active != 0 {
		t.Errorf("stats after %d answers: %+v", n, st[0])
	}
}

// Answers the poller does not finish (interim 1xx, chunked, large, split
// over two writes, closing) go back to fasthttp's path mid-exchange and
// arrive whole; HEAD and 204 are answered without a body; a connection
// whose backend sent more than the answer carries no further request.
func TestPollerFallsBackMidAnswer(t *testing.T) {
	r := newRig(t, Config{})
	big := strings.Repeat("b", streamAbove+1000)
	be := keepAliveBackend(t, nil, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
		switch req.URL.Path {
		case "/chunked":
			io.WriteString(bw, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
		case "/big":
			fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(big), big)
		case "/split":
			io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfirst")
			bw.Flush()
			if err := testnet.PeerRead(c); err != nil { // the proxy reads the first half alone
				t.Error(err)
			}
			io.WriteString(bw, "-half")
		case "/interim":
			io.WriteString(bw, "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n")
			bw.Flush()
			io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\ninterim")
		case "/extra":
			// An answer with stray bytes behind it: the connection must
			// not carry another request.
			io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextraHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")
		case "/nocontent":
			io.WriteString(bw, "HTTP/1.1 204 No Content\r\n\r\n")
		case "/close":
			io.WriteString(bw, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nclose")
			bw.Flush()
			return false
		default:
			if req.Method == "HEAD" {
				io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
			} else {
				io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
		}
		return true
	})
	r.apply(app("/web", 0, []string{"web.test"}, "", be))
	c := client()
	for range 2 {
		for _, tc := range []struct{ path, body string }{
			{"/", "ok"}, {"/chunked", "abcde"}, {"/", "ok"}, {"/big", big}, {"/split", "first-half"},
			{"/interim", "interim"}, {"/nocontent", ""}, {"/close", "close"}, {"/", "ok"},
			{"/extra", "extra"}, {"/", "ok"}, {"/", "ok"},
		} {
			status, body, _ := get(t, c, r.vhost, "web.test", tc.path)
			if want := map[bool]int{true: 204, false: 200}[tc.path == "/nocontent"]; status != want || body != tc.body {
				t.Fatalf("GET %s: %d, %d bytes %.40q; want %d %.40q", tc.path, status, len(body), body, want, tc.body)
			}
		}
		req, _ := http.NewRequest("HEAD", "http://"+r.vhost+"/", nil)
		req.Host = "web.test"
		resp, err := c.Do(req)
		if err != nil || resp.StatusCode != 200 || resp.ContentLength != 2 {
			t.Fatalf("HEAD: %v %+v", err, resp)
		}
		resp.Body.Close()
	}
	if r.p.Totals().InPoller == 0 {
		t.Fatal("no request was answered in the poller")
	}
	if st := r.p.Stats(); st[0].Active != 0 {
		t.Errorf("requests still counted active: %+v", st[0])
	}
}

// A backend that does not answer a request the poller sent gets the 504
// that names the service, and one that takes it and closes gets the GET
// retried on the other backend.
func TestPollerTimeoutAndRetry(t *testing.T) {
	r := newRig(t, Config{ResponseHeaderTimeout: 200 * time.Millisecond})
	stall := keepAliveBackend(t, nil, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
		if req.URL.Path == "/stall" {
			time.Sleep(time.Second)
			return false
		}
		io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	r.apply(app("/slow", 0, []string{"slow.test"}, "", stall))
	c := client()
	if s, _, _ := get(t, c, r.vhost, "slow.test", "/"); s != 200 {
		t.Fatalf("warm-up: %d", s)
	}
	if s, body, _ := get(t, c, r.vhost, "slow.test", "/"); s != 200 || body != "ok" {
		t.Fatalf("second GET: %d %q", s, body)
	}
	if s, body, _ := get(t, c, r.vhost, "slow.test", "/stall"); s != 504 || !strings.Contains(body, "/slow") {
		t.Fatalf("stalled GET: %d %q, want 504 naming /slow", s, body)
	}

	// Two backends; a answers one request per connection, then takes the
	// next and closes without a word (a task that died under it).
	var served sync.Map
	a := keepAliveBackend(t, nil, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
		if _, again := served.LoadOrStore(c, true); again {
			return false
		}
		io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")
		return true
	})
	b := keepAliveBackend(t, nil, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
		io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb")
		return true
	})
	r.apply(app("/slow", 0, []string{"slow.test"}, "", stall), app("/web", 0, []string{"web.test"}, "", a, b))
	for i := range 20 {
		if s, body, _ := get(t, c, r.vhost, "web.test", "/"); s != 200 || (body != "a" && body != "b") {
			t.Fatalf("GET %d: %d %q", i, s, body)
		}
	}
	if st := r.p.Stats(); st[1].Retries == 0 {
		t.Errorf("no retry counted: %+v", st[1])
	}
}

// Shutdown, or the table dropping a service port, lets a request the
// poller sent finish before fasthttp closes the connection it sees as
// idle.
func TestPollerDrainLetsExchangeFinish(t *testing.T) {
	for _, how := range []string{"shutdown", "port removed"} {
		t.Run(how, func(t *testing.T) {
			r := newRig(t, Config{})
			// The backend holds each /slow answer until the test lets one go.
			got, release := make(chan struct{}, 1), make(chan struct{}, 1)
			be := keepAliveBackend(t, nil, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
				if req.URL.Path == "/slow" {
					got <- struct{}{}
					select {
					case <-release:
					case <-time.After(waitFor):
					}
				}
				io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				return true
			})
			_, addr, lr := r.webPort(t, be)
			c := client()
			type result struct {
				status int
				body   string
				err    error
			}
			slowGet := func() <-chan result {
				done := make(chan result, 1)
				go func() {
					resp, err := c.Get("http://" + addr + "/slow")
					if err != nil {
						done <- result{err: err}
						return
					}
					b, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					done <- result{resp.StatusCode, string(b), err}
				}()
				return done
			}
			// The slow request must be in the poller's hands. It goes
			// fasthttp's way only if the machine stalled past peekAfter
			// since the warm-up; then warm up and try again.
			var done <-chan result
			for attempt := 0; ; attempt++ {
				if s, _, _ := get(t, c, addr, "", "/"); s != 200 {
					t.Fatalf("warm-up: %d", s)
				}
				done = slowGet()
				select {
				case <-got:
				case <-time.After(waitFor):
					t.Fatal("the slow request never reached the backend")
				}
				if lr.exchanges.Load() == 1 {
					break
				}
				release <- struct{}{}
				if res := <-done; res.err != nil || res.status != 200 {
					t.Fatalf("slow request through fasthttp's path: %+v", res)
				}
				if attempt == 4 {
					t.Fatal("the slow request never went through the poller in 5 tries")
				}
			}
			// The drain starts while the answer is held: the listener
			// closes first, and only then does the backend answer.
			shutdown := make(chan error, 1)
			if how == "shutdown" {
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), waitFor)
					defer cancel()
					shutdown <- r.p.Shutdown(ctx)
				}()
			} else {
				r.drainWeb(t, how)
			}
			for deadline := time.Now().Add(waitFor); ; time.Sleep(time.Millisecond) {
				conn, err := net.Dial("tcp", addr)
				if err != nil {
					break
				}
				conn.Close()
				if time.Now().After(deadline) {
					t.Fatal("the drained port never stopped listening")
				}
			}
			release <- struct{}{}
			res := <-done
			if res.err != nil || res.status != 200 || res.body != "ok" {
				t.Fatalf("in-flight request across the drain: %+v", res)
			}
			if how == "shutdown" {
				if err := <-shutdown; err != nil {
					t.Fatalf("Shutdown: %v", err)
				}
			}
		})
	}
}

// webPort serves /web from be on a fresh HTTP-mode service port, and
// returns the port, its address and its listener's run.
func (r *rig) webPort(t *testing.T, be netip.AddrPort) (int, string, *listenRun) {
	t.Helper()
	port := testnet.FreePort(t)
	r.apply(app("/web", port, nil, "", be))
	addr := r.waitPort(port)
	return port, addr, r.run(port)
}

// run returns the run of port's listener open now, or nil.
func (r *rig) run(port int) *listenRun {
	r.p.lmu.Lock()
	defer r.p.lmu.Unlock()
	if hp, ok := r.p.ports.Get(port); ok {
		return hp.run
	}
	return nil
}

// drainWeb drains the rig's /web: how is "shutdown" (the proxy's
// Shutdown) or "port removed" (the table drops the app).
func (r *rig) drainWeb(t *testing.T, how string) {
	t.Helper()
	if how != "shutdown" {
		r.table.Apply(discovery.Update{Source: "test", Removed: []string{"/web"}})
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := r.p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// A connection whose requests the poller answered can still upgrade: the
// tunnel's bytes never reach the exchanger.
func TestPollerThenUpgrade(t *testing.T) {
	r := newRig(t, Config{})
	be := keepAliveBackend(t, nil, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
		if strings.EqualFold(req.Header.Get("Upgrade"), "echo") {
			io.WriteString(bw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
			bw.Flush()
			io.Copy(c, c)
			return false
		}
		io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	r.apply(app("/web", 0, []string{"web.test"}, "", be))
	nc, br := dialRaw(t, r.vhost)
	for range 3 {
		io.WriteString(nc, "GET / HTTP/1.1\r\nHost: web.test\r\n\r\n")
		if raw := readRaw(t, br, false); !strings.HasSuffix(raw, "ok") {
			t.Fatalf("GET: %q", raw)
		}
	}
	if r.p.Totals().InPoller == 0 {
		t.Fatal("no GET was answered in the poller")
	}
	io.WriteString(nc, "GET /ws HTTP/1.1\r\nHost: web.test\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %+v", err, resp)
	}
	for _, msg := range []string{"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n", "more bytes"} {
		io.WriteString(nc, msg)
		echo := make([]byte, len(msg))
		if _, err := io.ReadFull(br, echo); err != nil || !bytes.Equal(echo, []byte(msg)) {
			t.Fatalf("echo through the tunnel: %q, %v", echo, err)
		}
	}
}

// Pipelined requests (two in one segment), and a request split across
// reads, go fasthttp's way, in order and whole.
func TestPollerLeavesPipelinesToFasthttp(t *testing.T) {
	r, seen := pathRig(t)
	nc, br := dialRaw(t, r.vhost)
	io.WriteString(nc, "GET /warm HTTP/1.1\r\nHost: web.test\r\n\r\n")
	readRaw(t, br, false)
	io.WriteString(nc, "GET /one HTTP/1.1\r\nHost: web.test\r\n\r\nGET /two HTTP/1.1\r\nHost: web.test\r\n\r\n")
	for _, want := range []string{"/one", "/two"} {
		if raw := readRaw(t, br, false); !strings.HasSuffix(raw, want) {
			t.Fatalf("pipelined answer %q, want %s", raw, want)
		}
	}
	// A request split across two reads, whose second part alone would
	// parse as a request with the method "ET".
	io.WriteString(nc, "G")
	if err := testnet.PeerRead(nc); err != nil { // the proxy reads the first byte alone
		t.Fatal(err)
	}
	io.WriteString(nc, "ET /split HTTP/1.1\r\nHost: web.test\r\n\r\n")
	if raw := readRaw(t, br, false); !strings.HasSuffix(raw, "/split") {
		t.Fatalf("split request answered %q", raw)
	}
	var last []byte
	for len(seen) > 0 {
		last = <-seen
	}
	if !strings.HasPrefix(string(last), "GET /split ") {
		t.Fatal("the backend did not get the split request whole")
	}
}

// A request body that arrives after its header, at an empty buffer, is
// the body: even one that reads as a whole request is never offered to
// the poller as one (which would send it to the backend as a request of
// its own, past the proxy's view of the connection).
func TestPollerNeverTakesABody(t *testing.T) {
	r, seen := pathRig(t)
	nc, br := dialRaw(t, r.vhost)
	for range 2 {
		io.WriteString(nc, "GET /warm HTTP/1.1\r\nHost: web.test\r\n\r\n")
		readRaw(t, br, false)
		<-seen
	}
	body := "GET /smuggled HTTP/1.1\r\nHost: web.test\r\n\r\n"
	fmt.Fprintf(nc, "POST /form HTTP/1.1\r\nHost: web.test\r\nContent-Length: %d\r\n\r\n", len(body))
	if err := testnet.PeerRead(nc); err != nil { // the header alone first: fasthttp then waits for the body
		t.Fatal(err)
	}
	io.WriteString(nc, body)
	if raw := readRaw(t, br, false); !strings.HasSuffix(raw, "/form") {
		t.Fatalf("answer %q, want the POST's", raw)
	}
	got := string(<-seen)
	if !strings.HasPrefix(got, "POST /form ") || !strings.HasSuffix(got, body) {
		t.Fatalf("backend got %q, want the POST with its body", got)
	}
	io.WriteString(nc, "GET /after HTTP/1.1\r\nHost: web.test\r\n\r\n")
	if raw := readRaw(t, br, false); !strings.HasSuffix(raw, "/after") {
		t.Fatalf("answer %q after the POST", raw)
	}
	if got := string(<-seen); !strings.HasPrefix(got, "GET /after ") {
		t.Fatalf("backend got %q, want GET /after", got)
	}
}

// A small body that comes whole with its header is sent in the poller;
// one that does not (split, or with the next request behind it) goes
// fasthttp's way. The backend gets the same bytes either way.
func TestPollerTakesWholeSmallBodies(t *testing.T) {
	r, seen := pathRig(t)
	nc, br := dialRaw(t, r.vhost)
	post := "POST /form HTTP/1.1\r\nHost: web.test\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world"
	var got []string
	for i := range 4 {
		io.WriteString(nc, post)
		if raw := readRaw(t, br, false); !strings.HasSuffix(raw, "/form") {
			t.Fatalf("POST %d answered %q", i, raw)
		}
		got = append(got, string(<-seen))
	}
	if n := r.p.Totals().InPoller; n == 0 {
		t.Fatal("no POST was answered in the poller")
	}
	for i := range got {
		if got[i] != got[0] || !strings.HasSuffix(got[i], "\r\n\r\nhello world") {
			t.Fatalf("backend got %q, then %q", got[0], got[i])
		}
	}
	before := r.p.Totals().InPoller
	// Split: the header and part of the body, then the rest.
	io.WriteString(nc, post[:len(post)-5])
	if err := testnet.PeerRead(nc); err != nil {
		t.Fatal(err)
	}
	io.WriteString(nc, post[len(post)-5:])
	readRaw(t, br, false)
	if s := string(<-seen); s != got[0] {
		t.Fatalf("split POST reached the backend as %q", s)
	}
	// A body with the next request right behind it.
	io.WriteString(nc, post+"GET /next HTTP/1.1\r\nHost: web.test\r\n\r\n")
	for _, want := range []string{"/form", "/next"} {
		if raw := readRaw(t, br, false); !strings.HasSuffix(raw, want) {
			t.Fatalf("answer %q, want %s", raw, want)
		}
	}
	if s := string(<-seen); s != got[0] {
		t.Fatalf("POST before a pipelined GET reached the backend as %q", s)
	}
	if s := string(<-seen); !strings.HasPrefix(s, "GET /next ") {
		t.Fatalf("pipelined GET reached the backend as %q", s)
	}
	if n := r.p.Totals().InPoller; n != before {
		t.Fatalf("%d more requests answered in the poller, want none of these", n-before)
	}
}

// stalledClient is a client of r's web.test, whose backend answers every
// request with about 15 KB named by its path, that sends requests without
// reading until the poller has had to leave an answer's rest to writeRest:
// the connection, its reader, and how many requests it sent (/r0, /r1...).
func stalledClient(t *testing.T, cfg Config) (*rig, net.Conn, *bufio.Reader, func() int) {
	t.Helper()
	rest := make(chan struct{}, 1)
	hook := func() {
		select {
		case rest <- struct{}{}:
		default:
		}
	}
	testHookWriteRest.Store(&hook)
	t.Cleanup(func() { testHookWriteRest.Store(nil) })

	r := newRig(t, cfg)
	seen := make(chan []byte, 1)
	// Each answer is one write, so that the poller reads it whole.
	const size = 15000
	be := keepAliveBackend(t, seen, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
		p := req.URL.Path
		fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s%s%s", size, p, strings.Repeat(".", size-2*len(p)), p)
		return true
	})
	r.apply(app("/web", 0, []string{"web.test"}, "", be))

	// A small receive buffer, so that the sockets fill within a few MB.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return errors.Join(err, serr)
	}}
	nc, err := d.Dial("tcp", r.vhost)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(waitFor))

	// Each request waits until the backend has it, so that the proxy reads
	// each alone, not two at once, or until an answer went to writeRest:
	// then the proxy reads nothing more from this client until it reads.
	sent := 0
	send := func() int {
		t.Helper()
		fmt.Fprintf(nc, "GET /r%d HTTP/1.1\r\nHost: web.test\r\n\r\n", sent)
		sent++
		return sent
	}
	for stalled := false; !stalled; {
		if sent == 1000 { // 15 MB
			t.Fatalf("%d answers unread, and every one went out at once", sent)
		}
		send()
		select {
		case <-seen:
		case <-rest:
			stalled = true
		case <-time.After(waitFor):
			t.Fatalf("request %d never reached the backend (%d answered in the poller)", sent-1, r.p.Totals().InPoller)
		}
	}
	return r, nc, bufio.NewReader(nc), send
}

// An answer the client's socket cannot take at once (a client that does
// not read) is finished by a goroutine while the poller goes on with other
// connections; the connection's next request, already sent, waits for it,
// and the client gets every answer whole and in order once it reads.
func TestPollerFinishesAnAnswerTheClientDidNotTake(t *testing.T) {
	r, _, br, send := stalledClient(t, Config{})
	// The next request comes while the answer before it is still going
	// out: it must be answered after it, not into the middle of it.
	sent := send()
	for i := range sent {
		raw := readRaw(t, br, false)
		p := fmt.Sprintf("/r%d", i)
		if !strings.HasPrefix(raw, "HTTP/1.1 200 OK\r\n") || !strings.HasSuffix(raw, p) || !strings.Contains(raw, "\r\n\r\n"+p+".") {
			t.Fatalf("answer %d of %d is not /r%d's: %.80q...%q", i, sent, i, raw, raw[max(0, len(raw)-20):])
		}
	}
	if n := r.p.Totals().InPoller; n < 2 {
		t.Fatalf("%d answers went out from the poller", n)
	}
	// The connection carries requests after that.
	sent = send()
	if raw := readRaw(t, br, false); !strings.HasSuffix(raw, fmt.Sprintf("/r%d", sent-1)) {
		t.Fatalf("the request after the stall answered %.80q", raw)
	}
}

// A client that never takes the rest of an answer is closed once the body
// timeout passes, and holds nothing after that.
func TestPollerClosesAClientThatNeverReads(t *testing.T) {
	r, _, br, send := stalledClient(t, Config{BodyTimeout: 200 * time.Millisecond})
	sent := send()
	for deadline := time.Now().Add(waitFor); ; {
		r.p.cmu.Lock()
		open := len(r.p.conns)
		r.p.cmu.Unlock()
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d client connections still open %v after the body timeout", open, waitFor)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// What was in the sockets still comes, then the end: not every answer.
	got := 0
	for ; got < sent; got++ {
		if _, err := http.ReadResponse(br, nil); err != nil {
			break
		}
	}
	if got == sent {
		t.Fatalf("all %d answers arrived from a connection closed for not reading", sent)
	}
	if _, err := br.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after %d of %d answers the connection is still open: %v", got, sent, err)
	}
	if st := r.p.Stats(); st[0].Active != 0 {
		t.Fatalf("%d requests still active", st[0].Active)
	}
}

// hangingBackend answers "ok" to every request but /hang, which it answers
// only with a close once release is called (deferred by the test, so that
// it comes before the proxy's own cleanup drains); got hears of each /hang.
func hangingBackend(t *testing.T) (be netip.AddrPort, got <-chan struct{}, release func()) {
	t.Helper()
	hold := make(chan struct{})
	release = sync.OnceFunc(func() { close(hold) })
	arrived := make(chan struct{}, 1)
	be = keepAliveBackend(t, nil, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
		if req.URL.Path == "/hang" {
			arrived <- struct{}{}
			<-hold
			return false
		}
		io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	t.Cleanup(release) // before the backend's own cleanup waits for it
	return be, arrived, release
}

// A request the poller sent whose answer does not come within the drain
// is reported when the drain gives up on it, at Shutdown and when the
// table drops its service port: the one line that says a client got no
// answer from this process.
func TestDrainReportsRequestsLeftInThePoller(t *testing.T) {
	for _, how := range []string{"shutdown", "port removed"} {
		t.Run(how, func(t *testing.T) {
			be, got, release := hangingBackend(t)
			defer release()
			core, logs := observer.New(zap.WarnLevel)
			r := newRigLog(t, t, Config{DrainTimeout: 200 * time.Millisecond}, zap.New(core))
			port, addr, lr := r.webPort(t, be)

			// The request that hangs must be in the poller's hands; a
			// stall past peekAfter since the warm-up sends it fasthttp's
			// way, and then a fresh connection tries again.
			inPoller := false
			for attempt := 0; attempt < 5 && !inPoller; attempt++ {
				nc, br := dialRaw(t, addr)
				io.WriteString(nc, "GET / HTTP/1.1\r\nHost: web.test\r\n\r\n")
				readRaw(t, br, false)
				io.WriteString(nc, "GET /hang HTTP/1.1\r\nHost: web.test\r\n\r\n")
				select {
				case <-got:
				case <-time.After(waitFor):
					t.Fatal("the request never reached the backend")
				}
				inPoller = lr.exchanges.Load() == 1
			}
			if !inPoller {
				t.Fatal("the hanging request never went through the poller in 5 tries")
			}
			r.drainWeb(t, how)
			// The port's drain ends on a goroutine of its own.
			for deadline := time.Now().Add(waitFor); logs.FilterMessage(drainLeftMsg).Len() == 0; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("no warning %v after the drain; logged: %+v", waitFor, logs.All())
				}
			}
			warned := logs.FilterMessage(drainLeftMsg).All()
			if len(warned) != 1 || warned[0].ContextMap()["requests"] != int64(1) {
				t.Fatalf("warnings: %+v", warned)
			}
			if p, ok := warned[0].ContextMap()["port"]; how == "port removed" && (!ok || p != int64(port)) {
				t.Fatalf("warning names port %v, want %d", p, port)
			}
		})
	}
}
