package httpproxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// FuzzRequestPath sends arbitrary bytes as requests to the vhost listener
// in front of a backend that records every request it reads, byte for
// byte, and answers each with its number. Each input goes to two proxies:
// one whose backend closes every connection, so that its pool stays cold
// and fasthttp's path serves everything, and one whose backend keeps them,
// where the input follows a warm-up on the same connection, so that the
// poller (exchange.go) serves what it can. pacer must:
//
//   - never panic, and answer in time, with well-formed responses or a close;
//   - answer an input that net/http reads as one whole request for web.test
//     with the backend's 200 or one of its documented 4xx;
//   - send the backend no hop-by-hop header, and always X-Forwarded-For;
//   - send the backend the same requests, byte for byte, on either path.
//
// Run it with:
//
//	go test -run '^$' -fuzz FuzzRequestPath -fuzztime 30s ./proxy/httpproxy/
func FuzzRequestPath(f *testing.F) {
	for _, seed := range []string{
		plainGET,
		"GET /api/x?y HTTP/1.1\r\nHost: WEB.test:80\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: web.test\r\nContent-Length: 3\r\n\r\nabc",
		"POST / HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"GET http://web.test/x HTTP/1.1\r\nHost: x\r\n\r\n",
		"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
		"GET / HTTP/1.0\r\nHost: a.wild.test\r\nX-Forwarded-For: 1.1.1.1\r\nkeep-alive: 1\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: web.test\r\n\r\nHEAD /b HTTP/1.1\r\nHost: web.test\r\n\r\nGET /c HTTP/1.1\r\nHost: web.test\r\n\r\n",
		"GET /lf HTTP/1.1\nHost: web.test\nX-A: 1\n\n",
		"POST /e HTTP/1.1\r\nHost: web.test\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
		"GET /c HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\nTE: trailers\r\nProxy-Connection: x\r\n\r\n",
		"GET /u HTTP/1.1\r\nHost: web.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	// The backend answers at once: the timeouts only bound inputs it
	// waits on, well inside sendRaw's deadline, with room for a loaded
	// machine.
	cfg := Config{ReadHeaderTimeout: 500 * time.Millisecond, ResponseHeaderTimeout: 2 * time.Second}
	cold, warm := newRecBackend(f, true), newRecBackend(f, false)
	rc, rw := newRigTB(f, nil, cfg), newRigTB(f, nil, cfg)
	rc.apply(app("/web", 0, []string{"web.test", "*.wild.test"}, "", cold.addr))
	rw.apply(app("/web", 0, []string{"web.test", "*.wild.test"}, "", warm.addr))

	f.Fuzz(func(t *testing.T, in []byte) {
		clean := cleanRequestFor(in, "web.test")
		inPoller := rw.p.Totals().InPoller
		coldOut := sendRaw(t, rc.vhost, "", in)
		warmOut := sendRaw(t, rw.vhost, plainGET, in)
		if n := rc.p.Totals().InPoller; n != 0 {
			t.Fatalf("%d requests to the cold pool went the poller's way: the differential compares nothing", n)
		}
		if string(in) == plainGET && rw.p.Totals().InPoller == inPoller {
			t.Fatal("the plain GET after a warm-up did not go the poller's way: the differential compares fasthttp with itself")
		}
		coldReqs := checkRequestPath(t, "cold", in, coldOut, clean, cold, rc.vhost)
		warmReqs := checkRequestPath(t, "warm", in, warmOut, clean, warm, rw.vhost)
		if len(coldReqs) != len(warmReqs) {
			t.Fatalf("the input %q reached the backend as %d requests on fasthttp's path (%q), %d after a warm-up (%q)", in, len(coldReqs), coldReqs, len(warmReqs), warmReqs)
		}
		for i := range coldReqs {
			if coldReqs[i] != warmReqs[i] {
				t.Fatalf("the input %q reached the backend as %q on fasthttp's path, as %q after a warm-up", in, coldReqs[i], warmReqs[i])
			}
		}
		if c, w := statuses(coldOut), statuses(warmOut); c != w {
			t.Fatalf("the input %q was answered %s on fasthttp's path, %s after a warm-up:\n%q\n%q", in, c, w, coldOut, warmOut)
		}
	})
}

const plainGET = "GET / HTTP/1.1\r\nHost: web.test\r\n\r\n"

// recBackend is a backend that keeps every request it reads, as the bytes
// it read, under a number it answers with in X-Seen: the client's answers
// name exactly the requests its input became.
type recBackend struct {
	addr  netip.AddrPort
	close bool // every answer closes its connection
	n     atomic.Int64
	reqs  sync.Map // X-Seen → the request's bytes
}

func newRecBackend(tb testing.TB, close bool) *recBackend {
	b := &recBackend{close: close}
	b.addr = rawBackend(tb, func(c net.Conn) { go b.serve(c) })
	return b
}

func (b *recBackend) serve(c net.Conn) {
	defer c.Close()
	rec := &recReader{r: c}
	br := bufio.NewReader(rec)
	for start := 0; ; {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return
		}
		end := len(rec.b) - br.Buffered()
		id := b.n.Add(1)
		b.reqs.Store(id, string(rec.b[start:end]))
		start = end
		hdr := ""
		if b.close {
			hdr = "Connection: close\r\n"
		}
		body := "ok"
		if req.Method == "HEAD" {
			body = ""
		}
		if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nX-Seen: %d\r\nContent-Length: 2\r\n%s\r\n%s", id, hdr, body); err != nil || b.close {
			return
		}
	}
}

// recReader keeps everything read through it.
type recReader struct {
	r io.Reader
	b []byte
}

func (r *recReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.b = append(r.b, p[:n]...)
	return n, err
}

// sendRaw sends warmUp, and reads its answer, then in, on one connection
// to addr, half-closes it, and returns what came back for in. A read error
// other than the close fails the test: pacer never answered, or hung.
func sendRaw(t *testing.T, addr, warmUp string, in []byte) []byte {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	if warmUp != "" {
		io.WriteString(c, warmUp)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("the warm-up's answer: %v", err)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil || resp.StatusCode != 200 {
			t.Fatalf("the warm-up's answer: %s, %v", resp.Status, err)
		}
	}
	c.Write(in)
	c.(*net.TCPConn).CloseWrite()
	out, err := io.ReadAll(br)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("reading the answer to %q: %v (got %q)", in, err, out)
	}
	return out
}

// cleanRequestFor reports whether net/http reads in as one whole request
// and nothing more, for host (any case, a port or not, a final dot or
// not).
func cleanRequestFor(in []byte, host string) bool {
	br := bufio.NewReader(bytes.NewReader(in))
	req, err := http.ReadRequest(br)
	if err != nil {
		return false
	}
	if _, err := io.Copy(io.Discard, req.Body); err != nil || br.Buffered() > 0 {
		return false
	}
	h := strings.ToLower(req.Host)
	if i := strings.LastIndexByte(h, ':'); i >= 0 && strings.Trim(h[i+1:], "0123456789") == "" {
		h = h[:i]
	}
	return strings.TrimSuffix(h, ".") == host
}

var seenRE = regexp.MustCompile("\r\nX-Seen: ([0-9]+)\r\n")

// checkRequestPath checks the answers out to the input in, from a proxy in
// front of be on vhost (path names the proxy), and returns the requests
// the backend answered, with the proxy's own port left out of them.
func checkRequestPath(t *testing.T, path string, in, out []byte, clean bool, be *recBackend, vhost string) []string {
	t.Helper()
	if len(out) > 0 {
		var resp fasthttp.Response
		if err := resp.Read(bufio.NewReader(bytes.NewReader(out))); err != nil {
			t.Fatalf("%s: malformed answer %q to %q: %v", path, out, in, err)
		}
	}
	if clean {
		switch code := finalStatus(out); code {
		case 200:
			if !seenRE.Match(out) {
				t.Fatalf("%s: 200 to %q without the backend's answer: %q", path, in, out)
			}
		case 400, 403, 405, 413, 431:
		default:
			t.Fatalf("%s: the request %q, whole and for a host pacer serves, was answered %d: %q", path, in, code, out)
		}
	}
	_, port, _ := net.SplitHostPort(vhost)
	var reqs []string
	for _, m := range seenRE.FindAllSubmatch(out, -1) {
		id, _ := strconv.ParseInt(string(m[1]), 10, 64)
		v, ok := be.reqs.LoadAndDelete(id)
		if !ok {
			t.Fatalf("%s: answer %s to %q was not the backend's, or passed on twice: %q", path, m[1], in, out)
		}
		raw := v.(string)
		hdr, _, _ := strings.Cut(strings.ToLower(raw), "\r\n\r\n")
		for _, hop := range []string{"\r\nkeep-alive:", "\r\nproxy-connection:", "\r\nte:", "\r\nconnection: close"} {
			if strings.Contains(hdr, hop) {
				t.Fatalf("%s: the backend saw hop-by-hop header %q in %q", path, hop, raw)
			}
		}
		if !strings.Contains(hdr, "\r\nx-forwarded-for:") {
			t.Fatalf("%s: the backend saw no X-Forwarded-For: %q", path, raw)
		}
		reqs = append(reqs, strings.Replace(raw, "\r\nX-Forwarded-Port: "+port+"\r\n", "\r\nX-Forwarded-Port: (the proxy's)\r\n", 1))
	}
	return reqs
}

// finalStatus is the status of the first answer in out that is not an
// interim 1xx, or 0.
func finalStatus(out []byte) int {
	br := bufio.NewReader(bytes.NewReader(out))
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return 0
		}
		if resp.StatusCode >= 200 || resp.StatusCode == 101 {
			return resp.StatusCode
		}
	}
}

// statuses lists the status lines in out.
func statuses(out []byte) string {
	var s []string
	for _, line := range strings.Split(string(out), "\r\n") {
		if strings.HasPrefix(line, "HTTP/1.") && len(line) >= 12 {
			s = append(s, line[9:12])
		}
	}
	return strings.Join(s, " ")
}

// FuzzHostAndChunks checks normalizeHost's output, and parseChunkSize
// against a reading of RFC 9112 7.1's chunk-size line built on
// strconv.ParseUint, and against net/http's chunked reader: a chunk size
// pacer reads otherwise than the backend meant is an answer split where
// the backend did not split it (smuggling of answers).
func FuzzHostAndChunks(f *testing.F) {
	f.Add([]byte("Shop.Example.COM:8080"), []byte("1a;x=y\r\n"))
	f.Add([]byte("[::1]:80"), []byte("0\r\n"))
	for _, line := range []string{"fff\n", "2 ;a=b\r\n", "3\t;c\r\n", "2 zz\r\n", "-1\r\n", "+1\r\n", "0x1\r\n", "1_0\r\n",
		"fffffffffffffff\r\n", "1000000000000000\r\n", "000000000000000001\r\n", "a\r\r\n", " 1\r\n", "1 \r\n", "1\r\n\r\n"} {
		f.Add([]byte("web.test"), []byte(line))
	}
	f.Fuzz(func(t *testing.T, host, line []byte) {
		var buf [maxHost]byte
		if h, ok := normalizeHost(buf[:0], host); ok {
			if len(h) == 0 || len(h) > maxHost || bytes.ContainsAny(h, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") {
				t.Fatalf("normalizeHost(%q) = %q", host, h)
			}
		}
		n, ok := parseChunkSize(line)
		if wn, wok := refChunkSize(line); ok != wok || n != wn {
			t.Fatalf("parseChunkSize(%q) = %d, %v; want %d, %v", line, n, ok, wn, wok)
		}
		// Where net/http reads the same line as a chunk of a body, it must
		// read the size pacer does.
		if !ok || n > 1<<12 {
			return
		}
		body := string(line) + strings.Repeat("x", int(n)) + "\r\n0\r\n\r\n"
		if got, err := io.ReadAll(httputil.NewChunkedReader(strings.NewReader(body))); err == nil && int64(len(got)) != n {
			t.Fatalf("parseChunkSize(%q) = %d, net/http's chunked reader reads %d bytes of %q", line, n, len(got), body)
		}
	})
}

// refChunkSize reads a chunk-size line as RFC 9112 7.1 writes it, with
// the line ends and the limit pacer's reader allows: 1 to 15 hex digits
// (at most 2^60-1, which no int64 overflows), optional whitespace (the
// BWS before an extension), then a ';' and an extension, which is not
// looked at, or the line's end, CRLF or a bare LF.
func refChunkSize(line []byte) (int64, bool) {
	digits := 0
	for digits < len(line) && strings.IndexByte("0123456789abcdefABCDEF", line[digits]) >= 0 {
		digits++
	}
	if digits == 0 || digits > 15 {
		return 0, false
	}
	rest := bytes.TrimLeft(line[digits:], " \t")
	if !bytes.HasPrefix(rest, []byte(";")) && string(rest) != "\r\n" && string(rest) != "\n" {
		return 0, false
	}
	n, err := strconv.ParseUint(string(line[:digits]), 16, 64)
	if err != nil {
		return 0, false
	}
	return int64(n), true
}

// FuzzUpgradeAnswer has a backend answer an Upgrade request with arbitrary
// bytes: pacer must never panic, pass a 101 on to the client byte for byte
// (the tunnel's first bytes), and turn anything else into one well-formed
// answer or a closed connection.
//
//	go test -run '^$' -fuzz FuzzUpgradeAnswer -fuzztime 30s ./proxy/httpproxy/
func FuzzUpgradeAnswer(f *testing.F) {
	for _, seed := range []string{
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nframe",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n\r\n",
		"HTTP/1.1 426 Upgrade Required\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nno\r\n0\r\n\r\n",
		"HTTP/1.1 204 No Content\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nuntil close",
		"HTTP/1.1 1x1 What\r\n\r\n",
		"garbage\n",
	} {
		f.Add([]byte(seed))
	}
	var answer atomic.Pointer[[]byte]
	be := rawBackend(f, func(c net.Conn) {
		go func() {
			defer c.Close()
			if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
				return
			}
			if a := answer.Load(); a != nil {
				c.Write(*a)
			}
		}()
	})
	r := newRigTB(f, nil, Config{ResponseHeaderTimeout: time.Second})
	r.apply(app("/ws", 0, []string{"ws.test"}, "", be))

	f.Fuzz(func(t *testing.T, ans []byte) {
		answer.Store(&ans)
		c, err := net.Dial("tcp", r.vhost)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		out, err := io.ReadAll(c)
		if err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("reading the answer: %v (got %q)", err, out)
		}
		if len(out) == 0 {
			return
		}
		if code, err := peekStatus(bufio.NewReader(bytes.NewReader(out))); err == nil && code == fasthttp.StatusSwitchingProtocols {
			// The tunnel: the backend's bytes from its 101 on (interim
			// answers before it dropped).
			if !bytes.HasSuffix(ans, out) {
				t.Fatalf("a 101 reached the client as %q, want the backend's bytes from its 101 on, of %q", out, ans)
			}
			return
		}
		var resp fasthttp.Response
		if err := resp.Read(bufio.NewReader(bytes.NewReader(out))); err != nil {
			// A refusal's body streams (refusalBody): one the backend cut
			// short reaches the client cut short, and the close ends it.
			// Its header must still be whole.
			var h fasthttp.ResponseHeader
			if herr := h.Read(bufio.NewReader(bytes.NewReader(out))); herr != nil || !cutShort(err) {
				t.Fatalf("malformed answer %q to the backend's %q: %v", out, ans, err)
			}
		}
	})
}

// cutShort reports whether err, from reading an answer whose header was
// whole, says that its body ended early: at the end of the bytes, not at
// a malformed chunk.
func cutShort(err error) bool {
	var broken fasthttp.ErrBrokenChunk
	if errors.As(err, &broken) { // it wraps, unexported, what went wrong
		return broken.Error() == io.ErrUnexpectedEOF.Error() || broken.Error() == io.EOF.Error()
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// FuzzBackendAnswer has a backend answer a GET with arbitrary bytes, and
// close, and checks what pacer relays against net/http's ReadResponse, a
// reference decoder, reading the same bytes: wherever it reads a final
// answer and its whole body, the client must get that status and that
// body. Whatever the bytes, the client gets well-formed answers or a
// close, in time. Each answer is asked for twice: first on a fresh client
// connection (fasthttp's path), then after a warm-up on the same client
// connection and pooled backend connection (the poller's, and its
// fallback to fasthttp's when it cannot finish an answer), so that
// readAnswerHeader, bconn.Read, readChunk and readTrailers read it on
// either.
//
//	go test -run '^$' -fuzz FuzzBackendAnswer -fuzztime 30s ./proxy/httpproxy/
func FuzzBackendAnswer(f *testing.F) {
	for _, seed := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\nContent-Length: 2\nX-A: lf\n\nok",
		"HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 5\n\r\nmixed",
		"HTTP/1.0 200 OK\nX-A: 1\n\nuntil the close",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2 ;a=b\r\nok\r\n3\t;c\r\n!!!\r\n1;d=\"e f\"\r\n?\r\n0\r\nX-T: 1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2 zz\r\nok\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX\n\r\n",
		"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n2\nok\n0\n\n",
		"HTTP/1.1 103 Early Hints\nLink: </a.css>\n\nHTTP/1.1 200 OK\nContent-Length: 5\n\nhints",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 304 Not Modified\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
		"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\nbody until close",
		"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\ncut short",
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\ncut short",
	} {
		f.Add([]byte(seed))
	}
	var answer atomic.Pointer[[]byte]
	be := rawBackend(f, func(c net.Conn) {
		go func() {
			defer c.Close()
			br := bufio.NewReader(c)
			for {
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				if req.URL.Path == "/warm" {
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nwarm")
					continue
				}
				c.Write(*answer.Load())
				return
			}
		}()
	})
	r := newRigTB(f, nil, Config{ReadHeaderTimeout: 500 * time.Millisecond, ResponseHeaderTimeout: 2 * time.Second})
	r.apply(app("/web", 0, []string{"web.test"}, "", be))

	f.Fuzz(func(t *testing.T, ans []byte) {
		answer.Store(&ans)
		wantCode, wantBody, ok := refAnswer(ans)
		plain, chunked := plainAnswer(ans)
		for _, warm := range []bool{false, true} {
			code, body, err := askThrough(t, r.vhost, warm)
			if !ok {
				continue
			}
			// pacer may refuse what net/http reads (RFC 9110 8.6 lets a
			// recipient refuse a doubled Content-Length, RFC 9112 6.3 one
			// with Transfer-Encoding too), with its 502, or by cutting a
			// chunked body short; never an answer of the plain shape
			// backends write (plainAnswer), bare LF lines included.
			refused := code == http.StatusBadGateway && strings.HasPrefix(body, "pacer: 502 ") ||
				code == wantCode && err != nil && strings.HasPrefix(wantBody, body)
			if refused && !(plain && code == http.StatusBadGateway) && !(plain && !chunked) {
				continue
			}
			switch {
			case code == 0:
				t.Fatalf("warm=%v: no answer to the backend's %q, which net/http reads as %d %q: %v", warm, ans, wantCode, wantBody, err)
			case code != wantCode:
				t.Fatalf("warm=%v: the backend's %q reached the client as %d %q (%v), net/http reads %d %q", warm, ans, code, body, err, wantCode, wantBody)
			case err != nil || body != wantBody:
				t.Fatalf("warm=%v: the backend's %q reached the client with the body %q (%v), net/http reads %q", warm, ans, body, err, wantBody)
			}
		}
	})
}

var (
	statusLineRE = regexp.MustCompile(`^HTTP/1\.[01] [1-5][0-9][0-9] [ -~]*$`)
	fieldLineRE  = regexp.MustCompile("^([!#$%&'*+.^_`|~0-9A-Za-z-]+): ?([!-~]+( [!-~]+)*)? ?$")
)

// plainAnswer reports whether ans starts with answer headers of the shape
// backends write, which pacer must read: status lines and field lines of
// printable ASCII, ending in CRLF or a bare LF; on the final answer one
// Content-Length of digits, or one Transfer-Encoding: chunked (chunked
// says which), or neither. Its body is not looked at.
func plainAnswer(ans []byte) (plain, chunked bool) {
	lines := strings.Split(string(ans), "\n")
	for i := 0; i < len(lines); {
		status := strings.TrimSuffix(lines[i], "\r")
		if !statusLineRE.MatchString(status) {
			return false, false
		}
		framing := 0
		chunked = false
		for i++; ; i++ {
			if i >= len(lines)-1 {
				return false, false // the header does not end
			}
			line := strings.TrimSuffix(lines[i], "\r")
			if line == "" {
				i++
				break
			}
			m := fieldLineRE.FindStringSubmatch(line)
			if m == nil {
				return false, false
			}
			switch strings.ToLower(m[1]) {
			case "content-length":
				framing++
				if m[2] == "" || strings.Trim(m[2], "0123456789") != "" {
					return false, false
				}
			case "transfer-encoding":
				framing++
				chunked = true
				if !strings.EqualFold(m[2], "chunked") {
					return false, false
				}
			}
		}
		if framing > 1 {
			return false, false
		}
		if code := status[9:12]; code[0] != '1' || code == "101" {
			return true, chunked
		}
	}
	return false, false
}

// refAnswer is what net/http reads of ans as the answer to a GET: the
// final answer's status and whole body; ok is false if it does not read
// one, or reads a 101 (a GET that asked for no upgrade gets none).
func refAnswer(ans []byte) (code int, body string, ok bool) {
	resp, err := readFinal(bufio.NewReader(bytes.NewReader(ans)))
	if err != nil || resp.StatusCode == http.StatusSwitchingProtocols {
		return 0, "", false
	}
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err == nil
}

// readFinal reads answers from br up to the first that is not an interim
// 1xx (but 101, which is final).
func readFinal(br *bufio.Reader) (*http.Response, error) {
	req := &http.Request{Method: "GET"}
	for {
		resp, err := http.ReadResponse(br, req)
		if err != nil || resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, err
		}
	}
}

// askThrough sends a GET for web.test to addr, after a warm-up on the same
// connection if warm, and returns the final answer's status (0 if none
// came) and body, with the error that ended either. A timeout fails the
// test: pacer must answer or close.
func askThrough(t *testing.T, addr string, warm bool) (int, string, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	if warm {
		io.WriteString(c, "GET /warm HTTP/1.1\r\nHost: web.test\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("the warm-up's answer: %v", err)
		}
		if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "warm" {
			t.Fatalf("the warm-up's answer: %s %q, %v", resp.Status, b, err)
		}
	}
	io.WriteString(c, "GET /x HTTP/1.1\r\nHost: web.test\r\n\r\n")
	resp, err := readFinal(br)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("warm=%v: no answer in time: %v", warm, err)
		}
		return 0, "", err
	}
	b, err := io.ReadAll(resp.Body)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("warm=%v: %s, and its body did not end in time: %q, %v", warm, resp.Status, b, err)
	}
	return resp.StatusCode, string(b), err
}
