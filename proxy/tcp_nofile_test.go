package proxy

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pacer-lb/pacer/health"
	"github.com/pacer-lb/pacer/internal/testnet"
)

// The process running out of descriptors, for real: each test here runs
// alone in a child test process (testnet.InChild) with RLIMIT_NOFILE lowered and
// every descriptor below it taken (testnet.ExhaustDescriptors), so it cannot starve the tests
// running beside it.

// failures records the outcomes other than Success that reach Report.
type failures struct {
	mu  sync.Mutex
	got []string
}

func (f *failures) report(addr netip.AddrPort, o health.Outcome) {
	if o == health.Success {
		return
	}
	f.mu.Lock()
	f.got = append(f.got, addr.String()+": "+o.String())
	f.mu.Unlock()
}

func (f *failures) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.got...)
}

// A connection already through moves bulk data both ways while the
// process has no descriptor to spare: splicing needs a pipe, and one that
// cannot be made must not reset a healthy connection mid-transfer.
func TestTCPBulkWithoutSpareDescriptors(t *testing.T) {
	if !testnet.InChild(t) {
		return
	}
	var bad failures
	port := testnet.FreePort(t)
	h := newHarness(t, TCPConfig{Report: bad.report}, port)
	put(h.table, service(port, startBackend(t, echo).addr))
	h.waitOpened(port, 1)
	c := dial(t, port)
	if got := roundTrip(t, c, "hello"); got != "hello" {
		t.Fatalf("echo %q", got)
	}

	testnet.ExhaustDescriptors(t)
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i * 11 / 7)
	}
	sent := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		sent <- err
	}()
	got := make([]byte, len(data))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading the echo of %d bytes with no descriptor to spare: %v", len(data), err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the echo came back garbled")
	}
	if f := bad.list(); len(f) != 0 {
		t.Fatalf("reported to health checking: %v", f)
	}
}

// A dial that fails because pacer itself is out of descriptors is not the
// backend's fault: reported as a failed connect, it would get healthy
// backends ejected (and dropped from DNS) every time pacer ran short. The
// client it was for is held and served once descriptors come back, though
// no snapshot change comes to wake it.
func TestTCPDialOutOfDescriptorsIsNoBackendFault(t *testing.T) {
	if !testnet.InChild(t) {
		return
	}
	var bad failures
	port := testnet.FreePort(t)
	// Held far longer than the test: only a retry can serve the client.
	h := newHarness(t, TCPConfig{Report: bad.report, WaitForBackend: time.Hour}, port)
	be := startBackend(t, echo)
	put(h.table, service(port, be.addr))
	h.waitOpened(port, 1)
	if got := roundTrip(t, dial(t, port), "warm"); got != "warm" {
		t.Fatalf("echo %q", got)
	}

	// Two descriptors back: the client's socket and the proxy's accept.
	// The proxy's dial to the backend then finds none.
	f := testnet.ExhaustDescriptors(t)
	f.Free(2)
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	eventually(t, "the proxy's dial to fail", func() bool {
		st, _ := h.status(port)
		return st.DialErrors > 0
	})
	if got := bad.list(); len(got) != 0 {
		t.Fatalf("reported to health checking for pacer's own shortage: %v", got)
	}

	f.Release()
	_ = c.SetDeadline(time.Now().Add(waitFor))
	if got := roundTrip(t, c, "held"); got != "held" {
		t.Fatalf("echo to the client held through the shortage: %q", got)
	}
	if got := roundTrip(t, dial(t, port), "after"); got != "after" {
		t.Fatalf("echo after the shortage: %q", got)
	}
}

// A port's accept loop that runs out of descriptors backs off, warns, and
// takes the waiting client once descriptors are free again: it neither
// stops accepting for good nor spins on the error.
func TestTCPAcceptResumesAfterRunningOutOfDescriptors(t *testing.T) {
	if !testnet.InChild(t) {
		return
	}
	core, logs := observer.New(zap.WarnLevel)
	log := zap.New(zapcore.NewTee(core, zaptest.NewLogger(t, zaptest.Level(zap.DebugLevel)).Core()))
	port := testnet.FreePort(t)
	h := newHarnessLog(t, TCPConfig{}, log, port)
	put(h.table, service(port, startBackend(t, echo).addr))
	h.waitOpened(port, 1)

	// One descriptor back, for the client's socket: its connection then
	// waits in the listen backlog, where the proxy cannot take it.
	f := testnet.ExhaustDescriptors(t)
	f.Free(1)
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Each failed accept doubles the backoff: two warnings that name the
	// same loop's second backoff show it waits between tries.
	eventually(t, "the accept loop to back off twice", func() bool {
		return logs.FilterMessage("accept failed; backing off").
			FilterField(zap.Duration("backoff", 2*acceptBackoffMin)).Len() > 0
	})
	if st, _ := h.status(port); st.Total != 0 {
		t.Fatalf("accepted %d connections with no descriptor free", st.Total)
	}

	f.Release()
	_ = c.SetDeadline(time.Now().Add(waitFor))
	if got := roundTrip(t, c, "waited"); got != "waited" {
		t.Fatalf("echo after descriptors came back: %q", got)
	}
}
