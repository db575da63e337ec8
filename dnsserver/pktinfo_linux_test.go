package dnsserver

import (
	"context"
	"net"
	"testing"
	"time"
)

// On an IPv4-only socket (a wildcard address where IPv6 is off, as Go then
// opens), IP_PKTINFO makes the answer leave from the address asked too.
// The server's sockets are dual-stack on a wildcard address wherever IPv6
// is on (TestUDPAnswersFromTheAddressAsked); this opens the IPv4 kind.
func TestReplyControlIPv4Socket(t *testing.T) {
	t.Parallel()
	lc := net.ListenConfig{Control: udpControl}
	pc, err := lc.ListenPacket(context.Background(), "udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	srv := pc.(*net.UDPConn)
	port := srv.LocalAddr().(*net.UDPAddr).Port
	client, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	deadline := time.Now().Add(5 * time.Second)
	srv.SetDeadline(deadline)
	client.SetDeadline(deadline)
	if _, err := client.Write([]byte("query")); err != nil {
		t.Fatal(err)
	}
	buf, inCtl, outCtl := make([]byte, 512), make([]byte, udpControlLen), make([]byte, udpControlLen)
	n, ctln, _, from, err := srv.ReadMsgUDPAddrPort(buf, inCtl)
	if err != nil {
		t.Fatal(err)
	}
	ctl := outCtl[:replyControl(inCtl[:ctln], outCtl)]
	if len(ctl) == 0 {
		t.Fatalf("no IP_PKTINFO among %d bytes of control data", ctln)
	}
	if _, _, err := srv.WriteMsgUDPAddrPort(buf[:n], ctl, from); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Read(buf); err != nil {
		t.Fatalf("the answer did not come from 127.0.0.2, where the query went: %v", err)
	}
}
