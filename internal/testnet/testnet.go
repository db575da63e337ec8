// Package testnet holds the socket helpers that tests and benchmarks share.
package testnet

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Ports returns n distinct ports that were free a moment ago for TCP and
// UDP on every address: all n are held open together, so they differ, then
// released. They come from below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range), so no outgoing connection, of this test
// or of any other running in parallel, can take one as its local port
// before the caller binds it; a port 0 listener's port could be, and under
// parallel load was (a test's service port bound by a proxy's dial). Another
// program binding it in that moment still can: code that must not race
// binds port 0 instead.
func Ports(n int) ([]int, error) {
	lo, hi := 10000, ephemeralLow()
	if hi-lo < 100 {
		lo = 1024 // an unusual range; still below it
	}
	ports := make([]int, 0, n)
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		if tries == 10000 {
			return nil, fmt.Errorf("finding %d free ports below %d: only %d found", n, hi, len(ports))
		}
		p := lo + rand.IntN(hi-lo)
		if slices.Contains(ports, p) {
			continue
		}
		ln, err := net.Listen("tcp", ":"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		pc, err := net.ListenPacket("udp", ":"+strconv.Itoa(p))
		if err != nil {
			ln.Close()
			continue
		}
		held = append(held, ln, pc)
		ports = append(ports, p)
	}
	return ports, nil
}

// ephemeralLow returns the first port of the kernel's ephemeral range, or
// 32768 (Linux's default) if it cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil || lo <= 1024 {
		return 32768
	}
	return lo
}

// FreePorts is Ports for a test, which it fails on error.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	ports, err := Ports(n)
	if err != nil {
		t.Fatal(err)
	}
	return ports
}

// FreePort returns one port as FreePorts does.
func FreePort(t testing.TB) int {
	t.Helper()
	return FreePorts(t, 1)[0]
}

// SilentAddr returns an address where connects neither succeed nor fail:
// a listener with a backlog of 0 whose one queued connection is never
// accepted, so the kernel drops every further SYN, as a host that vanished
// from the network would. Connects there end only at the dialer's deadline.
func SilentAddr(t testing.TB) netip.AddrPort {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	a := netip.AddrPortFrom(netip.AddrFrom4(sa.(*syscall.SockaddrInet4).Addr), uint16(sa.(*syscall.SockaddrInet4).Port))
	filler, err := net.DialTimeout("tcp", a.String(), 5*time.Second) // fills the accept queue
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { filler.Close() })
	// Linux drops a SYN for a listener whose accept queue is full; if this
	// kernel answered it, the tests built on this address would prove nothing.
	if c, err := net.DialTimeout("tcp", a.String(), 100*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("a connect to a full accept queue completed: no silent address on this kernel")
	}
	return a
}

// Sockopt reads an integer socket option of c's descriptor (getsockopt).
func Sockopt(t testing.TB, c syscall.Conn, level, opt int) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) { v, gerr = syscall.GetsockoptInt(int(fd), level, opt) }); err != nil || gerr != nil {
		t.Fatalf("getsockopt(%d, %d): %v %v", level, opt, err, gerr)
	}
	return v
}

// SegmentsIn is how many TCP segments c's socket has received (TCP_INFO).
func SegmentsIn(t testing.TB, c *net.TCPConn) uint32 {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	var gerr error
	if err := rc.Control(func(fd uintptr) { info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil || gerr != nil {
		t.Fatalf("TCP_INFO: %v %v", err, gerr)
	}
	return info.Segs_in
}
