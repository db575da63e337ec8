package httpproxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pacer-lb/pacer/internal/testnet"
)

// What separates one request from the next on a client's connection, and
// one answer from the next on a pooled backend connection, is never left
// to the client or backend to undo: a body made of a request must reach no
// backend as a request of its own (request smuggling).

// smuggled is a request hidden in another's body.
const smuggled = "GET /smuggled HTTP/1.1\r\nHost: web.test\r\n\r\n"

// noneSmuggled fails the test if the backend of a pathRig saw /smuggled
// among the requests in seen.
func noneSmuggled(t *testing.T, seen <-chan []byte) {
	t.Helper()
	for {
		select {
		case got := <-seen:
			if strings.HasPrefix(string(got), "GET /smuggled ") {
				t.Fatalf("the backend got the request hidden in a body: %q", got)
			}
		default:
			return
		}
	}
}

// wantClosed fails the test unless the connection br reads ends with
// nothing more. Closed with bytes of the client's unread, the socket ends
// with a reset rather than a FIN: either way, nothing more comes.
func wantClosed(t *testing.T, br *bufio.Reader, when string) {
	t.Helper()
	if rest, err := io.ReadAll(br); (err != nil && !errors.Is(err, syscall.ECONNRESET)) || len(rest) != 0 {
		t.Fatalf("%s: %q, %v; want the connection closed", when, rest, err)
	}
}

// wantRefused fails the test unless br's answer is a 400, the connection
// then closes, and the backend saw nothing of the request.
func wantRefused(t *testing.T, br *bufio.Reader, seen <-chan []byte) {
	t.Helper()
	if raw := readRaw(t, br, false); !strings.HasPrefix(raw, "HTTP/1.1 400 ") {
		t.Fatalf("answer %q, want 400", raw)
	}
	wantClosed(t, br, "after the 400")
	select {
	case got := <-seen:
		t.Fatalf("the backend got %q", got)
	default:
	}
}

// Connection may name headers for the proxy to drop, but not the ones that
// frame the request: Content-Length and Host reach the backend whatever
// Connection says, on the poller's path and on fasthttp's.
func TestConnectionCannotDropContentLength(t *testing.T) {
	r, seen := pathRig(t)
	nc, br := dialRaw(t, r.vhost)
	post := fmt.Sprintf("POST /form HTTP/1.1\r\nHost: web.test\r\nConnection: Content-Length, Host\r\nContent-Length: %d\r\n\r\n%s", len(smuggled), smuggled)
	// The first request on a connection with a cold pool goes fasthttp's
	// way; the next ones, to a warm pool, the poller's.
	for i := range 3 {
		before := r.p.Totals().InPoller
		io.WriteString(nc, post)
		if raw := readRaw(t, br, false); !strings.HasSuffix(raw, "/form") {
			t.Fatalf("POST %d answered %q, want the POST's answer", i, raw)
		}
		got := string(<-seen)
		if !strings.HasPrefix(got, "POST /form ") || !strings.HasSuffix(got, "\r\n\r\n"+smuggled) ||
			!strings.Contains(got, "Host: web.test") {
			t.Fatalf("POST %d reached the backend as %q, want it whole with its Host", i, got)
		}
		t.Logf("POST %d: in the poller: %v", i, r.p.Totals().InPoller > before)
	}
	if r.p.Totals().InPoller == 0 {
		t.Error("no POST went the poller's way: only fasthttp's path was tested")
	}
	io.WriteString(nc, "GET /after HTTP/1.1\r\nHost: web.test\r\n\r\n")
	if raw := readRaw(t, br, false); !strings.HasSuffix(raw, "/after") {
		t.Fatalf("answer %q after the POSTs, want /after's", raw)
	}
	if got := string(<-seen); !strings.HasPrefix(got, "GET /after ") {
		t.Fatalf("backend got %q, want GET /after", got)
	}
	noneSmuggled(t, seen)
}

// An answer pacer makes itself (here a 404 for an unknown host) to a
// request whose body it did not read closes the connection: fasthttp reads
// only the start of a body before the handler, and would read the rest as
// the client's next request.
func TestOwnAnswerWithUnreadBodyCloses(t *testing.T) {
	r, seen := pathRig(t)
	for _, tc := range []struct{ name, head, body string }{
		{"length", "Content-Length: %d\r\n", strings.Repeat("x", 9000) + smuggled},
		{"chunked", "Transfer-Encoding: chunked\r\n", "2328\r\n" + strings.Repeat("x", 9000) + "\r\n0\r\n\r\n" + smuggled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, br := dialRaw(t, r.vhost)
			head := tc.head
			if strings.Contains(head, "%d") {
				head = fmt.Sprintf(head, len(tc.body))
			}
			io.WriteString(nc, "POST / HTTP/1.1\r\nHost: unknown.test\r\n"+head+"\r\n"+tc.body)
			if raw := readRaw(t, br, false); !strings.HasPrefix(raw, "HTTP/1.1 404 ") {
				t.Fatalf("answer %q, want 404", raw)
			}
			wantClosed(t, br, "after the 404")
			noneSmuggled(t, seen)
		})
	}
}

// A client that announces more body than it sends, then stops sending,
// gets a 400 and a closed connection; the backend gets nothing. Forwarded,
// the request would have carried fasthttp's error text as its body under
// the client's length.
func TestShortBodyIsTheClientsError(t *testing.T) {
	r, seen := pathRig(t)
	nc, br := dialRaw(t, r.vhost)
	io.WriteString(nc, "POST /form HTTP/1.1\r\nHost: web.test\r\nContent-Length: 20000\r\n\r\n"+strings.Repeat("y", 12000))
	nc.(*net.TCPConn).CloseWrite()
	wantRefused(t, br, seen)
}

// An Upgrade the backend does not take (it answers 200) is an ordinary
// answer, and the connection closes after it: the client never gets a raw
// line to the backend that its next requests would take past the proxy.
func TestUpgradeRefusedByTheBackend(t *testing.T) {
	r := newRig(t, Config{})
	seen := make(chan []byte, 16)
	be := keepAliveBackend(t, seen, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
		io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nKeep-Alive: timeout=5\r\n\r\nno upgrade.")
		return true
	})
	r.apply(app("/ws", 0, []string{"ws.test"}, "", be))
	nc, br := dialRaw(t, r.vhost)
	io.WriteString(nc, "GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	raw := readRaw(t, br, false)
	if !strings.HasPrefix(raw, "HTTP/1.1 200 ") || !strings.HasSuffix(raw, "no upgrade.") || strings.Contains(raw, "Keep-Alive") {
		t.Fatalf("answer %q, want the backend's 200 without its hop-by-hop headers", raw)
	}
	io.WriteString(nc, "GET /next HTTP/1.1\r\nHost: ws.test\r\n\r\n")
	wantClosed(t, br, "after the refused upgrade")
	if got := string(<-seen); !strings.HasPrefix(got, "GET /chat ") {
		t.Fatalf("backend got %q first", got)
	}
	select {
	case got := <-seen:
		t.Fatalf("the backend got a request after the refused upgrade: %q", got)
	default:
	}
	if st := r.p.Stats(); st[0].Responses[1] != 1 || st[0].Responses[0] != 0 {
		t.Errorf("responses by class %v, want the one 2xx counted as such", st[0].Responses)
	}
}

// A backend that never answers the connect (its host gone) costs the
// dial timeout, and the request goes on to the next backend; with none
// left, the client gets 504.
func TestConnectTimeoutTriesTheNextBackend(t *testing.T) {
	r := newRig(t, Config{DialTimeout: 200 * time.Millisecond})
	silent := testnet.SilentAddr(t)
	_, live := httpBackend(t, "live", nil)
	r.apply(app("/web", 0, []string{"web.test"}, "", silent, live))
	c := client()
	for i := range 4 { // round robin: half of them start at the silent one
		if s, body, _ := get(t, c, r.vhost, "web.test", "/"); s != 200 || body != "live" {
			t.Fatalf("GET %d: %d %q, want the live backend's answer", i, s, body)
		}
	}
	r.apply(app("/web", 0, []string{"web.test"}, "", silent))
	r.waitApplied()
	if s, body, _ := get(t, c, r.vhost, "web.test", "/"); s != 504 || !strings.Contains(body, "/web") {
		t.Fatalf("with only the silent backend: %d %q, want 504 naming the service", s, body)
	}
}

// A backend's answer keeps its length whatever its Connection names, and
// loses every hop-by-hop header however many it sends.
func TestAnswerHopByHopHeaders(t *testing.T) {
	r := newRig(t, Config{})
	hops := "Connection: Content-Length, X-A, X-B, X-C, X-D, X-E, X-F, X-G, X-H, X-I\r\n" +
		"X-A: 1\r\nX-B: 1\r\nX-C: 1\r\nX-D: 1\r\nX-E: 1\r\nX-F: 1\r\nX-G: 1\r\nX-H: 1\r\nX-I: 1\r\n" +
		"Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nTrailer: X-T\r\nUpgrade: none\r\nX-Kept: yes\r\n"
	be := keepAliveBackend(t, nil, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
		io.WriteString(bw, "HTTP/1.1 200 OK\r\n"+hops+"Content-Length: 4\r\n\r\nbody")
		return true
	})
	r.apply(app("/web", 0, []string{"web.test"}, "", be))
	nc, br := dialRaw(t, r.vhost)
	for i := range 3 { // fasthttp's path, then the poller's
		io.WriteString(nc, "GET / HTTP/1.1\r\nHost: web.test\r\n\r\n")
		raw := readRaw(t, br, false)
		if !strings.HasSuffix(raw, "\r\n\r\nbody") || !strings.Contains(raw, "X-Kept: yes") {
			t.Fatalf("answer %d: %q, want the body and the end-to-end header", i, raw)
		}
		for _, h := range []string{"Connection:", "X-A:", "X-E:", "X-I:", "Keep-Alive:", "Proxy-Authenticate:", "Trailer:", "Upgrade:"} {
			if strings.Contains(raw, h) {
				t.Fatalf("answer %d kept %s: %q", i, h, raw)
			}
		}
	}
}

// An HTTP/1.0 client asking for keep-alive gets it, as HTTP/1.0 spells it;
// one whose answer has no length (chunked from the backend, which gets
// HTTP/1.1) gets the body as it is, ended by the close: HTTP/1.0 has no
// chunks.
func TestHTTP10Client(t *testing.T) {
	r := newRig(t, Config{})
	be := keepAliveBackend(t, nil, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
		if req.Proto != "HTTP/1.1" {
			io.WriteString(bw, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 9\r\n\r\nnot 1.1\r\n")
			return true
		}
		if req.URL.Path == "/chunked" {
			io.WriteString(bw, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
			return true
		}
		io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	r.apply(app("/web", 0, []string{"web.test"}, "", be))
	nc, br := dialRaw(t, r.vhost)
	for i := range 2 {
		io.WriteString(nc, "GET / HTTP/1.0\r\nHost: web.test\r\nConnection: keep-alive\r\n\r\n")
		raw := readRaw(t, br, false)
		if !strings.HasSuffix(raw, "\r\n\r\nok") || !strings.Contains(strings.ToLower(raw), "connection: keep-alive") {
			t.Fatalf("keep-alive answer %d: %q, want ok with Connection: keep-alive", i, raw)
		}
	}
	io.WriteString(nc, "GET /chunked HTTP/1.0\r\nHost: web.test\r\nConnection: keep-alive\r\n\r\n")
	all, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	head, body, _ := strings.Cut(string(all), "\r\n\r\n")
	if !strings.HasPrefix(head, "HTTP/1.1 200 ") || strings.Contains(strings.ToLower(head), "chunked") ||
		strings.Contains(strings.ToLower(head), "content-length") || body != "hello world" {
		t.Fatalf("answer of unknown length to HTTP/1.0: %q, want the plain body ended by the close", all)
	}
}

// A request fasthttp refuses to parse (a Host it rejects) gets fasthttp's
// 400 and never reaches the backend, though the pool is warm: the poller,
// which sends a request before fasthttp parses it, does not take it
// (plainHost), and nothing stays counted in flight (which
// least-connections balances on). (Were it sent, its answer would go back
// to fasthttp, which refuses the request: dropResume closes the backend
// connection it went out on.)
func TestRefusedRequestNeverReachesTheBackend(t *testing.T) {
	r := newRig(t, Config{})
	seen := make(chan []byte, 4)
	be := keepAliveBackend(t, seen, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
		if req.URL.Path == "/chunked" {
			io.WriteString(bw, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
			return true
		}
		io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	_, addr, _ := r.webPort(t, be)
	nc, br := dialRaw(t, addr)
	io.WriteString(nc, "GET / HTTP/1.1\r\nHost: web.test\r\n\r\n")
	readRaw(t, br, false) // warms the pool: the next request goes the poller's way
	<-seen
	io.WriteString(nc, "GET /chunked HTTP/1.1\r\nHost: bad]\r\n\r\n")
	if raw := readRaw(t, br, false); !strings.HasPrefix(raw, "HTTP/1.1 400 ") {
		t.Fatalf("answer %q, want fasthttp's 400", raw)
	}
	select {
	case got := <-seen:
		t.Fatalf("backend got %q, which fasthttp refuses", got)
	default:
	}
	r.p.mu.Lock()
	b := r.p.backends[be]
	r.p.mu.Unlock()
	for deadline := time.Now().Add(waitFor); b.inflight.Load() != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("backend still counts %d requests in flight", b.inflight.Load())
		}
	}
}

// An Upgrade from a client pinned by STICKY goes to its backend, as its
// other requests do (each backend here refuses the upgrade by name).
func TestStickyUpgrade(t *testing.T) {
	r := newRig(t, Config{})
	named := func(name string) netip.AddrPort {
		return keepAliveBackend(t, nil, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
			fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(name), name)
			return true
		})
	}
	ap := app("/ws", 0, []string{"ws.test"}, "", named("a"), named("b"))
	ap.Services[0].Sticky = true
	r.apply(ap)
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	_, pinned, resp := get(t, c, r.vhost, "ws.test", "/")
	cookie := stickyCookie(t, resp)
	for i := range 4 { // round robin alone would alternate
		nc, br := dialRaw(t, r.vhost)
		fmt.Fprintf(nc, "GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nCookie: %s=%s\r\n\r\n", cookie.Name, cookie.Value)
		if raw := readRaw(t, br, false); !strings.HasSuffix(raw, "\r\n\r\n"+pinned) {
			t.Fatalf("upgrade %d answered by %q, want the pinned backend %s", i, raw, pinned)
		}
	}
}

// The latency of a request the poller sent and gave back to fasthttp (here
// for a chunked answer) runs from when the request was read, not from the
// hand-over: a backend that takes 300 ms shows as 300 ms.
func TestLatencyOfAGivenBackRequest(t *testing.T) {
	r := newRig(t, Config{})
	be := keepAliveBackend(t, nil, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
		if req.URL.Path == "/slow" {
			time.Sleep(300 * time.Millisecond) // the backend's think time, measured below
			io.WriteString(bw, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
			return true
		}
		io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	r.apply(app("/web", 0, []string{"web.test"}, "", be))
	nc, br := dialRaw(t, r.vhost)
	io.WriteString(nc, "GET / HTTP/1.1\r\nHost: web.test\r\n\r\n")
	readRaw(t, br, false) // warms the pool: the next request goes the poller's way
	before := r.p.Stats()[0].LatencySum
	io.WriteString(nc, "GET /slow HTTP/1.1\r\nHost: web.test\r\n\r\n")
	if raw := readRaw(t, br, false); !strings.HasPrefix(raw, "HTTP/1.1 200 ") {
		t.Fatalf("answer %q", raw)
	}
	var took float64
	for deadline := time.Now().Add(waitFor); ; time.Sleep(time.Millisecond) {
		st := r.p.Stats()[0]
		if took = st.LatencySum - before; took > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slow request was never counted")
		}
	}
	if took < 0.3 {
		t.Fatalf("the slow request counted %.3fs, want at least the backend's 0.3s", took)
	}
}

// A service port another program holds opens once it is free, with no
// table change (a stable cluster may not change for hours).
func TestBusyPortOpensWhenFree(t *testing.T) {
	r := newRig(t, Config{})
	port := testnet.FreePort(t)
	squatter, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatalf("cannot take port %d for the test: %v", port, err)
	}
	t.Cleanup(func() { squatter.Close() })
	_, b := httpBackend(t, "b", nil)
	r.apply(app("/web", port, nil, "", b))
	r.waitApplied()
	for _, ps := range r.p.Ports() {
		if ps.Port == port && ps.Listening {
			t.Fatalf("port %d listening while another program holds it: %+v", port, ps)
		}
	}
	squatter.Close()
	addr := r.waitPort(port)
	if s, body, _ := get(t, client(), addr, "", "/"); s != 200 || body != "b" {
		t.Fatalf("through the port once free: %d %q", s, body)
	}
}

// An upgrade whose first backend refuses the connect goes on to the next,
// and the service counts that retry.
func TestUpgradeRetryCounted(t *testing.T) {
	r := newRig(t, Config{})
	r.apply(app("/ws", 0, []string{"ws.test"}, "", deadAddr(t), wsBackend(t, echoWS)))
	for range 2 { // round robin: one of the two starts at the dead backend
		c, br := wsDial(t, r.vhost, nil)
		c.Write([]byte("ping"))
		got := make([]byte, 4)
		if _, err := io.ReadFull(br, got); err != nil || string(got) != "ping" {
			t.Fatalf("echo through the tunnel: %q, %v", got, err)
		}
		c.Close()
	}
	if st := r.p.Stats()[0]; st.Retries != 1 {
		t.Fatalf("retries %d, want the one move from the dead backend", st.Retries)
	}
}
