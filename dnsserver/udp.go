package dnsserver

import (
	"errors"
	"net"

	"go.uber.org/zap"
)

// udpControlLen is the room for the control data of one datagram: an
// IP_PKTINFO or IPV6_PKTINFO message, received or sent (replyControl).
const udpControlLen = 64

// serveUDP reads and answers datagrams on one socket until it is closed.
// It is the only goroutine using w and c's read side.
func (w *worker) serveUDP(c *net.UDPConn) {
	defer w.s.wg.Done()
	buf := make([]byte, maxTCPSize)
	var inCtl, outCtl [udpControlLen]byte
	for {
		n, ctln, _, from, err := c.ReadMsgUDPAddrPort(buf, inCtl[:])
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
		ctl := outCtl[:replyControl(inCtl[:ctln], outCtl[:])]
		if _, _, err := c.WriteMsgUDPAddrPort(resp, ctl, from); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			w.s.log.Debug("udp write", zap.Stringer("client", from), zap.Error(err))
		}
	}
}
