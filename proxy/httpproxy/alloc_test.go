//go:build !race

package httpproxy

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/valyala/fasthttp"
)

// Left out of -race builds, as fastconn's allocation tests are: make test
// runs every test named *Allocat* again without -race.

// The framing checks every request and answer goes through, on the
// poller's path and fasthttp's, allocate nothing, whatever they find: a
// close among Connection's options, a Transfer-Encoding the raw header
// alone shows, an HTTP/1.0 answer, a chunk-size line with extensions.
func TestFramingChecksAllocateNothing(t *testing.T) {
	reqBytes := []byte("POST /x HTTP/1.1\r\nHost: web.test\r\nConnection: keep-alive, cLoSe\r\n" +
		"Transfer-Encoding: identity\r\nContent-Length: 5\r\n\r\n")
	respBytes := []byte("HTTP/1.0 200 OK\r\nConnection: Close\r\nX-App: web\r\nContent-Length: 2\r\n\r\n")
	chunkLine := []byte("1a \t;x=y\r\n")
	var (
		req  fasthttp.RequestHeader
		resp fasthttp.ResponseHeader
		rd   bytes.Reader
	)
	req.DisableNormalizing()
	br := bufio.NewReader(&rd)
	read := func(b []byte, h interface{ Read(*bufio.Reader) error }) {
		rd.Reset(b)
		br.Reset(&rd)
		if err := h.Read(br); err != nil {
			t.Fatal(err)
		}
	}
	allocs := testing.AllocsPerRun(200, func() {
		read(reqBytes, &req)
		if !asksClose(&req) || !ambiguousLength(&req) {
			t.Fatalf("request %q: close %v, ambiguous length %v", reqBytes, asksClose(&req), ambiguousLength(&req))
		}
		read(respBytes, &resp)
		if !rewriteResponse(&resp) || string(resp.Protocol()) != "HTTP/1.1" {
			t.Fatalf("answer %q read as %q", respBytes, resp.Header())
		}
		if n, ok := parseChunkSize(chunkLine); !ok || n != 0x1a {
			t.Fatalf("chunk size %q: %d, %v", chunkLine, n, ok)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per request and answer; want 0", allocs)
	}
}
