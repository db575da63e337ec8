package httpproxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Pacer speaks its own HTTP/1.1 to either side, as RFC 9110 and 9112 have
// an intermediary do, whatever the client or the backend got wrong or left
// to chance. These tests check it in the bytes the client and the backend
// see, on fasthttp's path and on the poller's.

// connSet records the distinct connections a test backend served.
type connSet struct {
	mu sync.Mutex
	m  map[net.Conn]bool
}

func (s *connSet) add(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[net.Conn]bool{}
	}
	s.m[c] = true
}

func (s *connSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// getRaw sends a GET for path on nc and returns its answer (one with a
// Content-Length) as it came.
func getRaw(t *testing.T, nc net.Conn, br *bufio.Reader, host, path string) string {
	t.Helper()
	fmt.Fprintf(nc, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host)
	return readRaw(t, br, false)
}

// An answer from an HTTP/1.0 backend goes to the client in pacer's own
// version, HTTP/1.1 (RFC 9110 6.2): a body of unknown length goes chunked,
// which under an HTTP/1.0 status line is faulty framing (Go's client waits
// for a close that never comes). The backend's version still decides what
// becomes of the backend's connection: pooled with keep-alive, closed
// without.
func TestHTTP10BackendAnswersInHTTP11(t *testing.T) {
	r := newRig(t, Config{})
	var keepConns, onceConns connSet
	keep := keepAliveBackend(t, nil, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
		keepConns.add(c)
		io.WriteString(bw, "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 4\r\n\r\nkeep")
		return true
	})
	// Without keep-alive: this backend would read another request on the
	// connection, but pacer must not send one.
	once := keepAliveBackend(t, nil, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
		onceConns.add(c)
		io.WriteString(bw, "HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nonce")
		return true
	})
	old := keepAliveBackend(t, nil, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
		if req.URL.Path == "/warm" {
			io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nwarm")
			return true
		}
		io.WriteString(bw, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil-close")
		bw.Flush()
		return false
	})
	r.apply(app("/keep", 0, []string{"keep.test"}, "", keep), app("/once", 0, []string{"once.test"}, "", once),
		app("/old", 0, []string{"old.test"}, "", old))

	t.Run("keep-alive", func(t *testing.T) {
		nc, br := dialRaw(t, r.vhost)
		before := r.p.Totals().InPoller
		// The first on a cold pool goes fasthttp's way, the rest the poller's.
		for i := range 3 {
			if raw := getRaw(t, nc, br, "keep.test", "/"); !strings.HasPrefix(raw, "HTTP/1.1 200 OK\r\n") || !strings.HasSuffix(raw, "\r\n\r\nkeep") {
				t.Errorf("answer %d: %q, want HTTP/1.1 200 with the body", i, raw)
			}
		}
		if r.p.Totals().InPoller == before {
			t.Error("no answer went out from the poller: only fasthttp's path was tested")
		}
		if n := keepConns.len(); n != 1 {
			t.Errorf("the backend served %d connections, want its keep-alive one reused", n)
		}
	})
	t.Run("no keep-alive", func(t *testing.T) {
		nc, br := dialRaw(t, r.vhost)
		for i := range 3 {
			if raw := getRaw(t, nc, br, "once.test", "/"); !strings.HasPrefix(raw, "HTTP/1.1 200 OK\r\n") || !strings.HasSuffix(raw, "\r\n\r\nonce") {
				t.Errorf("answer %d: %q, want HTTP/1.1 200 with the body", i, raw)
			}
		}
		if n := onceConns.len(); n != 3 {
			t.Errorf("the backend served 3 requests on %d connections, want one each", n)
		}
	})
	t.Run("until close", func(t *testing.T) {
		nc, br := dialRaw(t, r.vhost)
		// The first on a cold pool, fasthttp's; the second the poller
		// sends on the warm pool, and gives back for its unknown length.
		for i, path := range []string{"/", "/warm", "/", "/warm"} {
			fmt.Fprintf(nc, "GET %s HTTP/1.1\r\nHost: old.test\r\n\r\n", path)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("answer %d: %v", i, err)
			}
			// Checked before the body is read: a chunked body under an
			// HTTP/1.0 status line reads until a close that never comes.
			if resp.Proto != "HTTP/1.1" {
				t.Fatalf("answer %d came as %s %s %v, want HTTP/1.1", i, resp.Proto, resp.Status, resp.TransferEncoding)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			want := map[string]string{"/": "until-close", "/warm": "warm"}[path]
			if err != nil || string(body) != want {
				t.Fatalf("answer %d: body %q, %v; want %q", i, body, err, want)
			}
			if path == "/" && (len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked") {
				t.Fatalf("answer %d: transfer encoding %v, want chunked", i, resp.TransferEncoding)
			}
		}
	})
}

// Connection's options are case-insensitive tokens in a list (RFC 9110
// 7.6.1): a client's close among them, in any case, gets its answer with
// Connection: close, and the connection closes after it (RFC 9112 9.6).
// A value the poller's quick look for "lose" or "LOSE" misses (cLoSe) is
// one the poller would serve; the others go fasthttp's way.
func TestClientConnectionCloseAnyCase(t *testing.T) {
	r, _ := pathRig(t)
	// The last: an exact close in one field, then another field, which
	// resets fasthttp's flag for the first.
	for _, v := range []string{"Close", "CLOSE", "TE, close", "close, X-Foo", "cLoSe", "keep-alive, cLoSe", "close\r\nConnection: keep-alive"} {
		t.Run(v, func(t *testing.T) {
			nc, br := dialRaw(t, r.vhost)
			// Two requests warm the pool: the poller serves this
			// connection's next.
			for range 2 {
				getRaw(t, nc, br, "web.test", "/warm")
			}
			fmt.Fprintf(nc, "GET /last HTTP/1.1\r\nHost: web.test\r\nConnection: %s\r\n\r\n", v)
			raw := readRaw(t, br, false)
			if !strings.HasSuffix(raw, "\r\n\r\n/last") || !strings.Contains(raw, "\r\nConnection: close\r\n") {
				t.Fatalf("answer %q, want /last's with Connection: close", raw)
			}
			wantClosed(t, br, "after the answer to Connection: "+strings.ReplaceAll(v, "\r\n", " "))
		})
	}
	if r.p.Totals().InPoller == 0 {
		t.Error("no request went the poller's way: the connections were never the poller's")
	}
	// pacer's own answers too (rawExchange reads to the close).
	raw := rawExchange(t, r.vhost, "GET / HTTP/1.1\r\nHost: unknown.test\r\nConnection: Close\r\n\r\n")
	if !strings.HasPrefix(raw, "HTTP/1.1 404 ") || !strings.Contains(raw, "\r\nConnection: close\r\n") {
		t.Errorf("unknown host: %q, want a 404 with Connection: close", raw)
	}
}

// A backend's Connection: close, in any case, keeps its connection out of
// the pool: the backend closes it after the answer, and the next request
// on it would fail (a POST, never retried, with a 502).
func TestBackendConnectionCloseAnyCase(t *testing.T) {
	r := newRig(t, Config{})
	be := keepAliveBackend(t, nil, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
		if req.URL.Path == "/bye" {
			io.WriteString(bw, "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 3\r\n\r\nbye")
			bw.Flush()
			return false
		}
		fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.URL.Path), req.URL.Path)
		return true
	})
	r.apply(app("/web", 0, []string{"web.test"}, "", be))
	// fasthttp's path answers /bye first on a cold pool; the poller
	// answers it next on the connection a warm-up left in the pool.
	for _, via := range []string{"fasthttp", "poller"} {
		t.Run(via, func(t *testing.T) {
			a, abr := dialRaw(t, r.vhost)
			if via == "poller" {
				getRaw(t, a, abr, "web.test", "/warm")
			}
			before := r.p.Totals().InPoller
			if raw := getRaw(t, a, abr, "web.test", "/bye"); !strings.HasSuffix(raw, "\r\n\r\nbye") {
				t.Fatalf("/bye answered %q", raw)
			}
			if inPoller := r.p.Totals().InPoller > before; inPoller != (via == "poller") {
				t.Fatalf("/bye answered in the poller: %v, want %v", inPoller, via == "poller")
			}
			b, bbr := dialRaw(t, r.vhost)
			io.WriteString(b, "POST /form HTTP/1.1\r\nHost: web.test\r\nContent-Length: 2\r\n\r\nhi")
			if raw := readRaw(t, bbr, false); !strings.HasPrefix(raw, "HTTP/1.1 200 ") || !strings.HasSuffix(raw, "\r\n\r\n/form") {
				t.Fatalf("the POST after /bye answered %q, want the backend's 200", raw)
			}
		})
	}
}

// A request whose body length two parsers may read differently gets a
// 400, and its connection closes (RFC 9112 6.3): Transfer-Encoding with
// Content-Length (item 3), or a Transfer-Encoding whose last coding is
// not chunked (item 4: identity, which fasthttp reads as no body, leaving
// the body to be read as the next request). The backend gets nothing.
// fasthttp's path has a cold pool; the poller's, a warm one.
func TestAmbiguousRequestFramingRefused(t *testing.T) {
	for _, tc := range []struct{ name, head, body string }{
		{"chunked and length", "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "5\r\nhello\r\n0\r\n\r\n"},
		{"length and chunked", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"},
		{"identity", "Transfer-Encoding: identity\r\n", smuggled},
		// Whole requests as the poller takes them, but for the coding.
		{"identity and length", "Transfer-Encoding: identity\r\nContent-Length: 5\r\n", "hello"},
		{"Identity alone", "Transfer-Encoding: Identity\r\n", ""},
	} {
		for _, via := range []string{"fasthttp", "poller"} {
			t.Run(tc.name+"/"+via, func(t *testing.T) {
				r, seen := pathRig(t)
				nc, br := dialRaw(t, r.vhost)
				if via == "poller" {
					for range 2 {
						getRaw(t, nc, br, "web.test", "/warm")
						<-seen
					}
				}
				io.WriteString(nc, "POST /form HTTP/1.1\r\nHost: web.test\r\n"+tc.head+"\r\n"+tc.body)
				wantRefused(t, br, seen)
			})
		}
	}
}

// A backend's chunked body is read strictly (RFC 9112 7.1): a chunk size
// is hex digits, then optional whitespace and extensions; a trailer line
// is a field; the trailers end at an empty line. Anything else is a broken
// answer: its header was on its way before its body was read, so the
// client's answer is cut short rather than a 502, and the backend
// connection is not reused. Extensions, with whitespace before them, and
// trailers pass. fasthttp's path reads the answer to a cold pool's first
// request; the poller sends one on a warm pool and gives the chunked
// answer back to it.
func TestBackendChunksReadStrictly(t *testing.T) {
	for _, via := range []string{"fasthttp", "poller"} {
		for _, path := range []string{"/size-garbage", "/trailer-garbage"} {
			t.Run(strings.TrimPrefix(path, "/")+"/"+via, func(t *testing.T) {
				r := newRig(t, Config{})
				be := keepAliveBackend(t, nil, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
					const head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
					switch req.URL.Path {
					case "/warm":
						io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nwarm")
					case "/good":
						io.WriteString(bw, head+"2 ;a=b\r\nok\r\n3\t;c\r\n!!!\r\n1;d=\"e f\"\r\n?\r\n0\r\nX-T: 1\r\n\r\n")
					case "/size-garbage":
						io.WriteString(bw, head+"2 zz\r\nok\r\n0\r\n\r\n")
					case "/trailer-garbage":
						io.WriteString(bw, head+"2\r\nok\r\n0\r\nX\n\r\n")
					}
					return true
				})
				r.apply(app("/web", 0, []string{"web.test"}, "", be))
				get := func(path string) (*http.Response, []byte, error) {
					nc, br := dialRaw(t, r.vhost)
					if via == "poller" {
						getRaw(t, nc, br, "web.test", "/warm")
					}
					fmt.Fprintf(nc, "GET %s HTTP/1.1\r\nHost: web.test\r\n\r\n", path)
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						return nil, nil, err
					}
					body, err := io.ReadAll(resp.Body)
					return resp, body, err
				}
				resp, body, err := get(path)
				if err == nil {
					t.Fatalf("the client got a whole answer: %s %q", resp.Status, body)
				}
				t.Logf("the client's answer ends: %v (header read: %v)", err, resp != nil)
				if resp, body, err := get("/good"); err != nil || resp.StatusCode != 200 || string(body) != "ok!!!?" {
					t.Fatalf("/good after it: %v, %q, %v", resp, body, err)
				}
			})
		}
	}
}

// A backend that sends a body after an answer that has none (to a HEAD,
// or a 204 or 304), a moment after the answer (a common backend bug):
// those bytes must not be read as the answer to the next request on that
// connection, another client's. The connection is peeked at before it is
// reused, which finds a body that came before; and a backend caught so
// once has its HEAD connections closed, so that even a body that comes
// after the next request was sent cannot be taken for its answer.
func TestBodyAfterBodilessAnswer(t *testing.T) {
	for _, tc := range []struct {
		name, method, path string
	}{
		{"HEAD", "HEAD", "/"}, {"204", "GET", "/204"}, {"304", "GET", "/304"},
	} {
		// fasthttp's path: the first request to a cold pool, and a request
		// the poller declines (Connection: close); the poller's: a
		// request after a warm-up, and a keep-alive one.
		for _, via := range []string{"fasthttp", "poller"} {
			t.Run(tc.name+"/"+via, func(t *testing.T) {
				r := newRig(t, Config{})
				stray, strayOut := make(chan struct{}), make(chan struct{})
				release := sync.OnceFunc(func() { close(stray) })
				t.Cleanup(release)
				var owed sync.Map    // connections whose next answer starts with the body
				var late atomic.Bool // the body comes with the next answer, not before the next request
				be := keepAliveBackend(t, nil, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
					if _, ok := owed.LoadAndDelete(c); ok {
						io.WriteString(bw, "oops!")
					}
					var head string
					switch {
					case req.Method == "HEAD":
						head = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
					case req.URL.Path == "/204":
						head = "HTTP/1.1 204 No Content\r\n\r\n"
					case req.URL.Path == "/304":
						head = "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"
					default:
						fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.URL.Path), req.URL.Path)
						return true
					}
					io.WriteString(bw, head)
					if late.Load() {
						owed.Store(c, true)
						return true
					}
					bw.Flush()
					<-stray
					// On loopback, in pacer's socket when the write returns.
					io.WriteString(bw, "oops!")
					bw.Flush()
					close(strayOut)
					return true
				})
				r.apply(app("/web", 0, []string{"web.test"}, "", be))

				a, abr := dialRaw(t, r.vhost)
				if via == "poller" {
					getRaw(t, a, abr, "web.test", "/warm")
				}
				before := r.p.Totals().InPoller
				fmt.Fprintf(a, "%s %s HTTP/1.1\r\nHost: web.test\r\n\r\n", tc.method, tc.path)
				if raw := readRaw(t, abr, true); !strings.HasPrefix(raw, "HTTP/1.1 "+map[string]string{"HEAD": "200", "204": "204", "304": "304"}[tc.name]) {
					t.Fatalf("answer %q", raw)
				}
				if inPoller := r.p.Totals().InPoller > before; inPoller != (via == "poller") {
					t.Fatalf("answered in the poller: %v, want %v", inPoller, via == "poller")
				}
				release()
				<-strayOut

				b, bbr := dialRaw(t, r.vhost)
				hdr := ""
				if via == "fasthttp" {
					hdr = "Connection: close\r\n"
				}
				fmt.Fprintf(b, "GET /after HTTP/1.1\r\nHost: web.test\r\n%s\r\n", hdr)
				if raw := readRaw(t, bbr, false); !strings.HasPrefix(raw, "HTTP/1.1 200 ") || !strings.HasSuffix(raw, "\r\n\r\n/after") {
					t.Fatalf("the next request answered %q, want /after's", raw)
				}
				if tc.method != "HEAD" {
					return
				}
				// Caught once: now a body that comes only after the next
				// request went out is not taken for its answer either.
				late.Store(true)
				fmt.Fprintf(a, "HEAD / HTTP/1.1\r\nHost: web.test\r\n\r\n")
				if raw := readRaw(t, abr, true); !strings.HasPrefix(raw, "HTTP/1.1 200 ") {
					t.Fatalf("the second HEAD: %q", raw)
				}
				c, cbr := dialRaw(t, r.vhost)
				fmt.Fprintf(c, "GET /later HTTP/1.1\r\nHost: web.test\r\n%s\r\n", hdr)
				if raw := readRaw(t, cbr, false); !strings.HasPrefix(raw, "HTTP/1.1 200 ") || !strings.HasSuffix(raw, "\r\n\r\n/later") {
					t.Fatalf("the request after a HEAD to a backend caught before answered %q, want /later's", raw)
				}
			})
		}
	}
}

// A backend that answers HEAD as it should keeps its connection: HEAD-heavy
// traffic (monitors, cache revalidation) must not dial once per request.
func TestHeadKeepsAWellBehavedBackendsConnection(t *testing.T) {
	r := newRig(t, Config{})
	var conns atomic.Int32
	be := rawBackend(t, func(c net.Conn) {
		conns.Add(1)
		go func() {
			defer c.Close()
			br, bw := bufio.NewReader(c), bufio.NewWriter(c)
			for {
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(req.URL.Path))
				if req.Method != "HEAD" {
					io.WriteString(bw, req.URL.Path)
				}
				if bw.Flush() != nil {
					return
				}
			}
		}()
	})
	r.apply(app("/web", 0, []string{"web.test"}, "", be))
	nc, br := dialRaw(t, r.vhost)
	for i := range 10 {
		fmt.Fprintf(nc, "HEAD /h%d HTTP/1.1\r\nHost: web.test\r\n\r\n", i)
		if raw := readRaw(t, br, true); !strings.HasPrefix(raw, "HTTP/1.1 200 ") {
			t.Fatalf("HEAD %d: %q", i, raw)
		}
	}
	getRaw(t, nc, br, "web.test", "/after")
	if n := conns.Load(); n != 1 {
		t.Fatalf("the backend saw %d connections for 10 HEADs and a GET on one client connection, want 1", n)
	}
}

// A backend that closes an idle connection (its keep-alive timeout) after
// a bodiless answer has sent nothing stray: its HEAD connections stay
// pooled.
func TestIdleCloseAfterBodilessIsNotAStray(t *testing.T) {
	r := newRig(t, Config{})
	closed := make(chan struct{}, 16)
	var conns atomic.Int32
	be := rawBackend(t, func(c net.Conn) {
		conns.Add(1)
		go func() {
			defer c.Close()
			br := bufio.NewReader(c)
			for {
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				if req.URL.Path == "/204" {
					io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
					c.Close() // as a keep-alive timeout would, a moment later
					closed <- struct{}{}
					return
				}
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(req.URL.Path))
				if req.Method != "HEAD" {
					io.WriteString(c, req.URL.Path)
				}
			}
		}()
	})
	r.apply(app("/web", 0, []string{"web.test"}, "", be))
	nc, br := dialRaw(t, r.vhost)
	fmt.Fprintf(nc, "GET /204 HTTP/1.1\r\nHost: web.test\r\n\r\n")
	if raw := readRaw(t, br, true); !strings.HasPrefix(raw, "HTTP/1.1 204 ") {
		t.Fatalf("answer %q", raw)
	}
	<-closed // the FIN is in pacer's socket: loopback delivers it with the close
	if raw := getRaw(t, nc, br, "web.test", "/after"); !strings.HasSuffix(raw, "\r\n\r\n/after") {
		t.Fatalf("after the idle close: %q", raw)
	}
	before := conns.Load()
	for i := range 5 {
		fmt.Fprintf(nc, "HEAD /h%d HTTP/1.1\r\nHost: web.test\r\n\r\n", i)
		if raw := readRaw(t, br, true); !strings.HasPrefix(raw, "HTTP/1.1 200 ") {
			t.Fatalf("HEAD %d: %q", i, raw)
		}
	}
	getRaw(t, nc, br, "web.test", "/last")
	if n := conns.Load() - before; n > 0 {
		t.Fatalf("5 HEADs and a GET after an idle close opened %d more backend connections, want none: the backend was taken for one that strays", n)
	}
}

// A body sent a moment late after a HEAD answer (after the next request's
// peek) costs that request its answer once; the backend is then caught, and
// its HEAD connections close, so it does not happen again.
func TestLateBodyAfterHeadIsCaughtOnce(t *testing.T) {
	r := newRig(t, Config{})
	var owed sync.Map
	be := keepAliveBackend(t, nil, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
		if _, ok := owed.LoadAndDelete(c); ok {
			io.WriteString(bw, "oops!")
		}
		if req.Method == "HEAD" {
			io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
			owed.Store(c, true) // the body comes with the next answer
			return true
		}
		fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.URL.Path), req.URL.Path)
		return true
	})
	r.apply(app("/web", 0, []string{"web.test"}, "", be))
	nc, br := dialRaw(t, r.vhost)
	head := func() {
		t.Helper()
		fmt.Fprintf(nc, "HEAD / HTTP/1.1\r\nHost: web.test\r\n\r\n")
		if raw := readRaw(t, br, true); !strings.HasPrefix(raw, "HTTP/1.1 200 ") {
			t.Fatalf("HEAD: %q", raw)
		}
	}
	next := func(path string) string {
		c, cbr := dialRaw(t, r.vhost)
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n", path)
		return readRaw(t, cbr, false)
	}
	head()
	if raw := next("/first"); strings.HasSuffix(raw, "\r\n\r\noops!") {
		t.Fatalf("the stray body was passed on as an answer: %q", raw)
	}
	for i := range 3 {
		head()
		if raw := next("/again"); !strings.HasSuffix(raw, "\r\n\r\n/again") {
			t.Fatalf("after the backend was caught, request %d answered %q, want /again's", i, raw)
		}
	}
}
