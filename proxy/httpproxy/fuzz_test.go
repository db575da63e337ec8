package httpproxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// FuzzRequestPath sends arbitrary bytes as a request to the vhost listener in
// front of a real backend: pacer must answer with a well-formed response (or
// close), never panic, and never send the backend a request with a
// hop-by-hop header or without X-Forwarded-For.
//
//	go test -run '^$' -fuzz FuzzRequestPath -fuzztime 30s ./proxy/httpproxy/
func FuzzRequestPath(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n",
		"GET /api/x?y HTTP/1.1\r\nHost: WEB.test:80\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: web.test\r\nContent-Length: 3\r\n\r\nabc",
		"POST / HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"GET http://web.test/x HTTP/1.1\r\nHost: x\r\n\r\n",
		"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
		"GET / HTTP/1.0\r\nHost: a.wild.test\r\nX-Forwarded-For: 1.1.1.1\r\nkeep-alive: 1\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	seen := make(chan []byte, 1)
	backend := &fasthttp.Server{
		DisableHeaderNamesNormalizing: true,
		Handler: func(ctx *fasthttp.RequestCtx) {
			select {
			case seen <- append([]byte(nil), ctx.Request.Header.Header()...):
			default:
			}
			ctx.SetBodyString("ok")
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	go backend.Serve(ln)
	f.Cleanup(func() { backend.Shutdown() })
	r := newRigTB(f, nil, Config{ReadHeaderTimeout: 500 * time.Millisecond, ResponseHeaderTimeout: time.Second})
	be := netip.MustParseAddrPort(ln.Addr().String())
	r.apply(app("/web", 0, []string{"web.test", "*.wild.test"}, "", be))

	f.Fuzz(func(t *testing.T, req []byte) {
		c, err := net.Dial("tcp", r.vhost)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		c.Write(req)
		c.(*net.TCPConn).CloseWrite()
		out, _ := io.ReadAll(c)
		if len(out) > 0 {
			var resp fasthttp.Response
			if err := resp.Read(bufio.NewReader(bytes.NewReader(out))); err != nil {
				t.Fatalf("malformed answer %q: %v", out, err)
			}
		}
		select {
		case hdr := <-seen:
			s := strings.ToLower(string(hdr))
			for _, hop := range []string{"\r\nkeep-alive:", "\r\nproxy-connection:", "\r\nte:", "\r\nconnection: close"} {
				if strings.Contains(s, hop) {
					t.Fatalf("backend saw hop-by-hop header %q in %q", hop, hdr)
				}
			}
			if !strings.Contains(s, "\r\nx-forwarded-for:") {
				t.Fatalf("backend saw no X-Forwarded-For: %q", hdr)
			}
		default:
		}
	})
}

func FuzzHostAndChunks(f *testing.F) {
	f.Add([]byte("Shop.Example.COM:8080"), []byte("1a;x=y\r\n"))
	f.Add([]byte("[::1]:80"), []byte("0\r\n"))
	f.Fuzz(func(t *testing.T, host, line []byte) {
		var buf [maxHost]byte
		if h, ok := normalizeHost(buf[:0], host); ok {
			if len(h) == 0 || len(h) > maxHost || bytes.ContainsAny(h, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") {
				t.Fatalf("normalizeHost(%q) = %q", host, h)
			}
		}
		if n, ok := parseChunkSize(line); ok && n < 0 {
			t.Fatalf("parseChunkSize(%q) = %d", line, n)
		}
	})
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
			t.Fatalf("malformed answer %q to the backend's %q: %v", out, ans, err)
		}
	})
}
