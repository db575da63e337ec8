package dnsserver

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePortSupported says whether several UDP sockets can share a port.
const reusePortSupported = true

// reusePort sets SO_REUSEPORT, so the kernel spreads datagrams over every
// socket bound to the port (Linux 3.9+), by a hash of the client's address.
func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
