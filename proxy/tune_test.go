package proxy

import (
	"context"
	"syscall"
	"testing"

	"github.com/pacer-lb/pacer/internal/fastconn"
)

// A socket the TCP plane takes over from the HTTP plane no longer defers
// accepts: a client of a protocol where the server speaks first (SMTP,
// MySQL) would otherwise wait until it spoke.
func TestTuneListenerForTCPUndoesHTTP(t *testing.T) {
	tl, err := fastconn.Listen(context.Background(), "127.0.0.1:0") // plain TCP, as both planes bind
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	deferAccept := func() int {
		t.Helper()
		rc, err := tl.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var v int
		var gerr error
		if err := rc.Control(func(fd uintptr) {
			v, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT)
		}); err != nil || gerr != nil {
			t.Fatal(err, gerr)
		}
		return v
	}
	if err := TuneListener(tl, true); err != nil || deferAccept() == 0 {
		t.Fatalf("tuned for HTTP: %v, TCP_DEFER_ACCEPT %d; want it on", err, deferAccept())
	}
	if err := TuneListener(tl, false); err != nil || deferAccept() != 0 {
		t.Fatalf("tuned back for TCP: %v, TCP_DEFER_ACCEPT %d; want it off", err, deferAccept())
	}
}
