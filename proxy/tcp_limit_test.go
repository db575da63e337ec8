package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pacer-lb/pacer/internal/testnet"
)

// observedLog returns a logger writing to t's log and to the returned
// recorder, at debug level.
func observedLog(t *testing.T) (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	tl := zaptest.NewLogger(t, zaptest.Level(zap.DebugLevel))
	return zap.New(zapcore.NewTee(tl.Core(), core)), logs
}

// At the cap the proxy stops accepting: the connection past it waits (in
// the backlog, or held by an accept loop) and is served as soon as one
// ends; the warning comes once for the whole episode, however often
// accepting pauses and resumes, and the end of the episode is logged once.
func TestTCPMaxConnsWaitsAndResumes(t *testing.T) {
	// Large enough that one connection ending leaves the open ones above
	// the low mark (90%), below which the episode would end.
	const maxConns = 20
	log, logs := observedLog(t)
	port := testnet.FreePort(t)
	h := newHarnessLog(t, TCPConfig{MaxConns: maxConns}, log, port)
	b := startBackend(t, echo)
	put(h.table, service(port, b.addr))
	h.waitOpened(port, 1)

	var served []net.Conn
	for range maxConns {
		served = append(served, dial(t, port))
	}
	for i, c := range served {
		if got := roundTrip(t, c, "served"+strconv.Itoa(i)); got != "served"+strconv.Itoa(i) {
			t.Fatalf("connection %d: got %q", i, got)
		}
	}
	// Three more: each connects (the kernel completes the handshake of a
	// connection in the backlog) and sends, and none may reach a backend
	// until a served connection ends.
	waiting := []net.Conn{dial(t, port), dial(t, port), dial(t, port)}
	for i, c := range waiting {
		if _, err := c.Write([]byte("waiting" + strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the cap to be reached", func() bool { return h.p.ConnLimit().Limited })
	if st := h.p.ConnLimit(); st.Open != maxConns || st.Max != maxConns || st.Reached != 1 {
		t.Fatalf("at the cap: %+v, want %d open of %d, reached once", st, maxConns, maxConns)
	}
	// The served ones still work, and the backend has only them.
	if got := roundTrip(t, served[0], "still"); got != "still" {
		t.Fatalf("served connection at the cap: got %q", got)
	}
	b.mu.Lock()
	n := len(b.conn)
	b.mu.Unlock()
	if n != maxConns {
		t.Fatalf("backend has %d connections at the cap, want %d", n, maxConns)
	}

	// Each connection that ends lets one waiting one in, in no promised
	// order (the backlog's, or an accept loop's held connection first):
	// the episode goes on, with accepting paused again after each.
	echoed := make(chan net.Conn, len(waiting))
	for i, c := range waiting {
		go func() {
			buf := make([]byte, len("waitingN"))
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "waiting"+strconv.Itoa(i) {
				t.Errorf("waiting connection %d: %q, %v", i, buf, err)
			}
			echoed <- c
		}()
	}
	for range waiting {
		served[0].Close()
		served = append(served[1:], <-echoed)
		if st := h.p.ConnLimit(); st.Open > maxConns {
			t.Fatalf("%d open, above the cap of %d", st.Open, maxConns)
		}
	}
	if got := logs.FilterMessageSnippet("connection cap reached").Len(); got != 1 {
		t.Fatalf("%d cap warnings in one episode, want 1", got)
	}
	for _, c := range served {
		c.Close()
	}
	eventually(t, "the episode to end", func() bool { return !h.p.ConnLimit().Limited })
	eventually(t, "the end of the episode logged", func() bool {
		return logs.FilterMessageSnippet("below the cap again").Len() == 1
	})
	if st := h.p.ConnLimit(); st.Reached != 1 {
		t.Fatalf("reached %d times, want 1", st.Reached)
	}
}

// The cap is counted across every service port: a flood on one holds
// another's new connections too, and they are served once it ends.
func TestTCPMaxConnsIsGlobal(t *testing.T) {
	ports := testnet.FreePorts(t, 2)
	h := newHarness(t, TCPConfig{MaxConns: 1}, ports...)
	b := startBackend(t, echo)
	put(h.table, service(ports[0], b.addr), service(ports[1], b.addr))
	h.waitOpened(ports[0], 1)
	h.waitOpened(ports[1], 1)

	flood := dial(t, ports[0])
	if got := roundTrip(t, flood, "x"); got != "x" {
		t.Fatalf("got %q", got)
	}
	other := dial(t, ports[1])
	if _, err := other.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the cap to be reached", func() bool { return h.p.ConnLimit().Limited })
	flood.Close()
	buf := make([]byte, 1)
	if _, err := other.Read(buf); err != nil || string(buf) != "y" {
		t.Fatalf("other port after the flood ended: %q, %v", buf, err)
	}
}

// The default cap leaves descriptors for the rest of the process, as
// HAProxy's derived maxconn does.
func TestMaxConnsFor(t *testing.T) {
	for _, tc := range []struct {
		nofile uint64
		want   int
	}{
		{100, minDefaultMaxConns}, // too few: the floor
		{1024, 307},               // (1024-256)*2/5
		{65536, 22937},            // (65536-8192)*2/5
		{1 << 20, 367001},
		{1 << 30, 367001}, // capped at 1<<20, as HAProxy's DEFAULT_MAXFD
	} {
		if got := maxConnsFor(tc.nofile); got != tc.want {
			t.Errorf("maxConnsFor(%d) = %d, want %d", tc.nofile, got, tc.want)
		}
		if got := maxConnsFor(tc.nofile); tc.nofile >= 1024 && uint64(got)*5/2 > tc.nofile-uint64(fdReserveMin) {
			t.Errorf("maxConnsFor(%d) = %d leaves less than the reserve", tc.nofile, got)
		}
	}
	if _, err := NewTCP(TCPConfig{PortMin: 1, PortMax: 2, MaxConns: -1}, nil, nil); err == nil {
		t.Error("NewTCP with a negative MaxConns: no error")
	}
}

// A service port that one of pacer's own listeners holds (the defaults put
// --dns :8053 inside --ports 8000-8100) says so where the bind failure
// shows: the warning, and the port's status (/v1/services).
func TestTCPBindFailureNamesOwnListener(t *testing.T) {
	port := testnet.FreePort(t)
	// Stands in for the DNS server's TCP listener.
	dnsTCP, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer dnsTCP.Close()
	log, logs := observedLog(t)
	name := "DNS listener (--dns 127.0.0.1:" + strconv.Itoa(port) + ")"
	h := newHarnessLog(t, TCPConfig{OwnListeners: OwnListeners{port: name}}, log, port)
	put(h.table, service(port, startBackend(t, echo).addr))
	h.waitApplied()

	st, ok := h.status(port)
	if !ok || !st.BindFailing || !strings.Contains(st.Error, syscall.EADDRINUSE.Error()) || !strings.Contains(st.Error, name) {
		t.Fatalf("status %+v: want a bind failure naming %q", st, name)
	}
	warned := logs.FilterMessage("cannot bind service port; retrying").All()
	if len(warned) != 1 || !strings.Contains(warned[0].ContextMap()["error"].(string), name) {
		t.Fatalf("bind warnings %v: want one naming %q", warned, name)
	}
}

// Whether pacer's own listener and a service port collide depends on the
// addresses: a DNS listener on one loopback address and service ports bound
// to another coexist, so nothing may be refused or warned about up front.
func TestTCPOwnListenerOnOtherAddressCoexists(t *testing.T) {
	port := testnet.FreePort(t)
	other, err := net.Listen("tcp", "127.0.0.2:"+strconv.Itoa(port))
	if err != nil {
		t.Fatalf("127.0.0.2, in Linux's loopback 127.0.0.0/8: %v", err)
	}
	defer other.Close()
	udp, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close() // DNS over UDP on the very address: never a TCP conflict
	h := newHarness(t, TCPConfig{OwnListeners: OwnListeners{port: "DNS listener"}}, port)
	put(h.table, service(port, startBackend(t, echo).addr))
	h.waitOpened(port, 1)
	if got := roundTrip(t, dial(t, port), "ok"); got != "ok" {
		t.Fatalf("got %q", got)
	}
}

// Only "address already in use" on a port one of pacer's own listeners
// holds gets the note.
func TestOwnListenersExplain(t *testing.T) {
	own := OwnListeners{8053: "DNS listener (--dns :8053)"}
	inUse := &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", syscall.EADDRINUSE)}
	if err := own.Explain(8053, inUse); strings.Count(err.Error(), "DNS listener") != 1 || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("Explain(8053) = %v: want the DNS listener named once, the cause kept", err)
	}
	if err := own.Explain(8054, inUse); strings.Contains(err.Error(), "DNS") {
		t.Fatalf("port without an own listener: %v", err)
	}
	denied := &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", syscall.EACCES)}
	if err := own.Explain(8053, denied); strings.Contains(err.Error(), "DNS") {
		t.Fatalf("a bind failure other than 'in use': %v", err)
	}
}

// Both planes' accept paths count through ConnLimit below the cap: a load
// to see room, a compare-and-swap to take a slot, an add to give it back.
// None may allocate or lock: the lock and the episode (Reached) are only
// for a loop that waits at the cap.
func TestConnLimitFastPathDoesNotAllocate(t *testing.T) {
	l := NewConnLimit(1, zap.NewNop())
	allocs := testing.AllocsPerRun(1000, func() {
		if !l.WaitBelow(nil, nil) || !l.Acquire(nil, nil) {
			t.Fatal("no room below the cap")
		}
		l.Release()
	})
	if allocs != 0 {
		t.Errorf("%v allocations per connection counted, want 0", allocs)
	}
	if st := l.Status(); st.Open != 0 || st.Limited || st.Reached != 0 {
		t.Errorf("after the fast path: %+v, want nothing open and no episode", st)
	}
}

// deniedPort is a PortListener whose bind is refused for lack of privilege.
type deniedPort struct{ port int }

func (d deniedPort) Listen(*net.TCPListener) (net.Addr, error) {
	return nil, &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", syscall.EACCES)}
}
func (deniedPort) Socket() *net.TCPListener { return nil }
func (deniedPort) Listening() bool          { return false }
func (deniedPort) StopListening()           {}
func (d deniedPort) Status() PortStatus     { return PortStatus{Port: d.port} }
func (deniedPort) Busy() bool               { return false }

// A service port below 1024 refused to a pacer without the privilege says
// what it takes, in the port's status (/v1/services) and its log line:
// "permission denied" alone reads as a file's permissions.
func TestBindDeniedSaysWhatItTakes(t *testing.T) {
	s := NewPortSet(1, 1023, zap.NewNop(), func(port int) deniedPort { return deniedPort{port} })
	s.Sync(map[int]bool{80: true}, nil)
	st := s.Status([]int{80})
	if len(st) != 1 || !st[0].BindFailing || !strings.Contains(st[0].Error, "CAP_NET_BIND_SERVICE") || !strings.Contains(st[0].Error, "permission denied") {
		t.Fatalf("status %+v; want the refusal and the capability it takes", st)
	}
}
