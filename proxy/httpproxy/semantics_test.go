package httpproxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A request with a body and an Upgrade (curl --http2 asks every request of
// an http:// URL to upgrade to h2c, POSTs included) reaches the backend as
// an ordinary request, body and all, without the Upgrade: most backends
// decline h2c and answer in HTTP/1.1 after reading the body, which a
// tunnel never sent them (they waited for it until pacer's 504). On
// fasthttp's path (a fresh connection) and the poller's (after a warm-up),
// with a Content-Length and chunked.
func TestUpgradeWithABodyIsAnOrdinaryRequest(t *testing.T) {
	r := newRig(t, Config{ResponseHeaderTimeout: 2 * time.Second})
	_, be := httpBackend(t, "b", func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		fmt.Fprintf(w, "upgrade=%q connection=%q body=%q", req.Header.Get("Upgrade"), req.Header.Get("Connection"), body)
	})
	r.apply(app("/web", 0, []string{"web.test"}, "", be))
	const h2c = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
	for _, tc := range []struct{ name, req string }{
		{"length", "POST /p HTTP/1.1\r\nHost: web.test\r\n" + h2c + "Content-Length: 5\r\n\r\nhello"},
		{"chunked", "POST /p HTTP/1.1\r\nHost: web.test\r\n" + h2c + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
	} {
		for _, warm := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/warm=%v", tc.name, warm), func(t *testing.T) {
				nc, br := dialRaw(t, r.vhost)
				if warm {
					if raw := getRaw(t, nc, br, "web.test", "/"); !strings.HasPrefix(raw, "HTTP/1.1 200 ") {
						t.Fatalf("warm-up: %q", raw)
					}
				}
				io.WriteString(nc, tc.req)
				raw := readRaw(t, br, false)
				if want := `upgrade="" connection="" body="hello"`; !strings.HasPrefix(raw, "HTTP/1.1 200 ") || !strings.HasSuffix(raw, want) {
					t.Fatalf("answer %q, want 200 with %s", raw, want)
				}
				// Still an HTTP connection: the next request is answered.
				if raw := getRaw(t, nc, br, "web.test", "/"); !strings.HasPrefix(raw, "HTTP/1.1 200 ") {
					t.Fatalf("next request: %q", raw)
				}
			})
		}
	}
}

// With --trust-forwarded, the X-Forwarded-Port a TLS terminator sends goes
// on beside the X-Forwarded-Proto it sends; without one, none: pacer's own
// port beside "https" had backends (Rack, Spring) build https://host:80/.
// Pacer's port is still what a client that sent no X-Forwarded-Proto
// gets, and what every client gets without --trust-forwarded. On
// fasthttp's path and the poller's.
func TestTrustedProxysForwardedPortGoesWithItsProto(t *testing.T) {
	seenPort := make(chan []string, 1)
	_, be := httpBackend(t, "b", func(w http.ResponseWriter, req *http.Request) {
		seenPort <- req.Header.Values("X-Forwarded-Port")
	})
	for _, trust := range []bool{true, false} {
		r := newRig(t, Config{TrustForwardedProto: trust})
		r.apply(app("/web", 0, []string{"web.test"}, "", be))
		_, own, _ := strings.Cut(r.vhost, ":")
		for _, tc := range []struct {
			name, fields      string
			want, wantTrusted []string
		}{
			{"proto and port", "X-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\n", []string{own}, []string{"443"}},
			{"proto alone", "X-Forwarded-Proto: https\r\n", []string{own}, nil},
			{"port alone", "X-Forwarded-Port: 443\r\n", []string{own}, []string{own}},
			{"underscore", "X-Forwarded-Proto: https\r\nX_Forwarded_Port: 443\r\n", []string{own}, nil},
			{"not a port", "X-Forwarded-Proto: https\r\nX-Forwarded-Port: 443x\r\n", []string{own}, nil},
		} {
			want := tc.want
			if trust {
				want = tc.wantTrusted
			}
			nc, br := dialRaw(t, r.vhost)
			before := r.p.Totals().InPoller
			for i := range 3 { // the first on fasthttp's path, then the poller's
				fmt.Fprintf(nc, "GET / HTTP/1.1\r\nHost: web.test\r\n%s\r\n", tc.fields)
				if raw := readRaw(t, br, false); !strings.HasPrefix(raw, "HTTP/1.1 200 ") {
					t.Fatalf("trust=%v %s: answer %q", trust, tc.name, raw)
				}
				if got := <-seenPort; strings.Join(got, ",") != strings.Join(want, ",") {
					t.Errorf("trust=%v %s, request %d: the backend saw X-Forwarded-Port %q, want %q", trust, tc.name, i, got, want)
				}
			}
			if r.p.Totals().InPoller == before {
				t.Errorf("trust=%v %s: no request went the poller's way", trust, tc.name)
			}
		}
	}
}

// An HTTP/1.0 request's Upgrade is ignored (RFC 9110 7.8): its client
// knows no 101, and the backend must not be asked to switch. It reached
// the backend as HTTP/1.1 with its Upgrade and two Connection fields
// ("Upgrade" and "close"), and a backend that switched had an HTTP/1.0
// client tunnelled.
func TestHTTP10UpgradeIsIgnored(t *testing.T) {
	r := newRig(t, Config{})
	seen := make(chan []byte, 4)
	be := keepAliveBackend(t, seen, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
		if req.Header.Get("Upgrade") != "" {
			io.WriteString(bw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			bw.Flush()
			return false
		}
		io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain")
		return true
	})
	r.apply(app("/ws", 0, []string{"ws.test"}, "", be))
	const up = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	if raw := rawExchange(t, r.vhost, "GET / HTTP/1.0\r\nHost: ws.test\r\n"+up+"\r\n"); !strings.HasPrefix(raw, "HTTP/1.1 200 ") || !strings.HasSuffix(raw, "\r\n\r\nplain") {
		t.Fatalf("HTTP/1.0 upgrade: %q, want the backend's 200", raw)
	}
	got := strings.ToLower(string(<-seen))
	if strings.Contains(got, "\r\nupgrade:") || strings.Count(got, "\r\nconnection:") > 1 {
		t.Errorf("the backend got %q: an upgrade, or two Connection fields", got)
	}
	// HTTP/1.1's still switches.
	if raw := rawExchange(t, r.vhost, "GET / HTTP/1.1\r\nHost: ws.test\r\n"+up+"\r\n"); !strings.HasPrefix(raw, "HTTP/1.1 101 ") {
		t.Fatalf("HTTP/1.1 upgrade: %q, want 101", raw)
	}
}

// A backend that declines an upgrade answers the request as any other:
// a GET with Upgrade: h2c (Java's HttpClient and curl --http2 send one)
// for a download gets the download, however large, chunked, or ended by
// the close; a HEAD gets its header at once. Read whole into memory up to
// 64 KiB, a larger answer was a 502, and a HEAD waited for a body that
// never comes, until a 504. A body the backend cuts short reaches the
// client cut short.
func TestUpgradeRefusedWithALargeAnswer(t *testing.T) {
	r := newRig(t, Config{ResponseHeaderTimeout: 2 * time.Second})
	big := strings.Repeat("0123456789abcdef", 100<<10/16)
	be := keepAliveBackend(t, nil, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
		switch req.URL.Path {
		case "/sized":
			fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(big), big)
		case "/head":
			fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(big))
		case "/head-small":
			io.WriteString(bw, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
		case "/chunked":
			io.WriteString(bw, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
			for i := 0; i < len(big); i += 10000 {
				part := big[i:min(i+10000, len(big))]
				fmt.Fprintf(bw, "%x\r\n%s\r\n", len(part), part)
			}
			io.WriteString(bw, "0\r\n\r\n")
		case "/until-close":
			io.WriteString(bw, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"+big)
			bw.Flush()
			return false
		case "/short":
			fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(big), big[:len(big)/2])
			bw.Flush()
			return false
		}
		return true
	})
	r.apply(app("/web", 0, []string{"web.test"}, "", be))
	const h2c = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
	for _, path := range []string{"/sized", "/head", "/head-small", "/chunked", "/until-close", "/short"} {
		t.Run(path, func(t *testing.T) {
			nc, br := dialRaw(t, r.vhost)
			method := "GET"
			if strings.HasPrefix(path, "/head") {
				method = "HEAD"
			}
			fmt.Fprintf(nc, "%s %s HTTP/1.1\r\nHost: web.test\r\n%s\r\n", method, path, h2c)
			resp, err := http.ReadResponse(br, &http.Request{Method: method})
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 {
				t.Fatalf("%s: %s %q", path, resp.Status, body)
			}
			switch path {
			case "/head", "/head-small":
				if len(body) != 0 {
					t.Fatalf("HEAD: body of %d bytes", len(body))
				}
			case "/short":
				if err == nil {
					t.Fatalf("a body cut short reached the client whole (%d bytes of %d)", len(body), len(big))
				}
			default:
				if err != nil || string(body) != big {
					t.Fatalf("%s: %d bytes of %d, %v", path, len(body), len(big), err)
				}
			}
		})
	}
}

// A declined upgrade's answer streams as it comes: the client sees the
// first chunk of a slow stream before the backend sends the rest (read
// whole first, it waited for the end), also when it asked for the
// connection to close ("Connection: close, Upgrade").
func TestUpgradeRefusedAnswerStreamsToAClosingClient(t *testing.T) {
	r := newRig(t, Config{})
	release := make(chan struct{})
	be := keepAliveBackend(t, nil, func(req *http.Request, c net.Conn, bw *bufio.Writer) bool {
		io.WriteString(bw, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
		bw.Flush()
		<-release
		io.WriteString(bw, "4\r\nmore\r\n0\r\n\r\n")
		return true
	})
	r.apply(app("/web", 0, []string{"web.test"}, "", be))
	nc, br := dialRaw(t, r.vhost)
	io.WriteString(nc, "GET / HTTP/1.1\r\nHost: web.test\r\nConnection: close, Upgrade\r\nUpgrade: h2c\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		close(release)
		t.Fatalf("no answer while the backend streams: %v", err)
	}
	first := make([]byte, 5)
	_, err = io.ReadFull(resp.Body, first)
	close(release)
	if err != nil || string(first) != "first" {
		t.Fatalf("the first chunk did not come before the rest: %q, %v", first, err)
	}
	if rest, err := io.ReadAll(resp.Body); err != nil || string(rest) != "more" {
		t.Fatalf("the rest: %q, %v", rest, err)
	}
}
