package dnsserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
)

// udpBuffer is the receive and send buffer asked for each UDP socket. The
// kernel caps it at net.core.rmem_max / wmem_max; the default (208 KB) holds
// only about 200 queued queries, and a burst beyond that is dropped before
// the server sees it (dnsperf -q 200 saw RcvbufErrors).
const udpBuffer = 4 << 20

// portAttempts is how often listen retries when port 0 was asked for and the
// TCP port it got is taken for UDP.
const portAttempts = 10

// listen opens the TCP listener, then n UDP sockets on the same port. TCP is
// bound first and without SO_REUSEPORT, so a second pacer on the same port
// fails here instead of silently sharing the UDP traffic.
func listen(ctx context.Context, addr string, n int) ([]*net.UDPConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	var lastErr error
	for range portAttempts {
		var lc net.ListenConfig
		tcp, err := lc.Listen(ctx, "tcp", net.JoinHostPort(host, port))
		if err != nil {
			return nil, nil, err
		}
		bound := net.JoinHostPort(host, strconv.Itoa(tcp.Addr().(*net.TCPAddr).Port))
		udp, err := listenUDP(ctx, bound, n)
		if err == nil {
			return udp, tcp, nil
		}
		tcp.Close()
		lastErr = err
		if port != "0" || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	return nil, nil, lastErr
}

// listenUDP opens n sockets on addr, sharing it with SO_REUSEPORT when n > 1.
func listenUDP(ctx context.Context, addr string, n int) ([]*net.UDPConn, error) {
	lc := net.ListenConfig{Control: udpControl}
	var out []*net.UDPConn
	for range n {
		pc, err := lc.ListenPacket(ctx, "udp", addr)
		if err != nil {
			for _, c := range out {
				c.Close()
			}
			return nil, fmt.Errorf("udp socket %d of %d: %w", len(out)+1, n, err)
		}
		c := pc.(*net.UDPConn)
		// Best effort: a smaller buffer still works, only drops sooner.
		_ = c.SetReadBuffer(udpBuffer)
		_ = c.SetWriteBuffer(udpBuffer)
		out = append(out, c)
	}
	return out, nil
}
