package proxy

import (
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/pacer-lb/pacer/discovery"
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

// A rerouted client goes to another backend than the one that reset it,
// whatever the balancer: leastconn would pick the resetter again (it
// holds no connection, the healthy backend one), and source balancing
// hashes the client to the same backend every time.
func TestTCPRerouteAvoidsTheBackendThatReset(t *testing.T) {
	t.Parallel()
	for _, bal := range []discovery.Balance{discovery.BalanceLeastConn, discovery.BalanceSource} {
		t.Run(bal.String(), func(t *testing.T) {
			t.Parallel()
			port := testnet.FreePort(t)
			h := newHarness(t, TCPConfig{}, port)
			resetter := startBackend(t, func(c *net.TCPConn) {
				_ = c.SetLinger(0)
				c.Close()
			})
			good := startBackend(t, namedEcho("good"))
			// Either order: source hashing 127.0.0.1 lands on one index.
			for _, order := range [][]netip.AddrPort{{resetter.addr, good.addr}, {good.addr, resetter.addr}} {
				app := service(port, order...)
				app.Services[0].Balance = bal
				put(h.table, app)
				h.waitApplied()
				h.waitOpened(port, 1)
				held := dial(t, port) // one open connection on good
				if got := readLine(t, held); got != "good" {
					t.Fatalf("greeting %q, want good", got)
				}
				for i := range 5 {
					c := dial(t, port)
					if got := readLine(t, c); got != "good" {
						t.Fatalf("backends %v, connection %d: greeting %q, want good", order, i, got)
					}
					c.Close()
				}
				held.Close()
			}
		})
	}
}
