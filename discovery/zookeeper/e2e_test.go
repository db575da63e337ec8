package zookeeper

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/miekg/dns"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/dnsserver"
	"github.com/pacer-lb/pacer/internal/testnet"
	"github.com/pacer-lb/pacer/internal/zktest"
	"github.com/pacer-lb/pacer/proxy"
)

// Members added and removed in ZooKeeper show up in routing (a client of
// the TCP proxy's service port reaches them) and in DNS (NAME.zk.<domain>,
// _NAME._tcp.zk.<domain>).
func TestMembersRouteAndResolve(t *testing.T) {
	t.Parallel()
	srv := zktest.Start(t)
	c := srv.Conn(t)
	zktest.EnsurePath(t, c, "/e2e")
	b1, b2 := backend(t, "one"), backend(t, "two")

	servicePort := testnet.FreePort(t)
	table := discovery.NewTable()
	runSource(t, Config{Servers: srv.Servers(), Services: []ServiceSpec{{"e2e", "/e2e", servicePort}}}, table)
	listening := make(chan struct{}, 1)
	tcp, err := proxy.NewTCP(proxy.TCPConfig{Bind: "127.0.0.1", PortMin: servicePort, PortMax: servicePort,
		WaitForBackend: 200 * time.Millisecond,
		OnListening:    func(int, net.Addr) { listening <- struct{}{} }}, table, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	dnsUp := make(chan net.Addr, 1)
	dsrv, err := dnsserver.New(dnsserver.Config{Addr: "127.0.0.1:0", UDPSockets: 1,
		OnListening: func(udp, _ net.Addr) { dnsUp <- udp }}, table, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tcpDone, dnsDone := make(chan error, 1), make(chan error, 1)
	go func() { tcpDone <- tcp.Run(ctx) }()
	go func() { dnsDone <- dsrv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-tcpDone
		<-dnsDone
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = tcp.Shutdown(sctx)
		_ = dsrv.Shutdown(sctx)
	})
	dnsAddr := (<-dnsUp).String()

	n1 := create(t, c, "/e2e/member_", nerve("127.0.0.1", b1), zk.FlagEphemeralSequential)
	<-listening
	waitTable(t, table, "member one", func(s *discovery.Snapshot) bool { return len(backends(s, "zk:e2e")) == 1 })
	if got := dialService(t, servicePort); got != "one" {
		t.Fatalf("through the proxy: %q, want one", got)
	}
	if got := lookup(t, dnsAddr, "_e2e._tcp.zk.mesos.", dns.TypeSRV); !slices.Equal(got, []string{strconv.Itoa(b1)}) {
		t.Fatalf("SRV ports %v, want [%d]", got, b1)
	}
	if got := lookup(t, dnsAddr, "e2e.zk.mesos.", dns.TypeA); !slices.Equal(got, []string{"127.0.0.1"}) {
		t.Fatalf("A %v", got)
	}

	// Replace member one by member two.
	create(t, c, "/e2e/member_", serverset("127.0.0.1", b2, "ALIVE"), zk.FlagEphemeralSequential)
	remove(t, c, n1)
	waitTable(t, table, "member two alone", func(s *discovery.Snapshot) bool {
		b := backends(s, "zk:e2e")
		return len(b) == 1 && strings.HasSuffix(b[0], ":"+strconv.Itoa(b2))
	})
	if got := dialService(t, servicePort); got != "two" {
		t.Fatalf("through the proxy after the change: %q, want two", got)
	}
	if got := lookup(t, dnsAddr, "_e2e._tcp.zk.mesos.", dns.TypeSRV); !slices.Equal(got, []string{strconv.Itoa(b2)}) {
		t.Fatalf("SRV ports after the change %v, want [%d]", got, b2)
	}
}

// backend serves name to every connection and returns its port.
func backend(t *testing.T, name string) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(conn, name)
			conn.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().(*net.TCPAddr).Port
}

func dialService(t *testing.T, port int) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// lookup returns the answer's A addresses or SRV ports.
func lookup(t *testing.T, server, name string, qtype uint16) []string {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	r, _, err := (&dns.Client{Net: "udp", Timeout: 5 * time.Second}).Exchange(m, server)
	if err != nil {
		t.Fatalf("%s %s: %v", name, dns.TypeToString[qtype], err)
	}
	out := []string{}
	for _, rr := range r.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, rr.A.String())
		case *dns.SRV:
			out = append(out, fmt.Sprint(rr.Port))
		}
	}
	return out
}
