package proxy

import (
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/pacer-lb/pacer/health"
	"github.com/pacer-lb/pacer/internal/testnet"
)

// A backend that accepts and then resets before either side sent a byte (a
// process dying with connections in its accept queue) costs the client
// nothing: pacer gives it another backend. The outcome reaches Report.
func TestTCPRerouteBackendResetBeforeAnyByte(t *testing.T) {
	t.Parallel()
	port := testnet.FreePorts(t, 1)[0]
	var mu sync.Mutex
	outcomes := map[netip.AddrPort]map[health.Outcome]int{}
	h := newHarness(t, TCPConfig{Report: func(a netip.AddrPort, o health.Outcome) {
		mu.Lock()
		defer mu.Unlock()
		if outcomes[a] == nil {
			outcomes[a] = map[health.Outcome]int{}
		}
		outcomes[a][o]++
	}}, port)
	resetter := startBackend(t, func(c *net.TCPConn) {
		_ = c.SetLinger(0)
		c.Close()
	})
	good := startBackend(t, namedEcho("good"))
	put(h.table, service(port, resetter.addr, good.addr))
	h.waitOpened(port, 1)

	// The client speaks second (it waits for the greeting), so it has sent
	// nothing when the first backend resets: every connection must reach
	// the good backend, whichever one round robin tries first.
	for i := range 20 {
		c := dial(t, port)
		if got := readLine(t, c); got != "good" {
			t.Fatalf("connection %d: greeting %q, want good", i, got)
		}
		if got := roundTrip(t, c, "ping"); got != "ping" {
			t.Fatalf("connection %d: echo %q", i, got)
		}
		c.Close()
	}
	eventually(t, "the resets reported", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return outcomes[resetter.addr][health.Reset] >= 10 && outcomes[good.addr][health.Success] == 20
	})
	if st, _ := h.status(port); st.Failed != 0 {
		t.Fatalf("failed connections: %+v", st)
	}
}
