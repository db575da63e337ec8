package httpproxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/internal/testnet"
)

// Clients and backends that get HTTP wrong, or play with it: what pacer
// makes of them, in the bytes either side sees.

// A request whose lines end in a bare LF (typed or scripted by hand:
// printf 'GET / HTTP/1.1\nHost: x\n\n' | nc) is answered at once, as
// nginx, HAProxy and Go answer it, not after ReadHeaderTimeout with a 408;
// sent whole, split across reads, with CRLF and LF mixed, and again on the
// same connection. A body's LFs reach the backend as they were.
func TestBareLFRequestIsAnswered(t *testing.T) {
	r, seen := pathRig(t)
	nc, br := dialRaw(t, r.vhost)
	ask := func(path string, parts ...string) {
		t.Helper()
		for i, p := range parts {
			if i > 0 {
				// The part before is read alone: the header continues in
				// a read of its own.
				if err := testnet.PeerRead(nc); err != nil {
					t.Fatal(err)
				}
			}
			io.WriteString(nc, p)
		}
		if raw := readRaw(t, br, false); !strings.HasPrefix(raw, "HTTP/1.1 200 ") || !strings.HasSuffix(raw, "\r\n\r\n"+path) {
			t.Fatalf("answer to %q: %q, want 200 %s", parts, raw, path)
		}
		if got := string(<-seen); !strings.Contains(got, " "+path+" HTTP/1.1\r\n") {
			t.Fatalf("backend got %q for %s", got, path)
		}
	}
	ask("/whole", "GET /whole HTTP/1.1\nHost: web.test\n\n")
	ask("/again", "GET /again HTTP/1.1\nHost: web.test\nX-A: 1\n\n")
	ask("/mixed", "GET /mixed HTTP/1.1\r\nHost: web.test\n\r\n")
	ask("/split", "GET /split HTTP/1.1\n", "Host: web.test\r", "\n", "\n")
	ask("/leading", "\nGET /leading HTTP/1.1\nHost: web.test\n\n")

	body := "a\nb\n\nGET /x HTTP/1.1\n\n"
	fmt.Fprintf(nc, "POST /post HTTP/1.1\nHost: web.test\nContent-Length: %d\n\n%s", len(body), body)
	if raw := readRaw(t, br, false); !strings.HasSuffix(raw, "\r\n\r\n/post") {
		t.Fatalf("answer to the POST: %q", raw)
	}
	if got := string(<-seen); !strings.HasSuffix(got, "\r\n\r\n"+body) {
		t.Fatalf("backend got %q, want the body %q as sent", got, body)
	}
}

// The rewrite of a header's bare LFs gives the same bytes however the
// header is split across reads, leaves the body alone, and changes nothing
// it has no room for.
func TestBareLFFixAtEverySplit(t *testing.T) {
	cases := []struct{ in, want string }{
		{"GET / HTTP/1.1\nHost: x\n\nbody\n\n", "GET / HTTP/1.1\r\nHost: x\r\n\r\nbody\n\n"},
		{"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody\n", "GET / HTTP/1.1\r\nHost: x\r\n\r\nbody\n"},
		{"GET / HTTP/1.1\r\nHost: x\n\r\n\n", "GET / HTTP/1.1\r\nHost: x\r\n\r\n\n"},
		{"\r\n\nGET / HTTP/1.1\nA: \r\r\n\nB", "\r\n\r\nGET / HTTP/1.1\r\nA: \r\r\n\r\nB"},
	}
	for _, tc := range cases {
		for cut1 := 0; cut1 <= len(tc.in); cut1++ {
			for cut2 := cut1; cut2 <= len(tc.in); cut2++ {
				buf := make([]byte, 256) // fasthttp's read buffer
				var s lfScan
				s.start(true)
				w := 0
				for _, part := range []string{tc.in[:cut1], tc.in[cut1:cut2], tc.in[cut2:]} {
					if part == "" {
						continue
					}
					b := buf[w : w+copy(buf[w:], part)]
					n, _ := s.fix(b)
					w += n
				}
				if got := string(buf[:w]); got != tc.want {
					t.Fatalf("%q cut at %d and %d: %q, want %q", tc.in, cut1, cut2, got, tc.want)
				}
			}
		}
	}
	var s lfScan
	s.start(true)
	in := []byte("GET / HTTP/1.1\nHost: x\n\n")
	if n, fixed := s.fix(in[:len(in):len(in)]); fixed || n != len(in) || string(in) != "GET / HTTP/1.1\nHost: x\n\n" {
		t.Fatalf("without room: %d, %v, %q", n, fixed, in)
	}
}

// A backend whose answers' lines end in a bare LF (a shell loop over nc,
// a small embedded server) is read as HAProxy and nginx read it: its
// answer reaches the client at once, not a 504 after
// ResponseHeaderTimeout; after an interim answer too, and one whose
// length is the connection's. Request after request on one connection, so
// that the poller's path (a warm pool), which gives such an answer back to
// fasthttp's, is crossed too.
func TestBareLFAnswerIsRead(t *testing.T) {
	r := newRig(t, Config{})
	be := keepAliveBackend(t, nil, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
		switch req.URL.Path {
		case "/hints":
			io.WriteString(bw, "HTTP/1.1 103 Early Hints\nLink: </a.css>\n\nHTTP/1.1 200 OK\nContent-Length: 5\n\nhints")
		case "/mixed":
			io.WriteString(bw, "HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 5\n\r\nmixed")
		case "/close":
			io.WriteString(bw, "HTTP/1.0 200 OK\nX-A: 1\n\nuntil the close")
			bw.Flush()
			return false // and close
		default:
			io.WriteString(bw, "HTTP/1.1 200 OK\nContent-Length: 2\nX-A: lf\n\nok")
		}
		return true
	})
	r.apply(app("/web", 0, []string{"web.test"}, "", be))
	nc, br := dialRaw(t, r.vhost)
	for _, tc := range []struct{ path, body string }{
		{"/", "ok"}, {"/", "ok"}, {"/hints", "hints"}, {"/", "ok"}, {"/mixed", "mixed"}, {"/", "ok"}, {"/close", "until the close"},
	} {
		fmt.Fprintf(nc, "GET %s HTTP/1.1\r\nHost: web.test\r\n\r\n", tc.path)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		body, err := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != tc.body || err != nil || resp.Header.Get("X-A") == "" && tc.path != "/hints" {
			t.Fatalf("%s: %s %v %q %v", tc.path, resp.Status, resp.Header, body, err)
		}
	}
}

// Expect: 100-continue is answered as RFC 9110 10.1.1 says: ignored from
// an HTTP/1.0 client, which knows no 1xx and would take a 100 for the
// answer; and from an HTTP/1.1 client in whatever case it spells the field
// and the expectation, so that it does not wait out its own timer.
func TestExpectContinue(t *testing.T) {
	r, seen := pathRig(t)

	nc, br := dialRaw(t, r.vhost)
	io.WriteString(nc, "POST /old HTTP/1.0\r\nHost: web.test\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nbody")
	all, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(all), "HTTP/1.1 200 ") || strings.Contains(string(all), " 100 ") {
		t.Fatalf("HTTP/1.0 client with Expect got %q, want the answer alone", all)
	}
	if got := string(<-seen); !strings.HasSuffix(got, "\r\n\r\nbody") {
		t.Fatalf("backend got %q", got)
	}

	for _, field := range []string{"expect: 100-continue", "Expect: 100-Continue", "Expect: 100-continue"} {
		nc, br := dialRaw(t, r.vhost)
		fmt.Fprintf(nc, "POST /new HTTP/1.1\r\nHost: web.test\r\n%s\r\nContent-Length: 4\r\n\r\n", field)
		line, err := br.ReadString('\n')
		if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
			t.Fatalf("%q: %q, %v; want 100 Continue before the body is sent", field, line, err)
		}
		if blank, _ := br.ReadString('\n'); blank != "\r\n" {
			t.Fatalf("%q: 100 Continue followed by %q", field, blank)
		}
		io.WriteString(nc, "body")
		if raw := readRaw(t, br, false); !strings.HasPrefix(raw, "HTTP/1.1 200 ") {
			t.Fatalf("%q: %q", field, raw)
		}
		got := string(<-seen)
		if !strings.HasSuffix(got, "\r\n\r\nbody") || strings.Contains(strings.ToLower(got), "expect") {
			t.Fatalf("%q: backend got %q, want the body and no Expect", field, got)
		}
	}
}

// A client cannot speak for a proxy: its X-Real-IP and Forwarded, and the
// underscore spellings of the X-Forwarded-* names, which CGI-style
// gateways read as the real ones, do not reach the backend, on fasthttp's
// path (a cold pool) and on the poller's (a warm one). Behind a proxy that
// TrustForwardedProto says sets them, X-Real-IP and Forwarded are that
// proxy's, and kept; the underscore spellings never are.
func TestClientForwardingHeadersRemoved(t *testing.T) {
	spoof := "X-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6;proto=https;host=evil.test\r\n" +
		"X_Real_IP: 6.6.6.6\r\nx_forwarded_proto: https\r\nX_Forwarded_Host: evil.test\r\nX_Forwarded_For: 6.6.6.6\r\n"
	for _, trust := range []bool{false, true} {
		t.Run(fmt.Sprintf("trust=%v", trust), func(t *testing.T) {
			r := newRig(t, Config{TrustForwardedProto: trust})
			seen := make(chan []byte, 4)
			be := keepAliveBackend(t, seen, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
				io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				return true
			})
			r.apply(app("/web", 0, []string{"web.test"}, "", be))
			nc, br := dialRaw(t, r.vhost)
			for i := range 3 {
				io.WriteString(nc, "GET / HTTP/1.1\r\nHost: web.test\r\n"+spoof+"\r\n")
				readRaw(t, br, false)
				got := strings.ToLower(string(<-seen))
				for _, k := range []string{"x_real_ip:", "x_forwarded_proto:", "x_forwarded_host:", "x_forwarded_for:"} {
					if strings.Contains(got, k) {
						t.Errorf("request %d: the client's %s reached the backend: %q", i, k, got)
					}
				}
				for _, k := range []string{"\r\nx-real-ip: 6.6.6.6\r\n", "\r\nforwarded: for=6.6.6.6;proto=https;host=evil.test\r\n"} {
					if strings.Contains(got, k) != trust {
						t.Errorf("request %d: %q in what the backend got: %v, want %v: %q", i, strings.TrimSpace(k), !trust, trust, got)
					}
				}
				if !strings.Contains(got, "\r\nx-forwarded-proto: http\r\n") || strings.Contains(got, "evil") && !trust {
					t.Errorf("request %d: backend got %q", i, got)
				}
			}
		})
	}
}

// A Host that is no URI's host gets fasthttp's 400, on the poller's path
// too (a warm pool), which must not send what fasthttp's path refuses:
// "evil.example#.shop.test" ends in ".shop.test", and a *.shop.test
// service's backend that builds links from its Host would send its users
// to evil.example. On the vhost listener and on a service port, where the
// Host routes nothing.
func TestHostNoURIHasIsRefused(t *testing.T) {
	r := newRig(t, Config{})
	seen := make(chan []byte, 16)
	be := keepAliveBackend(t, seen, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
		io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	port := testnet.FreePort(t)
	r.apply(app("/shop", port, []string{"*.shop.test"}, "", be))
	for _, addr := range []string{r.vhost, r.waitPort(port)} {
		for _, bad := range []string{"evil.example#.shop.test", "evil.example/.shop.test", "evil.example?.shop.test",
			`evil.example\.shop.test`, "evil example.shop.test", "x.shop.test:80:80", "x.shop.test]", "//x]/a://b"} {
			host, target := bad, "/bad"
			if strings.HasPrefix(bad, "//") { // fasthttp reads a host in it
				host, target = "x.shop.test", bad
			}
			nc, br := dialRaw(t, addr)
			// The pool is warm: the next request may go the poller's way.
			io.WriteString(nc, "GET /warm HTTP/1.1\r\nHost: x.shop.test\r\n\r\n")
			readRaw(t, br, false)
			<-seen
			io.WriteString(nc, "GET "+target+" HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
			all, _ := io.ReadAll(br)
			if !strings.HasPrefix(string(all), "HTTP/1.1 400 ") {
				t.Errorf("%s, Host %q: %q, want 400", addr, host, statusOf(string(all)))
			}
			select {
			case got := <-seen:
				t.Errorf("%s, Host %q: the backend got %q", addr, host, got)
			default:
			}
		}
	}
}

// A backend that refuses a request's body before it reads it (413, 401:
// nginx's client_max_body_size, an auth check) answers and closes, and
// the body pacer still sends meets a reset: the client gets that answer,
// as HAProxy and nginx pass it on, not a 502 for a request its backend
// answered.
func TestAnswerBeforeTheBodyReachesTheClient(t *testing.T) {
	r := newRig(t, Config{})
	be := rawBackend(t, func(c net.Conn) {
		go func() {
			defer c.Close()
			if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n\r\ntoo large")
		}()
	})
	r.apply(app("/web", 0, []string{"web.test"}, "", be))
	nc, br := dialRaw(t, r.vhost)
	const size = 64 << 20
	fmt.Fprintf(nc, "POST /upload HTTP/1.1\r\nHost: web.test\r\nContent-Length: %d\r\n\r\n", size)
	go func() {
		chunk := bytes.Repeat([]byte("x"), 32<<10)
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := nc.Write(chunk); err != nil {
				return // pacer closed: it answered
			}
		}
	}()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || string(body) != "too large" || err != nil {
		t.Fatalf("%s %q %v; want the backend's 413", resp.Status, body, err)
	}
	if !resp.Close {
		t.Fatal("the answer leaves the client's connection open with the rest of its body in it")
	}
}

// A request whose connect is still under way when its backend leaves the
// table and comes back (a health check that flapped during a slow
// connect): its answer, once it streams, streams on, as one that was
// waiting at the backend does.
func TestStreamWhoseConnectOutlastedItsBackendsFlapGoesOn(t *testing.T) {
	feed, open := slowConnectBackend(t)
	_, next := httpBackend(t, "next", nil)
	const drain = 200 * time.Millisecond
	r := newRigLog(t, t, Config{DrainTimeout: drain, DialTimeout: waitFor}, zap.NewNop())
	r.apply(app("/feed", 0, []string{"feed.test"}, "", feed))
	r.waitApplied()
	nc, br := dialRaw(t, r.vhost)
	io.WriteString(nc, "GET /feed HTTP/1.1\r\nHost: feed.test\r\n\r\n")
	for deadline := time.Now().Add(waitFor); ; time.Sleep(time.Millisecond) {
		n, err := testnet.ConnectsInFlight(feed)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			break // pacer's connect waits in the backend's full accept queue
		}
		if time.Now().After(deadline) {
			t.Fatal("pacer never connected to the backend")
		}
	}
	r.apply(app("/feed", 0, []string{"feed.test"}, "", next))
	r.waitApplied()
	r.apply(app("/feed", 0, []string{"feed.test"}, "", feed))
	r.waitApplied()
	open() // the connect completes at its next SYN
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	streamsOn(t, resp, 3*drain)
}

// slowConnectBackend is a feed (feedBackend) whose listener's accept
// queue is full (a backlog of 0, and one connection nobody accepts), so
// that connects to it wait, their SYNs dropped, until open is called:
// then it serves, and a waiting connect completes at its next SYN (the
// kernel resends one after 1 s, then 3 s).
func slowConnectBackend(t *testing.T) (addr netip.AddrPort, open func()) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "backlog-0 listener")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	addr = netip.MustParseAddrPort(ln.Addr().String())
	filler, err := net.DialTimeout("tcp", addr.String(), waitFor)
	if err != nil {
		t.Fatal(err)
	}
	filler.Close() // still queued: its accept reads an EOF
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	serve := func(c net.Conn) {
		defer c.Close()
		br, bw := bufio.NewReader(c), bufio.NewWriter(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(bw, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
		for {
			io.WriteString(bw, "5\r\ntick\n\r\n")
			if bw.Flush() != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	open = func() {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go serve(c)
			}
		}()
	}
	return addr, open
}
