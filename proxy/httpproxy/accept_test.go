package httpproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/internal/fastconn"
	"github.com/pacer-lb/pacer/internal/testnet"
	"github.com/pacer-lb/pacer/proxy"
)

// A process out of descriptors cannot accept; fasthttp gives a listener up
// for good on such an error. The proxy must pause instead and serve the
// waiting client once descriptors are free again.
func TestServesAgainAfterRunningOutOfDescriptors(t *testing.T) {
	_, be := httpBackend(t, "a", nil)
	core, logs := observer.New(zap.WarnLevel)
	table := discovery.NewTable()
	p, err := New(Config{PortMin: 1024, PortMax: 65535, Bind: "127.0.0.1"}, table, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	table.Apply(discovery.Update{Source: "test", Apps: []*discovery.App{app("/a", 0, []string{"a.test"}, "", be)}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.ServeVHost(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
		<-served
	})
	const req = "GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
	if got := rawExchange(t, ln.Addr().String(), req); !strings.HasSuffix(got, "\r\n\r\na") {
		t.Fatalf("before: %q", got)
	}

	// Lower the descriptor limit to a little above what is open, fill the
	// rest, and give one back for the client's socket: its connection then
	// completes in the listen backlog, where the proxy cannot take it.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	low := lim
	low.Cur = uint64(len(fds) + 32)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	var fillers []*os.File
	release := func() {
		for _, f := range fillers {
			f.Close()
		}
		fillers = nil
	}
	t.Cleanup(func() {
		release()
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	})
	for {
		f, err := os.Open(os.DevNull)
		if errors.Is(err, syscall.EMFILE) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		fillers = append(fillers, f)
	}
	fillers[len(fillers)-1].Close()
	fillers = fillers[:len(fillers)-1]
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	deadline := time.Now().Add(waitFor)
	for logs.FilterMessage("accept failed, pausing").Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the proxy never reported the failed accept; logs: %v", logs.All())
		}
		time.Sleep(time.Millisecond) // polling a condition, bounded above
	}
	release()
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)

	_ = c.SetDeadline(time.Now().Add(waitFor))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || !strings.HasPrefix(string(got), "HTTP/1.1 200") || !strings.HasSuffix(string(got), "\r\n\r\na") {
		t.Fatalf("after: %q, %v", got, err)
	}
	select {
	case err := <-served:
		t.Fatalf("ServeVHost returned: %v", err)
	default:
	}
}

// HTTP listeners hold a connection in the kernel until the client has
// sent its first bytes, so that accepting and reading it is one wakeup.
func TestHTTPListenersDeferAccept(t *testing.T) {
	r := newRig(t, Config{})
	_, be := httpBackend(t, "a", nil)
	r.apply(app("/a", 0, []string{"a.test"}, "", be))
	const req = "GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
	if got := rawExchange(t, r.vhost, req); !strings.HasSuffix(got, "\r\n\r\na") {
		t.Fatalf("through the vhost listener: %q", got)
	}
	r.p.lmu.Lock()
	ln := r.p.vhosts[0].ln.Listener.(*fastconn.Listener)
	r.p.lmu.Unlock()
	if v := testnet.Sockopt(t, ln, syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT); v <= 0 {
		t.Fatalf("TCP_DEFER_ACCEPT is %d on the vhost listener", v)
	}
}

// A connection accepted by an HTTP listener delays its ACKs, so that the
// ACK of the request rides on the answer instead of going out alone: the
// listener is plain TCP (Listen), which its sockets' options reach, and
// turns TCP_QUICKACK off for them to inherit (proxy.TuneListener).
func TestHTTPListenersDelayACKs(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tl := ln.(*net.TCPListener)
	if err := proxy.TuneListener(tl, true); err != nil {
		t.Fatal(err)
	}
	if proto := testnet.Sockopt(t, tl, syscall.SOL_SOCKET, syscall.SO_PROTOCOL); proto != syscall.IPPROTO_TCP {
		t.Fatalf("listener protocol %d, want plain TCP (%d)", proto, syscall.IPPROTO_TCP)
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil { // deferred: accepted once bytes come
		t.Fatal(err)
	}
	sc, err := tl.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	// getsockopt(TCP_QUICKACK) reads 1 while the socket acknowledges at
	// once, 0 when its ACKs wait for data to ride on.
	if v := testnet.Sockopt(t, sc, syscall.IPPROTO_TCP, syscall.TCP_QUICKACK); v != 0 {
		t.Fatalf("accepted connection: TCP_QUICKACK %d, want 0 (delayed ACKs)", v)
	}
}

// An answer to a client that asked for the connection to be closed leaves
// with the FIN, in one segment, which also acknowledges the request.
func TestConnectionCloseAnswerLeavesWithTheFIN(t *testing.T) {
	r := newRig(t, Config{})
	_, be := httpBackend(t, "a", nil)
	r.apply(app("/a", 0, []string{"a.test"}, "", be))
	const req = "GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
	// The first exchange makes sure the listener is served (and so has its
	// options) and the backend connection pooled.
	if got := rawExchange(t, r.vhost, req); !strings.HasSuffix(got, "\r\n\r\na") {
		t.Fatalf("first exchange: %q", got)
	}
	// A request's ACK waits for the answer only up to the delayed-ACK
	// timer (40 ms and up): a machine stalled that long sends it alone, so
	// one exchange of three must come in one segment. An answer written
	// apart from its FIN never does.
	var segments []uint32
	for range 3 {
		n := closeExchangeSegments(t, r.vhost, req)
		if n == 1 {
			return
		}
		segments = append(segments, n)
	}
	t.Fatalf("the answer and the FIN came in %v segments in three exchanges, want 1", segments)
}

// closeExchangeSegments sends req on a new connection to addr, reads the
// answer to the end, and returns how many segments brought it.
func closeExchangeSegments(t *testing.T, addr, req string) uint32 {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(waitFor))
	tc := c.(*net.TCPConn)
	before := testnet.SegmentsIn(t, tc)
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil || !strings.HasSuffix(string(b), "\r\n\r\na") {
		t.Fatalf("read %q, %v; want the answer, then EOF", b, err)
	}
	return testnet.SegmentsIn(t, tc) - before
}
