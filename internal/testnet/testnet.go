// Package testnet holds the socket helpers that tests and benchmarks share.
package testnet

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// Ports returns n distinct TCP ports that were free on 127.0.0.1 a moment
// ago: all n are held open together, so they differ, then released.
// Something else may take one before the caller binds it; code that must
// not race binds port 0 instead.
func Ports(n int) ([]int, error) {
	ports := make([]int, 0, n)
	lns := make([]net.Listener, 0, n)
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
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
