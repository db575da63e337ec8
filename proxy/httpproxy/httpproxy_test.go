package httpproxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/internal/testnet"
)

func TestVHostRouting(t *testing.T) {
	r := newRig(t, Config{})
	_, a := httpBackend(t, "exact", nil)
	_, w := httpBackend(t, "wild", nil)
	_, api := httpBackend(t, "api", nil)
	_, deep := httpBackend(t, "deep-wild", nil)
	_, multi := httpBackend(t, "multi", nil)
	// PATH "-i /Shop /cart", as marathon-lb users write it.
	multiApp := app("/multi", 0, []string{"multi.example.com"}, "", multi)
	multiApp.Services[0].Paths, multiApp.Services[0].PathsFold = []string{"/Shop", "/cart"}, true
	r.apply(
		app("/exact", 0, []string{"Shop.Example.com"}, "", a),
		app("/api", 0, []string{"shop.example.com"}, "/api", api),
		app("/wild", 0, []string{"*.example.com"}, "", w),
		app("/deep", 0, []string{"*.b.example.com"}, "", deep),
		multiApp,
	)
	c := client()
	for _, tc := range []struct {
		host, path string
		want       string // backend name, or "404"
	}{
		{"shop.example.com", "/", "exact"},
		{"SHOP.example.COM:8080", "/x", "exact"}, // case and port ignored
		{"shop.example.com.", "/", "exact"},      // trailing dot
		{"shop.example.com", "/api/v1?q=1", "api"},
		{"shop.example.com", "/apix", "api"}, // PATH is a prefix, as marathon-lb's path_beg
		{"other.example.com", "/", "wild"},
		{"a.b.example.com", "/", "deep-wild"}, // longest wildcard first
		{"example.com", "/", "404"},
		{"multi.example.com", "/shop/x", "multi"}, // any of the prefixes, in any case
		{"multi.example.com", "/CART", "multi"},
		{"multi.example.com", "/", "404"},
		{"unknown.test", "/", "404"},
	} {
		status, body, _ := get(t, c, r.vhost, tc.host, tc.path)
		got := body
		if status == 404 {
			got = "404"
		} else if status != 200 {
			got = fmt.Sprint(status)
		}
		if got != tc.want {
			t.Errorf("Host %s%s: got %q (status %d), want %q", tc.host, tc.path, body, status, tc.want)
		}
	}
	// The route index is per snapshot: a new vhost is routed at once.
	r.apply(app("/late", 0, []string{"late.test"}, "", a))
	if status, body, _ := get(t, c, r.vhost, "late.test", "/"); status != 200 || body != "exact" {
		t.Fatalf("after a table change: %d %q", status, body)
	}
}

func TestHeaders(t *testing.T) {
	r := newRig(t, Config{})
	var got http.Header
	var gotHost string
	var mu sync.Mutex
	_, b := httpBackend(t, "b", func(w http.ResponseWriter, req *http.Request) {
		mu.Lock()
		got, gotHost = req.Header.Clone(), req.Host
		mu.Unlock()
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("Connection", "X-Secret")
		w.Header().Set("X-Secret", "drop me")
		w.Header().Set("Proxy-Connection", "keep-alive")
		io.WriteString(w, "ok")
	})
	port := testnet.FreePort(t)
	r.apply(app("/web", port, []string{"web.test"}, "", b))
	addr := r.waitPort(port)

	req := "GET /h HTTP/1.1\r\nHost: Web.Test:" + fmt.Sprint(port) + "\r\n" +
		"x-forwarded-for: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n" +
		"Keep-Alive: 300\r\nProxy-Connection: keep-alive\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n" +
		"TE: trailers\r\nProxy-Authorization: Basic eA==\r\nX-Custom: kept\r\n\r\n"
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, req)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	mu.Lock()
	defer mu.Unlock()
	want := map[string]string{
		"X-Forwarded-For":   "10.0.0.1, 127.0.0.1",
		"X-Forwarded-Proto": "http",
		"X-Forwarded-Host":  "Web.Test:" + fmt.Sprint(port),
		"X-Forwarded-Port":  fmt.Sprint(port),
		"X-Custom":          "kept",
	}
	for k, v := range want {
		if g := strings.Join(got.Values(k), ","); g != v {
			t.Errorf("backend saw %s = %q, want %q", k, g, v)
		}
	}
	for _, k := range []string{"Keep-Alive", "Proxy-Connection", "X-Hop", "Te", "Proxy-Authorization", "Connection"} {
		if v := got.Values(k); len(v) > 0 {
			t.Errorf("hop-by-hop %s reached the backend: %q", k, v)
		}
	}
	if gotHost != "Web.Test:"+fmt.Sprint(port) {
		t.Errorf("Host = %q, want passed through", gotHost)
	}
	for _, k := range []string{"Keep-Alive", "X-Secret", "Proxy-Connection"} {
		if v := resp.Header.Values(k); len(v) > 0 {
			t.Errorf("hop-by-hop %s reached the client: %q", k, v)
		}
	}
	if resp.Header.Get("X-Backend") != "b" || resp.Close {
		t.Errorf("response header %v, close %v", resp.Header, resp.Close)
	}
}

func TestNoBackend503(t *testing.T) {
	r := newRig(t, Config{RetryAfter: 2 * time.Second})
	port := testnet.FreePort(t)
	r.apply(app("/shop/web", port, []string{"web.test"}, ""))
	addr := r.waitPort(port)
	for _, target := range []struct{ addr, host string }{{addr, ""}, {r.vhost, "web.test"}} {
		status, body, resp := get(t, client(), target.addr, target.host, "/")
		if status != 503 || resp.Header.Get("Retry-After") != "2" || !strings.Contains(body, "/shop/web") {
			t.Errorf("%s: %d Retry-After %q body %q", target.addr, status, resp.Header.Get("Retry-After"), body)
		}
	}
	// pacer's own 503s, told apart from a backend's in the metrics.
	if st := r.p.Stats(); len(st) != 1 || st[0].Own != [3]uint64{0, 2, 0} || st[0].Responses[4] != 2 {
		t.Errorf("stats: %+v, want two of pacer's own 503s", st)
	}
}

func TestBadGatewayAndTimeout(t *testing.T) {
	r := newRig(t, Config{ResponseHeaderTimeout: 300 * time.Millisecond, DialTimeout: 200 * time.Millisecond})
	// A backend that accepts and closes without answering.
	closer := rawBackend(t, func(c net.Conn) {
		bufio.NewReader(c).ReadString('\n')
		c.Close()
	})
	release := make(chan struct{})
	defer close(release)
	_, slow := httpBackend(t, "slow", func(w http.ResponseWriter, req *http.Request) { <-release })
	r.apply(
		app("/closer", 0, []string{"closer.test"}, "", closer),
		app("/refused", 0, []string{"refused.test"}, "", deadAddr(t)),
		app("/slow", 0, []string{"slow.test"}, "", slow),
		// A backend whose connects neither succeed nor fail.
		app("/silent", 0, []string{"silent.test"}, "", testnet.SilentAddr(t)),
	)
	c := client()
	for _, tc := range []struct {
		host string
		want int
	}{{"closer.test", 502}, {"refused.test", 502}, {"slow.test", 504}, {"silent.test", 504}} {
		status, body, _ := get(t, c, r.vhost, tc.host, "/")
		app := "/" + strings.TrimSuffix(tc.host, ".test")
		if status != tc.want || !strings.Contains(body, app) {
			t.Errorf("%s: %d %q, want %d naming %s", tc.host, status, body, tc.want, app)
		}
	}
	st := r.p.Stats()
	if len(st) != 4 || st[3].App != "/slow" || st[3].Responses[4] != 1 {
		t.Errorf("stats: %+v", st)
	}
	// Each 5xx was pacer's own: its count says which.
	want := map[string][3]uint64{"/closer": {1, 0, 0}, "/refused": {1, 0, 0}, "/slow": {0, 0, 1}, "/silent": {0, 0, 1}}
	for _, s := range st {
		if s.Own != want[s.App] {
			t.Errorf("%s: own answers %v, want %v", s.App, s.Own, want[s.App])
		}
	}
}

// Issue 5: an abrupt task death with warm pooled connections fails no GET.
func TestRetryAfterTaskDeath(t *testing.T) {
	r := newRig(t, Config{})
	a, aAddr := httpBackend(t, "a", nil)
	_, bAddr := httpBackend(t, "b", nil)
	r.apply(app("/web", 0, []string{"web.test"}, "", aAddr, bAddr))
	c := client()
	// Warm both pools with several connections each.
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				if s, _, _, err := tryGet(c, r.vhost, "web.test", "/"); s != 200 {
					t.Errorf("warm-up: %d %v", s, err)
				}
			}
		}()
	}
	wg.Wait()
	r.p.mu.Lock()
	be := r.p.backends[aAddr]
	r.p.mu.Unlock()
	if be.open.Load() == 0 {
		t.Fatal("no pooled connection to a after warm-up")
	}
	// The task dies: its listener and every connection go at once, and the
	// table still lists it (Marathon has not noticed yet).
	a.Listener.Close()
	a.CloseClientConnections()
	var failed atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				if s, body, _, err := tryGet(c, r.vhost, "web.test", "/"); s != 200 || body != "b" {
					failed.Add(1)
					t.Errorf("after a's death: %d %q %v", s, body, err)
				}
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d GETs failed", n)
	}
	if st := r.p.Stats(); st[0].Retries == 0 {
		t.Errorf("no retry counted: %+v", st[0])
	}
}

// A POST is never sent twice once bytes went out: a backend that takes the
// request and dies yields 502, and the other backend never sees it.
func TestNonIdempotentNotRetried(t *testing.T) {
	r := newRig(t, Config{})
	var hits atomic.Int64
	dying := rawBackend(t, func(c net.Conn) {
		http.ReadRequest(bufio.NewReader(c))
		hits.Add(1)
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	})
	var other atomic.Int64
	_, ok := httpBackend(t, "ok", func(w http.ResponseWriter, req *http.Request) { other.Add(1) })
	r.apply(app("/web", 0, []string{"web.test"}, "", dying, ok))
	c := client()
	post := func() int {
		req, _ := http.NewRequest("POST", "http://"+r.vhost+"/", strings.NewReader("x=1"))
		req.Host = "web.test"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	saw502 := false
	for range 4 {
		before := other.Load()
		s := post()
		if s == 502 {
			saw502 = true
			if other.Load() != before {
				t.Fatal("POST sent to a second backend after the first took it")
			}
		}
	}
	if !saw502 || hits.Load() == 0 {
		t.Fatalf("dying backend never answered 502 (hits %d)", hits.Load())
	}
}

func TestStreamingBothWays(t *testing.T) {
	const size = 100 << 20
	r := newRig(t, Config{})
	_, b := httpBackend(t, "b", func(w http.ResponseWriter, req *http.Request) {
		if req.Method == "POST" {
			n, err := io.Copy(io.Discard, req.Body)
			fmt.Fprintf(w, "%d %v", n, err)
			return
		}
		if req.URL.Query().Get("chunked") == "" {
			w.Header().Set("Content-Length", fmt.Sprint(size))
		}
		buf := make([]byte, 64<<10)
		for n := 0; n < size; n += len(buf) {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	})
	r.apply(app("/web", 0, []string{"web.test"}, "", b))

	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	c := client()
	for _, chunked := range []bool{false, true} {
		// Upload: a sized body, then one of unknown length (chunked).
		var body io.Reader = io.LimitReader(zeros{}, size)
		if chunked {
			body = struct{ io.Reader }{body} // hides the length
		}
		req, _ := http.NewRequest("POST", "http://"+r.vhost+"/up", body)
		req.Host = "web.test"
		if !chunked {
			req.ContentLength = size
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(got) != fmt.Sprintf("%d <nil>", size) {
			t.Fatalf("upload (chunked %v): %d %q", chunked, resp.StatusCode, got)
		}
		// Download.
		path := "/down"
		if chunked {
			path += "?chunked=1"
		}
		req, _ = http.NewRequest("GET", "http://"+r.vhost+path, nil)
		req.Host = "web.test"
		resp, err = c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != size {
			t.Fatalf("download (chunked %v): %d bytes, %v", chunked, n, err)
		}
		if chunked != (resp.ContentLength == -1) {
			t.Errorf("download (chunked %v): Content-Length %d", chunked, resp.ContentLength)
		}
	}
	close(stop)
	<-done
	if p := peak.Load(); p > 48<<20 {
		t.Errorf("heap in use peaked at %d MiB while streaming 100 MiB bodies", p>>20)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestSticky(t *testing.T) {
	r := newRig(t, Config{})
	_, a := httpBackend(t, "a", nil)
	_, b := httpBackend(t, "b", nil)
	ap := app("/web", 0, []string{"web.test"}, "", a, b)
	ap.Services[0].Sticky = true
	r.apply(ap)
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	_, first, resp := get(t, c, r.vhost, "web.test", "/")
	cookie := stickyCookie(t, resp)
	if cc := resp.Header.Values("Cache-Control"); !slices.Contains(cc, "private") {
		t.Errorf("the answer that sets the cookie says Cache-Control %q; want private, so a shared cache keeps it to this client", cc)
	}
	for range 10 {
		req, _ := http.NewRequest("GET", "http://"+r.vhost+"/", nil)
		req.Host = "web.test"
		req.AddCookie(cookie)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != first {
			t.Fatalf("sticky client moved from %s to %s", first, body)
		}
		if len(resp.Cookies()) != 0 {
			t.Fatalf("cookie set again though it pins the backend")
		}
	}
	// Without the cookie, round robin reaches both.
	seen := map[string]bool{}
	for range 4 {
		_, body, _ := get(t, c, r.vhost, "web.test", "/")
		seen[body] = true
	}
	if !seen["a"] || !seen["b"] {
		t.Fatalf("round robin without cookie reached %v", seen)
	}
}

func TestRedirectToHTTPS(t *testing.T) {
	r := newRig(t, Config{})
	_, b := httpBackend(t, "b", nil)
	ap := app("/web", 0, []string{"web.test"}, "", b)
	ap.Services[0].RedirectToHTTPS = true
	r.apply(ap)
	status, _, resp := get(t, client(), r.vhost, "web.test:80", "/a?b=c")
	if status != 301 || resp.Header.Get("Location") != "https://web.test/a?b=c" {
		t.Fatalf("%d Location %q", status, resp.Header.Get("Location"))
	}
}

// An HTTP/1.0 request to a service port may come without Host: its
// redirect names the address the client reached, not "https:///a".
func TestRedirectToHTTPSWithoutHost(t *testing.T) {
	r := newRig(t, Config{})
	_, b := httpBackend(t, "b", nil)
	port := testnet.FreePort(t)
	ap := app("/web", port, nil, "", b)
	ap.Services[0].RedirectToHTTPS = true
	r.apply(ap)
	got := rawExchange(t, r.waitPort(port), "GET /a?b=c HTTP/1.0\r\n\r\n")
	if !strings.Contains(statusOf(got), "301") || !strings.Contains(got, "\r\nLocation: https://127.0.0.1/a?b=c\r\n") {
		t.Fatalf("got %q; want a 301 to https://127.0.0.1/a?b=c", got)
	}
}

func TestLimitsAndRefusals(t *testing.T) {
	r := newRig(t, Config{ReadHeaderTimeout: 300 * time.Millisecond, MaxHeaderBytes: 4096, MaxRequestBodySize: 1000})
	_, b := httpBackend(t, "b", nil)
	port := testnet.FreePort(t)
	r.apply(app("/web", port, []string{"web.test"}, "", b))
	portAddr := r.waitPort(port)

	t.Run("oversized header", func(t *testing.T) {
		got := rawExchange(t, r.vhost, "GET / HTTP/1.1\r\nHost: web.test\r\nX-Big: "+strings.Repeat("a", 8000)+"\r\n\r\n")
		if !strings.Contains(statusOf(got), "431") {
			t.Fatalf("got %q", statusOf(got))
		}
	})
	t.Run("body too large", func(t *testing.T) {
		got := rawExchange(t, r.vhost, "POST / HTTP/1.1\r\nHost: web.test\r\nContent-Length: 5000\r\n\r\n"+strings.Repeat("x", 5000))
		if !strings.Contains(statusOf(got), "413") {
			t.Fatalf("got %q", statusOf(got))
		}
		// With Expect: 100-continue the body is refused before it is sent.
		got = rawExchange(t, r.vhost, "POST / HTTP/1.1\r\nHost: web.test\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
		if !strings.Contains(statusOf(got), "413") {
			t.Fatalf("with Expect: got %q", statusOf(got))
		}
		// A chunked body that outgrows the limit is cut off.
		got = rawExchange(t, r.vhost, "POST / HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\n\r\n"+
			strings.Repeat("400\r\n"+strings.Repeat("y", 1024)+"\r\n", 80)+"0\r\n\r\n")
		if !strings.Contains(statusOf(got), "413") {
			t.Fatalf("chunked: got %q", statusOf(got))
		}
	})
	t.Run("slowloris", func(t *testing.T) {
		c, err := net.Dial("tcp", r.vhost)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: web.test\r\nX-Slow: ")
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(waitFor))
		// Keep trickling, a byte every 50 ms, until the proxy drops the
		// connection: each byte must not extend the 300 ms deadline, so
		// the trickle would outlast the check below only if it did.
		go func() {
			for time.Since(start) < waitFor {
				if _, err := io.WriteString(c, "a"); err != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		got, _ := io.ReadAll(c)
		if el := time.Since(start); el > 3*time.Second {
			t.Fatalf("slow client held the connection %v with a header timeout of 300ms", el)
		}
		if len(got) > 0 && !strings.Contains(statusOf(string(got)), "408") {
			t.Fatalf("got %q", statusOf(string(got)))
		}
	})
	t.Run("absolute form to a foreign host", func(t *testing.T) {
		for _, addr := range []string{r.vhost, portAddr} {
			got := rawExchange(t, addr, "GET http://evil.example/ HTTP/1.1\r\nHost: evil.example\r\n\r\n")
			if !strings.Contains(statusOf(got), "403") {
				t.Fatalf("%s: got %q", addr, statusOf(got))
			}
		}
	})
	t.Run("absolute form to a served host", func(t *testing.T) {
		got := rawExchange(t, r.vhost, "GET http://web.test/x HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n")
		if !strings.Contains(statusOf(got), "200") || !strings.HasSuffix(got, "b") {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("CONNECT", func(t *testing.T) {
		for _, addr := range []string{r.vhost, portAddr} {
			got := rawExchange(t, addr, "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n")
			if !strings.Contains(statusOf(got), "405") {
				t.Fatalf("%s: got %q", addr, statusOf(got))
			}
		}
	})
}

func TestServicePortListeners(t *testing.T) {
	r := newRig(t, Config{})
	_, b := httpBackend(t, "b", nil)
	port := testnet.FreePort(t)
	r.apply(app("/web", port, nil, "", b))
	addr := r.waitPort(port)
	c := client()
	if s, body, _ := get(t, c, addr, "anything", "/"); s != 200 || body != "b" {
		t.Fatalf("%d %q", s, body)
	}
	ps := r.p.Ports()
	if len(ps) != 2 || ps[0].Port != port || !ps[0].Listening || ps[0].Total == 0 {
		t.Fatalf("ports: %+v", ps)
	}
	// A TCP-mode service on a port is not ours.
	tcpPort := testnet.FreePort(t)
	tcpApp := app("/tcp", tcpPort, nil, "", b)
	tcpApp.Services[0].Mode = discovery.ModeTCP
	r.apply(tcpApp)
	r.waitApplied()
	for _, p := range r.p.Ports() {
		if p.Port == tcpPort {
			t.Fatalf("TCP-mode port carried: %+v", p)
		}
	}
	// Unclaimed: the listener closes.
	r.table.Apply(discovery.Update{Source: "test", Removed: []string{"/web"}})
	deadline := time.Now().Add(waitFor)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatal("listener still open after the app left")
		}
		r.table.Snapshot() // poll
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLeastConnPrefersIdleBackend(t *testing.T) {
	r := newRig(t, Config{})
	release := make(chan struct{})
	var once sync.Once
	defer once.Do(func() { close(release) })
	entered := make(chan struct{}, 1)
	_, slow := httpBackend(t, "slow", func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/hold" {
			entered <- struct{}{}
			<-release
		}
		io.WriteString(w, "slow")
	})
	_, fast := httpBackend(t, "fast", nil)
	ap := app("/web", 0, []string{"web.test"}, "", slow, fast)
	ap.Services[0].Balance = discovery.BalanceLeastConn
	r.apply(ap)
	c := client()
	// Park requests until one sits on "slow" (round-robin ties may send the
	// first to "fast", which answers at once).
	held := make(chan struct{})
	go func() {
		defer close(held)
		for {
			_, body, _, err := tryGet(c, r.vhost, "web.test", "/hold")
			if err != nil {
				t.Error(err)
				return
			}
			if body == "slow" {
				return
			}
		}
	}()
	<-entered
	// Now "slow" has one outstanding request; every new one goes to fast.
	for range 5 {
		if _, body, _ := get(t, c, r.vhost, "web.test", "/"); body != "fast" {
			t.Fatalf("leastconn sent a request to the busy backend")
		}
	}
	once.Do(func() { close(release) })
	<-held
}

func TestIdleTimeoutBelowBackendKeepAlive(t *testing.T) {
	// A backend that closes idle connections after 300ms; pacer's pool idle
	// timeout is 150ms, so after a pause no request meets a stale connection
	// and none is retried.
	r := newRig(t, Config{PoolIdleTimeout: 150 * time.Millisecond})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "b") }))
	srv.Config.IdleTimeout = 300 * time.Millisecond
	srv.Start()
	defer srv.Close()
	b := netip.MustParseAddrPort(srv.Listener.Addr().String())
	r.apply(app("/web", 0, []string{"web.test"}, "", b))
	c := client()
	for range 3 {
		if s, _, _ := get(t, c, r.vhost, "web.test", "/"); s != 200 {
			t.Fatalf("status %d", s)
		}
		deadline := time.Now().Add(waitFor)
		r.p.mu.Lock()
		be := r.p.backends[b]
		r.p.mu.Unlock()
		for be.open.Load() > 0 { // the reaper closes the idle connection
			if time.Now().After(deadline) {
				t.Fatal("idle pooled connection never closed")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if st := r.p.Stats(); st[0].Retries != 0 {
		t.Fatalf("retries %d", st[0].Retries)
	}
}
