package dnsserver

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePortSupported says whether several UDP sockets can share a port.
const reusePortSupported = true

// udpControl sets the options of every UDP socket: SO_REUSEPORT, so the
// kernel spreads datagrams over every socket bound to the port (Linux
// 3.9+), by a hash of the client's address; and IP_PKTINFO (IPv4 sockets)
// or IPV6_RECVPKTINFO (IPv6 ones, which take IPv4 too on a wildcard
// address), so every query says which address it was sent to and its
// answer can leave from there (replyControl).
func udpControl(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			serr = fmt.Errorf("SO_REUSEPORT: %w", err)
			return
		}
		if network == "udp4" {
			if err := unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1); err != nil {
				serr = fmt.Errorf("IP_PKTINFO: %w", err)
			}
			return
		}
		if err := unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1); err != nil {
			serr = fmt.Errorf("IPV6_RECVPKTINFO: %w", err)
		}
	})
	if err != nil {
		return err
	}
	return serr
}
