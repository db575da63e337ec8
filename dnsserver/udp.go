package dnsserver

import (
	"errors"
	"net"

	"go.uber.org/zap"
)

// serveUDP reads and answers datagrams on one socket until it is closed.
// It is the only goroutine using w and c's read side.
func (w *worker) serveUDP(c *net.UDPConn) {
	defer w.s.wg.Done()
	buf := make([]byte, maxTCPSize)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			w.s.log.Debug("udp read", zap.Error(err))
			continue
		}
		resp := w.handle(buf[:n], false)
		if resp == nil {
			continue
		}
		if _, err := c.WriteToUDPAddrPort(resp, from); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			w.s.log.Debug("udp write", zap.Stringer("client", from), zap.Error(err))
		}
	}
}
