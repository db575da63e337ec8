// Package testnet holds the socket helpers that tests and benchmarks share.
package testnet

import (
	"fmt"
	"net"
	"testing"
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
