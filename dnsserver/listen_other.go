//go:build !linux

package dnsserver

import (
	"net"
	"syscall"
)

// reusePortSupported says whether several UDP sockets can share a port.
const reusePortSupported = false

// udpControl sets no option: one socket, and answers leave from the
// address the system picks (see replyControl).
func udpControl(_, _ string, _ syscall.RawConn) error { return nil }

// replyControl writes no control message: answers from a wildcard address
// leave from the address the route prefers, not necessarily the one asked.
func replyControl(_, _ []byte) int { return 0 }

// batchSupported says whether UDP is read and written in batches.
const batchSupported = false

func (w *worker) serveUDPBatch(c *net.UDPConn) { w.serveUDP(c) }
