package httpproxy

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

// wsBackend starts a WebSocket backend that answers the handshake and then
// hands the connection to serve, with br holding whatever the client sent
// after its request header.
func wsBackend(tb testing.TB, serve func(c *net.TCPConn, br *bufio.Reader)) netip.AddrPort {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil || !strings.EqualFold(req.Header.Get("Upgrade"), "websocket") {
					io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
					return
				}
				h := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
				fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
					base64.StdEncoding.EncodeToString(h[:]))
				serve(c.(*net.TCPConn), br)
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// echoWS echoes every byte until the client's FIN.
func echoWS(c *net.TCPConn, br *bufio.Reader) { io.Copy(c, br) }

// wsDial opens a WebSocket to ws.test through addr, sending early right
// behind the request header (before the 101, as a client must not but
// may), and checks the handshake.
func wsDial(tb testing.TB, addr string, early []byte) (*net.TCPConn, *bufio.Reader) {
	tb.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	c := nc.(*net.TCPConn)
	tb.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(waitFor))
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	hs := fmt.Sprintf("GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", key)
	if _, err := c.Write(append([]byte(hs), early...)); err != nil {
		tb.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		tb.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") == "" {
		tb.Fatalf("handshake: %d %v", resp.StatusCode, resp.Header)
	}
	return c, br
}

// maskedFrame is a masked WebSocket text frame carrying text (under 126 bytes).
func maskedFrame(text string) []byte {
	mask := []byte{1, 2, 3, 4}
	frame := append([]byte{0x81, 0x80 | byte(len(text))}, mask...)
	for i := range len(text) {
		frame = append(frame, text[i]^mask[i%4])
	}
	return frame
}

func TestWebSocketEcho(t *testing.T) {
	r := newRig(t, Config{})
	r.apply(app("/ws", 0, []string{"ws.test"}, "", wsBackend(t, echoWS)))
	c, br := wsDial(t, r.vhost, nil)
	frame := maskedFrame("hello")
	for range 3 {
		c.Write(frame)
		got := make([]byte, len(frame))
		if _, err := io.ReadFull(br, got); err != nil || !bytes.Equal(got, frame) {
			t.Fatalf("echo: %x, %v", got, err)
		}
	}
}

// Bytes that came in the same packet as the upgrade request sit in
// fasthttp's read buffer when the tunnel starts; they must reach the
// backend first, in order.
func TestTunnelForwardsBytesSentWithTheUpgrade(t *testing.T) {
	r := newRig(t, Config{})
	r.apply(app("/ws", 0, []string{"ws.test"}, "", wsBackend(t, echoWS)))
	early, later := maskedFrame("early"), maskedFrame("later")
	c, br := wsDial(t, r.vhost, early)
	c.Write(later)
	want := append(append([]byte{}, early...), later...)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(br, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("echo: %x, %v; want %x", got, err, want)
	}
}

// A backend that streams more than the copy buffer holds (the tunnel then
// splices) and closes: the client gets every byte, in order, then EOF.
func TestTunnelBulkFromBackendThenEOF(t *testing.T) {
	r := newRig(t, Config{})
	bulk := make([]byte, 8<<20+17)
	for i := range bulk {
		bulk[i] = byte(i * 31)
	}
	r.apply(app("/ws", 0, []string{"ws.test"}, "", wsBackend(t, func(c *net.TCPConn, _ *bufio.Reader) {
		c.Write(bulk)
	})))
	_, br := wsDial(t, r.vhost, nil)
	got, err := io.ReadAll(br)
	if err != nil || !bytes.Equal(got, bulk) {
		t.Fatalf("client read %d bytes, %v; want the %d sent, in order, then EOF", len(got), err, len(bulk))
	}
}

// A client that shuts down writing still gets the backend's answer: the FIN
// crosses the tunnel on its own, the other direction keeps running.
func TestTunnelPassesHalfClose(t *testing.T) {
	r := newRig(t, Config{})
	r.apply(app("/ws", 0, []string{"ws.test"}, "", wsBackend(t, func(c *net.TCPConn, br *bufio.Reader) {
		n, _ := io.Copy(io.Discard, br) // to the client's FIN
		io.WriteString(c, "got "+strconv.FormatInt(n, 10))
	})))
	c, br := wsDial(t, r.vhost, nil)
	c.Write([]byte("12345"))
	c.CloseWrite()
	got, err := io.ReadAll(br)
	if err != nil || string(got) != "got 5" {
		t.Fatalf("client read %q, %v; want %q then EOF", got, err, "got 5")
	}
}

// BenchmarkTunnelEcho is one 64-byte message each way through an upgraded
// connection (a WebSocket's chat traffic):
//
//	go test -run '^$' -bench TunnelEcho -benchmem ./proxy/httpproxy/
func BenchmarkTunnelEcho(b *testing.B) {
	r := newRigTB(b, nil, Config{})
	r.apply(app("/ws", 0, []string{"ws.test"}, "", wsBackend(b, echoWS)))
	c, br := wsDial(b, r.vhost, nil)
	c.SetDeadline(time.Time{})
	msg, buf := bytes.Repeat([]byte("m"), 64), make([]byte, 64)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(br, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// A tunnel that carries bytes stays open past its idle timeout; one idle
// both ways for that long is closed at both ends (a client that vanished
// without a FIN would otherwise hold it, and its backend connection, for
// good).
func TestTunnelIdleTimeout(t *testing.T) {
	r := newRig(t, Config{TunnelIdleTimeout: 300 * time.Millisecond})
	r.apply(app("/ws", 0, []string{"ws.test"}, "", wsBackend(t, echoWS)))
	c, br := wsDial(t, r.vhost, nil)
	msg, got := maskedFrame("tick"), make([]byte, len(maskedFrame("tick")))
	for i := range 10 { // 1 s of traffic, a message every 100 ms
		c.Write(msg)
		if _, err := io.ReadFull(br, got); err != nil {
			t.Fatalf("message %d through a busy tunnel: %v", i, err)
		}
		time.Sleep(100 * time.Millisecond) // the traffic's pace
	}
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := br.Read(got); n != 0 || err != io.EOF {
		t.Fatalf("idle tunnel read %d, %v; want it closed", n, err)
	}
	t.Logf("idle tunnel closed %v after the last message", time.Since(start).Round(time.Millisecond))
}
