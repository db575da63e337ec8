package dnsserver

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/pacer-lb/pacer/discovery"
)

// FuzzServeDNS feeds packets to the query path, over UDP and TCP: it must
// never panic, and every answer must be a valid DNS response to the query,
// within the size the transport and the client allow.
func FuzzServeDNS(f *testing.F) {
	for _, q := range []struct {
		name  string
		qtype uint16
		edns  uint16
	}{
		{"_web-shop._tcp.marathon.mesos.", dns.TypeSRV, 0},
		{"_web-shop._tcp.marathon.mesos.", dns.TypeSRV, 4096},
		{"_http._web-shop._tcp.lb.mesos.", dns.TypeSRV, 1232},
		{"_big._tcp.marathon.mesos.", dns.TypeSRV, 0},
		{"_big._tcp.marathon.mesos.", dns.TypeSRV, 700},
		{"WEB-SHOP.marathon.mesos.", dns.TypeA, 0},
		{"v6.marathon.mesos.", dns.TypeAAAA, 512},
		{"kafka.zk.mesos.", dns.TypeANY, 0},
		{"mesos.", dns.TypeSOA, 0},
		{"mesos.", dns.TypeNS, 1232},
		{"nope.marathon.mesos.", dns.TypeA, 0},
		{"example.com.", dns.TypeA, 1232},
	} {
		m := question(q.name, q.qtype)
		if q.edns > 0 {
			m.SetEdns0(q.edns, true)
		}
		pkt, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(pkt)
	}
	f.Add([]byte{0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1}) // pointer loop
	f.Add([]byte{0xAB, 0xCD, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0})                 // no question
	// /big with 1,600 tasks: over TCP its SRV answer passes 16 KB, where
	// Additional owners cannot be pointers, and 64 KB, where it is cut.
	tb := fixtureTable()
	tb.Apply(discovery.Update{Source: "marathon", Apps: []*discovery.App{bigApp(1600)}})
	s := newTestServer(f, tb)
	w := s.newWorker(&counters{})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		// Only a packet shorter than a header, or a response, goes
		// unanswered (doc.go): anything else gets an answer, FORMERR at
		// least. A query miekg/dns reads as one question, opcode QUERY,
		// gets that question back.
		unanswered := len(pkt) < headerLen || pkt[2]&0x80 != 0
		var q dns.Msg
		oneQuestion := q.Unpack(pkt) == nil && !q.Response && q.Opcode == dns.OpcodeQuery && len(q.Question) == 1
		for _, tcp := range []bool{false, true} {
			out := w.handle(pkt, tcp)
			if out == nil {
				if !unanswered || oneQuestion {
					t.Fatalf("tcp=%v: no answer to query %x (%v)", tcp, pkt, &q)
				}
				continue
			}
			if unanswered {
				t.Fatalf("tcp=%v: answered %x, a response or a runt: %x", tcp, pkt, out)
			}
			r := new(dns.Msg)
			if err := r.Unpack(out); err != nil {
				t.Fatalf("tcp=%v: response does not unpack: %v\nquery %x\nresponse %x", tcp, err, pkt, out)
			}
			if !r.Response || r.Id != binary.BigEndian.Uint16(pkt) {
				t.Fatalf("tcp=%v: not a response to the query: %v", tcp, r)
			}
			if oneQuestion && r.Rcode != dns.RcodeFormatError && (len(r.Question) != 1 || !sameQuestion(r.Question[0], q.Question[0])) {
				t.Fatalf("tcp=%v: answer %v does not echo the question %v", tcp, r.Question, q.Question[0])
			}
			if !tcp && (len(out) > advertisedUDPSize || r.IsEdns0() == nil && len(out) > minUDPSize) {
				t.Fatalf("UDP response of %d bytes (EDNS %v)", len(out), r.IsEdns0())
			}
		}
	})
}

// sameQuestion reports whether a and b are the same question, the name
// compared as DNS compares names (case-insensitive).
func sameQuestion(a, b dns.Question) bool {
	return a.Qtype == b.Qtype && a.Qclass == b.Qclass && strings.EqualFold(a.Name, b.Name)
}
