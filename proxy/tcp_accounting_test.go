package proxy

import (
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/internal/testnet"
)

// openFDs counts this process's open descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

// settled waits until no connection is open on port, the cap counts none,
// and the process holds no more descriptors than before (splice pipes
// dropped from their pool by the collector are let go of).
func (h *harness) settled(port, fdsBefore int, what string) {
	h.t.Helper()
	var st PortStatus
	var open int64
	var fds int
	deadline := time.Now().Add(waitFor)
	for {
		runtime.GC()
		st, _ = h.status(port)
		open, fds = h.p.ConnLimit().Open, openFDs(h.t)
		if st.Active == 0 && open == 0 && fds <= fdsBefore {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: %d active, %d under the cap, %d descriptors open (%d before)", what, st.Active, open, fds, fdsBefore)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Every way a connection ends, ordinary or not, gives back its place in
// the port's active count, its slot under the cap and both descriptors.
// Not parallel: it counts the process's descriptors.
func TestTCPEveryEndGivesBackItsCountsAndDescriptors(t *testing.T) {
	port := testnet.FreePort(t)
	h := newHarness(t, TCPConfig{WaitForBackend: 200 * time.Millisecond, IdleTimeout: 300 * time.Millisecond,
		DrainTimeout: 200 * time.Millisecond}, port)
	good := startBackend(t, echo)
	resetter := startBackend(t, func(c *net.TCPConn) {
		_ = c.SetLinger(0)
		c.Close()
	})
	midReset := startBackend(t, func(c *net.TCPConn) {
		b := make([]byte, 1)
		if _, err := c.Read(b); err == nil {
			c.Write([]byte("x"))
			_ = c.SetLinger(0)
		}
	})
	silent := startBackend(t, func(c *net.TCPConn) { io.Copy(io.Discard, c) })
	dead := deadAddr(t) // holds a descriptor: taken before the count
	put(h.table, service(port, good.addr))
	h.waitOpened(port, 1)
	roundTrip(t, dial(t, port), "warm") // the poller, workers and pools exist
	c := dial(t, port)
	roundTrip(t, c, "warm")
	c.Close()
	h.settled(port, 1<<30, "warm-up")
	before := openFDs(t)
	// routeTo points the port at backends and waits until the plane has.
	routeTo := func(backends ...netip.AddrPort) {
		put(h.table, service(port, backends...))
		h.waitApplied()
	}
	// untilEnd connects, sends send (if any) and reads until the proxy ends
	// the connection.
	untilEnd := func(send string) {
		c := dial(t, port)
		if send != "" {
			c.Write([]byte(send))
		}
		io.ReadAll(c)
		c.Close()
	}

	t.Run("echo", func(t *testing.T) {
		c := dial(t, port)
		roundTrip(t, c, "hello")
		c.Close()
		h.settled(port, before, "echo")
	})
	t.Run("client reset before routing", func(t *testing.T) {
		c := dial(t, port)
		c.SetLinger(0)
		c.Close()
		h.settled(port, before, "reset")
	})
	t.Run("client reset mid-stream", func(t *testing.T) {
		c := dial(t, port)
		roundTrip(t, c, "hello")
		c.SetLinger(0)
		c.Close()
		h.settled(port, before, "client reset")
	})
	t.Run("no backend", func(t *testing.T) {
		routeTo()
		untilEnd("x")
		h.settled(port, before, "no backend")
	})
	t.Run("refused", func(t *testing.T) {
		routeTo(dead)
		untilEnd("")
		h.settled(port, before, "refused")
	})
	t.Run("backend resets before any byte", func(t *testing.T) {
		routeTo(resetter.addr)
		// The reset the client is passed may come before its dial returns.
		if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			io.ReadAll(c)
			c.Close()
		}
		h.settled(port, before, "resetter")
	})
	t.Run("backend resets mid-stream", func(t *testing.T) {
		routeTo(midReset.addr)
		untilEnd("q")
		h.settled(port, before, "mid reset")
	})
	t.Run("idle", func(t *testing.T) {
		routeTo(silent.addr)
		untilEnd("q")
		h.settled(port, before, "idle")
	})
	t.Run("drained", func(t *testing.T) {
		routeTo(good.addr)
		c := dial(t, port)
		roundTrip(t, c, "a")
		put(h.table, service(port))
		io.ReadAll(c)
		c.Close()
		h.settled(port, before, "drain")
	})
	t.Run("port unclaimed while connections drain", func(t *testing.T) {
		routeTo(good.addr)
		c := dial(t, port)
		roundTrip(t, c, "a")
		h.table.Apply(discovery.Update{Source: "test", Removed: []string{service(port).ID}})
		h.waitApplied()
		if st, _ := h.status(port); st.Listening || st.Active != 1 {
			t.Fatalf("port status after its app left: %+v; want not listening, one connection draining", st)
		}
		io.ReadAll(c)
		c.Close()
		h.settled(port, before, "unclaimed")
	})
}
