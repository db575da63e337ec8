// Package testnet holds the socket helpers that tests and benchmarks share.
package testnet

import (
	"encoding/binary"
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

// RefusedAddr returns a loopback address where every connect is refused
// for the rest of the test: a socket bound to it, never listening, holds
// the port, so no listener of a test running in parallel can take it, as
// it could a port that was free a moment ago.
func RefusedAddr(t testing.TB) netip.AddrPort {
	t.Helper()
	_, a := boundSocket(t)
	return a
}

// boundSocket returns a TCP socket bound to a free loopback port, closed
// when the test ends, and its address.
func boundSocket(t testing.TB) (int, netip.AddrPort) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	in4 := sa.(*syscall.SockaddrInet4)
	return fd, netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port))
}

// SilentAddr returns an address where connects neither succeed nor fail:
// a listener with a backlog of 0 whose one queued connection is never
// accepted, so the kernel drops every further SYN, as a host that vanished
// from the network would. Connects there end only at the dialer's deadline.
func SilentAddr(t testing.TB) netip.AddrPort {
	t.Helper()
	fd, a := boundSocket(t)
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
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

// PeerRead waits until the program at the other end of c, an IPv4 TCP
// connection between two sockets of this host, has read every byte c sent:
// the peer socket's receive queue (rx_queue in /proc/net/tcp) is empty. A
// test that must have a reader take the first part of a message alone
// waits for this before it sends the rest, where a sleep would only make
// that likely. On loopback a write's bytes are in the peer's queue when the
// write returns. It fails after 10s, and at once if the peer's socket is
// not in this host's table.
func PeerRead(c net.Conn) error {
	local, lok := c.LocalAddr().(*net.TCPAddr)
	remote, rok := c.RemoteAddr().(*net.TCPAddr)
	if !lok || !rok || local.IP.To4() == nil || remote.IP.To4() == nil {
		return fmt.Errorf("PeerRead: %v to %v is not an IPv4 TCP connection", c.LocalAddr(), c.RemoteAddr())
	}
	// The peer's line names c's remote address as its local one.
	peer := procNetAddr(remote) + " " + procNetAddr(local)
	deadline := time.Now().Add(10 * time.Second)
	for {
		queued, found, err := peerReceiveQueue(peer)
		switch {
		case err != nil:
			return err
		case !found:
			return fmt.Errorf("PeerRead: no socket %s in /proc/net/tcp", peer)
		case queued == 0:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("PeerRead: the peer of %v left %d bytes unread for 10s", c.LocalAddr(), queued)
		}
		time.Sleep(time.Millisecond) // polling another program's socket: no event to wait on
	}
}

// ConnectsInFlight counts this host's sockets whose connect to addr, an
// IPv4 address, waits for its handshake (SYN_SENT in /proc/net/tcp): a
// dial to a SilentAddr that nobody closed stays there for minutes.
func ConnectsInFlight(addr netip.AddrPort) (int, error) {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return 0, err
	}
	remote := procNetAddr(net.TCPAddrFromAddrPort(addr))
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 3 && f[2] == remote && f[3] == "02" {
			n++
		}
	}
	return n, nil
}

// procNetAddr is a as /proc/net/tcp prints it: the address as the kernel's
// 32-bit word in host order, then the port, both in hex.
func procNetAddr(a *net.TCPAddr) string {
	return fmt.Sprintf("%08X:%04X", binary.NativeEndian.Uint32(a.IP.To4()), a.Port)
}

// peerReceiveQueue reads the receive queue of the socket whose local and
// remote addresses are pair in /proc/net/tcp.
func peerReceiveQueue(pair string) (queued uint64, found bool, err error) {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return 0, false, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[1]+" "+f[2] != pair {
			continue
		}
		_, rx, ok := strings.Cut(f[4], ":")
		if !ok {
			return 0, false, fmt.Errorf("/proc/net/tcp: queues %q", f[4])
		}
		if queued, err = strconv.ParseUint(rx, 16, 64); err != nil {
			return 0, false, fmt.Errorf("/proc/net/tcp: rx_queue %q: %w", rx, err)
		}
		return queued, true, nil
	}
	return 0, false, nil
}
