package httpproxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"
)

// closeOnHijack closes a client connection the moment its handler hands it
// to fasthttp for a hijack, as the end of its port's drain or of a stop
// may: fasthttp then cannot make the hijack and drops it.
func closeOnHijack(t *testing.T) {
	hook := func(c net.Conn) { c.Close() }
	testHookHijacked.Store(&hook)
	t.Cleanup(func() { testHookHijacked.Store(nil) })
}

// waitBackendClosed waits for closed, which a backend closes when its
// connection from the proxy ends, and then for the service's count of
// active requests to come back to 0.
func waitBackendClosed(t *testing.T, r *rig, closed <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-closed:
	case <-time.After(waitFor):
		t.Fatalf("%s: the backend connection stayed open after the client's was closed", what)
	}
	for deadline := time.Now().Add(waitFor); r.p.Stats()[0].Active != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: the service still counts %d active requests", what, r.p.Stats()[0].Active)
		}
	}
}

// An upgrade whose client connection closes between the backend's 101 and
// the tunnel's start releases the backend connection and the service's
// count: they are not held for the life of the process.
func TestUpgradeAbandonedByAClosedClientReleasesTheBackend(t *testing.T) {
	closed := make(chan struct{})
	be := wsBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
		io.Copy(io.Discard, br)
		close(closed)
	})
	r := newRig(t, Config{})
	r.apply(app("/ws", 0, []string{"ws.test"}, "", be))
	closeOnHijack(t)
	nc, br := dialRaw(t, r.vhost)
	io.WriteString(nc, "GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("the client got an answer on a connection closed before the tunnel started")
	}
	waitBackendClosed(t, r, closed, "upgrade")
}

// The same for an answer of unknown length to an HTTP/1.0 client, which
// the proxy sends from a hijacked connection until the backend's end.
func TestUntilCloseAbandonedByAClosedClientReleasesTheBackend(t *testing.T) {
	closed := make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		// A body of unknown length that has not ended.
		io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
		io.Copy(io.Discard, br)
		close(closed)
	}()
	r := newRig(t, Config{})
	r.apply(app("/web", 0, []string{"web.test"}, "", netip.MustParseAddrPort(ln.Addr().String())))
	closeOnHijack(t)
	nc, br := dialRaw(t, r.vhost)
	io.WriteString(nc, "GET / HTTP/1.0\r\nHost: web.test\r\n\r\n")
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("the client got an answer on a connection closed before it was sent")
	}
	waitBackendClosed(t, r, closed, "answer of unknown length")
}
