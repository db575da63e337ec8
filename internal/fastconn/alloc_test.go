//go:build !race

package fastconn

import (
	"testing"
	"time"
)

// The allocation tests are left out of -race builds rather than skipped
// there: the race detector makes sync.Pool drop a quarter of what is put
// back, on purpose, so a pooled buffer or pipe is sometimes made anew and
// the count means nothing. make test runs every test named *Allocat*
// again without -race, so CI runs these.

func TestNoAllocations(t *testing.T) {
	c, peer := pair(t)
	msg, buf := []byte("ping"), make([]byte, 16)
	pool := NewPool(16)
	allocs := testing.AllocsPerRun(200, func() {
		c.Write(msg)
		peer.Read(buf)
		peer.Write(msg)
		c.Read(buf)
		peer.Write(msg)
		b, _, _ := c.ReadPooled(pool)
		pool.Put(b)
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per round trip; want 0", allocs)
	}
}

// TestCloseWriteNoAllocations: a FIN is a system call under the
// descriptor's reference, with no RawConn callback to allocate; the TCP
// proxy sends one per connection.
func TestCloseWriteNoAllocations(t *testing.T) {
	c, peer := pair(t)
	var err error
	allocs := testing.AllocsPerRun(100, func() {
		if e := c.CloseWrite(); e != nil {
			err = e
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if allocs != 0 {
		t.Fatalf("%.1f allocations per CloseWrite; want 0", allocs)
	}
	if n, err := peer.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("peer read %d bytes, %v; want the FIN", n, err)
	}
}

// TestSpliceNoAllocations: a pooled pipe and the Conn's own callbacks, so a
// Splice allocates nothing once warm.
func TestSpliceNoAllocations(t *testing.T) {
	src, in := pair(t)
	dst, out := pair(t)
	msg, buf := make([]byte, 64<<10), make([]byte, 64<<10)
	allocs := testing.AllocsPerRun(50, func() {
		in.Write(msg)
		src.SetReadDeadline(time.Now().Add(time.Millisecond))
		n, _ := Splice(dst, src)
		for got := int64(0); got < n; {
			m, _ := out.Read(buf)
			got += int64(m)
		}
	})
	// The timeout's error is allocated (the net package's *OpError), as a
	// Read's is; Splice must add nothing to that.
	base := testing.AllocsPerRun(50, func() {
		src.SetReadDeadline(time.Now().Add(time.Millisecond))
		src.Read(buf)
	})
	if allocs > base {
		t.Fatalf("%.1f allocations per Splice (deadline alone %.1f)", allocs, base)
	}
}

// TestExpectReplyNoAllocations: the wait for the answer allocates nothing.
func TestExpectReplyNoAllocations(t *testing.T) {
	c, peer := pair(t)
	msg, buf := []byte("ping"), make([]byte, 16)
	go func() {
		b := make([]byte, 4)
		for {
			if _, err := peer.Read(b); err != nil {
				return
			}
			if _, err := peer.Write(b); err != nil {
				return
			}
		}
	}()
	allocs := testing.AllocsPerRun(200, func() {
		c.ExpectReply()
		c.Write(msg)
		c.Read(buf)
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per round trip; want 0", allocs)
	}
}

// TestRelayNoAllocations: a message the poller relays allocates nothing.
func TestRelayNoAllocations(t *testing.T) {
	src, in := pair(t)
	dst, out := pair(t)
	go func() {
		for {
			_, buf, n, err := src.RelayTo(dst, copyPool)
			if buf != nil {
				dst.Write((*buf)[:n])
				copyPool.Put(buf)
			}
			if err != nil {
				return
			}
		}
	}()
	untilArmed(t, src)
	msg, buf := []byte("ping"), make([]byte, 16)
	allocs := testing.AllocsPerRun(200, func() {
		in.Write(msg)
		out.Read(buf)
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per relayed message; want 0", allocs)
	}
}

var copyPool = NewPool(1024)
