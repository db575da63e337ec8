//go:build !linux

package dnsserver

import (
	"net"
	"syscall"
)

// reusePortSupported says whether several UDP sockets can share a port.
const reusePortSupported = false

func reusePort(_, _ string, _ syscall.RawConn) error { return nil }

// batchSupported says whether UDP is read and written in batches.
const batchSupported = false

func (w *worker) serveUDPBatch(c *net.UDPConn) { w.serveUDP(c) }
