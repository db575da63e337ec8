package proxy

import (
	"io"
	"net"
	"runtime"
	"strconv"
	"testing"

	"github.com/pacer-lb/pacer/internal/testnet"
)

// BenchmarkTCPProxyConnect measures one connection's life, connect + a
// 1-byte echo + close, through the proxy and straight to the backend. With
// -benchmem the difference between the two is the proxy's per-connection
// cost (the client's and the backend's own allocations are in both).
//
//	go test -run '^$' -bench TCPProxy -benchmem -benchtime 2000x ./proxy/
func BenchmarkTCPProxyConnect(b *testing.B) {
	port := testnet.FreePorts(b, 1)[0]
	h := newHarness(b, TCPConfig{}, port)
	be := startBackend(b, echo)
	put(h.table, service(port, be.addr))
	h.waitOpened(port, 1)

	for _, bc := range []struct {
		name string
		addr string
	}{
		{"direct", be.addr.String()},
		{"proxy", "127.0.0.1:" + strconv.Itoa(port)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 1)
			for b.Loop() {
				c, err := net.Dial("tcp", bc.addr)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

// BenchmarkTCPProxyStream echoes 32 KiB chunks over one connection through
// the proxy: the byte path, which should report 0 allocs/op.
func BenchmarkTCPProxyStream(b *testing.B) {
	port := testnet.FreePorts(b, 1)[0]
	h := newHarness(b, TCPConfig{}, port)
	put(h.table, service(port, startBackend(b, echo).addr))
	h.waitOpened(port, 1)
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// The hot byte path must not allocate: stream through an established
// connection and count heap allocations in the whole process. Not parallel,
// so no other test allocates meanwhile; the allowance covers the runtime's
// own odd allocation, not one per chunk.
func TestTCPBytePathDoesNotAllocate(t *testing.T) {
	_, port := echoHarness(t)
	c := dial(t, port)
	buf := make([]byte, 64<<10)
	roundTrip(t, c, "warm up") // the connection is established and spliced

	const chunks = 200
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range chunks {
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if n := after.Mallocs - before.Mallocs; n > chunks/4 {
		t.Fatalf("%d heap allocations while echoing %d chunks through the proxy; want ~0", n, chunks)
	}
}
