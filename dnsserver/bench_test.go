package dnsserver

import (
	"context"
	"net"
	"testing"

	"github.com/miekg/dns"
	"go.uber.org/zap"
)

// BenchmarkServeCached measures the query path for an answer in the cache:
// parse, look up, rotate, fit, patch. It must not allocate.
func BenchmarkServeCached(b *testing.B) {
	for _, bc := range []struct {
		name  string
		qname string
		qtype uint16
	}{
		{"SRV", "_web-shop._tcp.marathon.mesos.", dns.TypeSRV},
		{"A", "Web-Shop.marathon.mesos.", dns.TypeA},
		{"SRV-100-truncated", "_big._tcp.marathon.mesos.", dns.TypeSRV},
		{"NXDOMAIN", "nope.marathon.mesos.", dns.TypeA},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := newTestServer(b, fixtureTable())
			w := s.newWorker(&counters{})
			m := question(bc.qname, bc.qtype)
			m.SetEdns0(1232, false)
			pkt, err := m.Pack()
			if err != nil {
				b.Fatal(err)
			}
			if w.handle(pkt, false) == nil {
				b.Fatal("no answer")
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				w.handle(pkt, false)
			}
		})
	}
}

// BenchmarkServeUDP measures a round trip through a real socket on
// loopback, client included; the allocations reported are the server's and
// the client's together.
func BenchmarkServeUDP(b *testing.B) {
	tb := fixtureTable()
	ready := make(chan net.Addr, 1)
	s, err := New(Config{Addr: "127.0.0.1:0", UDPSockets: 1, OnListening: func(u, _ net.Addr) { ready <- u }}, tb, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	c, err := net.Dial("udp", (<-ready).String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	m := question("_web-shop._tcp.marathon.mesos.", dns.TypeSRV)
	m.SetEdns0(1232, false)
	pkt, _ := m.Pack()
	buf := make([]byte, 1232)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(pkt); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
}
