package dnsserver

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/pacer-lb/pacer/discovery"
)

// rdatas returns the records' data (what follows the type in presentation
// format), sorted, so rotation does not matter.
func rdatas(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		if rr.Header().Rrtype == dns.TypeOPT {
			continue
		}
		f := strings.Fields(rr.String())
		out = append(out, dns.TypeToString[rr.Header().Rrtype]+" "+strings.Join(f[4:], " "))
	}
	slices.Sort(out)
	return out
}

func target(name, task, fw string) string {
	return taskLabel(name, task) + "." + fw + ".slave.mesos."
}

func TestResolve(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, fixtureTable())
	web1, web2 := target("web-shop", "web.1", "marathon"), target("web-shop", "web.2", "marathon")
	k0, k1 := target("kafka", "kafka-0", "zk"), target("kafka", "kafka-1", "zk")
	for _, tc := range []struct {
		name   string
		qname  string
		qtype  uint16
		rcode  int
		answer []string // sorted rdatas; nil means none
		extra  []string
		soa    bool // SOA in the authority section
	}{
		{name: "A", qname: "web-shop.marathon.mesos.", qtype: dns.TypeA,
			answer: []string{"A 10.0.0.1", "A 10.0.0.2"}},
		{name: "A any case", qname: "WEB-Shop.Marathon.MESOS.", qtype: dns.TypeA,
			answer: []string{"A 10.0.0.1", "A 10.0.0.2"}},
		{name: "SRV", qname: "_web-shop._tcp.marathon.mesos.", qtype: dns.TypeSRV,
			answer: []string{"SRV 0 1 31000 " + web1, "SRV 0 1 31001 " + web2, "SRV 0 1 31002 " + web1, "SRV 0 1 31003 " + web2},
			extra:  []string{"A 10.0.0.1", "A 10.0.0.2"}},
		{name: "named port SRV", qname: "_admin._web-shop._tcp.marathon.mesos.", qtype: dns.TypeSRV,
			answer: []string{"SRV 0 1 31002 " + web1, "SRV 0 1 31003 " + web2},
			extra:  []string{"A 10.0.0.1", "A 10.0.0.2"}},
		{name: "per-task name", qname: web1, qtype: dns.TypeA, answer: []string{"A 10.0.0.1"}},
		{name: "UDP SRV", qname: "_syslog._udp.marathon.mesos.", qtype: dns.TypeSRV,
			answer: []string{"SRV 0 1 31514 " + target("syslog", "syslog.1", "marathon")}, extra: []string{"A 10.0.0.3"}},
		{name: "UDP service has no _tcp", qname: "_syslog._tcp.marathon.mesos.", qtype: dns.TypeSRV,
			rcode: dns.RcodeNameError, soa: true},
		{name: "IPv6 AAAA", qname: "v6.marathon.mesos.", qtype: dns.TypeAAAA, answer: []string{"AAAA 2001:db8::1"}},
		{name: "IPv6 A is NODATA", qname: "v6.marathon.mesos.", qtype: dns.TypeA, soa: true},
		{name: "IPv6 SRV extra AAAA", qname: "_v6._tcp.marathon.mesos.", qtype: dns.TypeSRV,
			answer: []string{"SRV 0 1 8080 " + target("v6", "v6.1", "marathon")}, extra: []string{"AAAA 2001:db8::1"}},
		{name: "unhealthy only: known, no data", qname: "sick.marathon.mesos.", qtype: dns.TypeA, soa: true},
		{name: "unhealthy only SRV", qname: "_sick._tcp.marathon.mesos.", qtype: dns.TypeSRV, soa: true},
		{name: "lb SRV", qname: "_web-shop._tcp.lb.mesos.", qtype: dns.TypeSRV,
			answer: []string{"SRV 0 1 10000 lb.mesos.", "SRV 0 1 10001 lb.mesos."}, extra: []string{"A 192.0.2.53"}},
		{name: "lb named SRV", qname: "_http._web-shop._tcp.lb.mesos.", qtype: dns.TypeSRV,
			answer: []string{"SRV 0 1 10000 lb.mesos."}, extra: []string{"A 192.0.2.53"}},
		{name: "lb SRV, port lost to another app", qname: "_zzz._tcp.lb.mesos.", qtype: dns.TypeSRV, soa: true},
		{name: "lb SRV, port outside --ports", qname: "_out._tcp.lb.mesos.", qtype: dns.TypeSRV, soa: true},
		{name: "lb SRV, UDP is not proxied", qname: "_syslog._udp.lb.mesos.", qtype: dns.TypeSRV, soa: true},
		{name: "udp,tcp port under _tcp", qname: "_both._tcp.marathon.mesos.", qtype: dns.TypeSRV,
			answer: []string{"SRV 0 1 31007 " + target("both", "both.1", "marathon")}, extra: []string{"A 10.0.0.7"}},
		{name: "udp,tcp port under _udp", qname: "_both._udp.marathon.mesos.", qtype: dns.TypeSRV,
			answer: []string{"SRV 0 1 31007 " + target("both", "both.1", "marathon")}, extra: []string{"A 10.0.0.7"}},
		{name: "lb SRV, udp,tcp port: TCP proxied", qname: "_both._tcp.lb.mesos.", qtype: dns.TypeSRV,
			answer: []string{"SRV 0 1 10006 lb.mesos."}, extra: []string{"A 192.0.2.53"}},
		{name: "lb SRV, udp,tcp port: UDP not", qname: "_both._udp.lb.mesos.", qtype: dns.TypeSRV, soa: true},
		{name: "app without ports: its tasks' addresses", qname: "worker.marathon.mesos.", qtype: dns.TypeA, answer: []string{"A 10.0.0.8"}},
		{name: "app without ports has no SRV", qname: "_worker._tcp.marathon.mesos.", qtype: dns.TypeSRV, rcode: dns.RcodeNameError, soa: true},
		// pacer cannot read one of /typo's load-balancer labels, so it does
		// not route it; DNS needs no label and answers its healthy tasks as
		// mesos-dns would (a typo must not cost an app its names), but no
		// lb record: pacer does not serve it.
		{name: "app not understood: A of its healthy tasks", qname: "typo.marathon.mesos.", qtype: dns.TypeA, answer: []string{"A 10.0.0.9"}},
		{name: "app not understood: SRV of its healthy tasks", qname: "_typo._tcp.marathon.mesos.", qtype: dns.TypeSRV,
			answer: []string{"SRV 0 1 31009 " + target("typo", "typo.1", "marathon")}, extra: []string{"A 10.0.0.9"}},
		{name: "app not understood: named port SRV", qname: "_http._typo._tcp.marathon.mesos.", qtype: dns.TypeSRV,
			answer: []string{"SRV 0 1 31009 " + target("typo", "typo.1", "marathon")}, extra: []string{"A 10.0.0.9"}},
		{name: "app not understood: per-task name", qname: target("typo", "typo.1", "marathon"), qtype: dns.TypeA, answer: []string{"A 10.0.0.9"}},
		{name: "app not understood, no ports: A of its healthy tasks", qname: "typo-worker.marathon.mesos.", qtype: dns.TypeA, answer: []string{"A 10.0.0.10"}},
		{name: "app not understood: no lb SRV", qname: "_typo._tcp.lb.mesos.", qtype: dns.TypeSRV, soa: true},
		{name: "lb A", qname: "lb.mesos.", qtype: dns.TypeA, answer: []string{"A 192.0.2.53"}},
		{name: "zk A", qname: "kafka.zk.mesos.", qtype: dns.TypeA, answer: []string{"A 10.0.1.1", "A 10.0.1.2"}},
		{name: "zk SRV", qname: "_kafka._tcp.zk.mesos.", qtype: dns.TypeSRV,
			answer: []string{"SRV 0 1 9092 " + k0, "SRV 0 1 9092 " + k1}, extra: []string{"A 10.0.1.1", "A 10.0.1.2"}},
		{name: "zk service not under marathon", qname: "kafka.marathon.mesos.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, soa: true},
		{name: "NS", qname: "mesos.", qtype: dns.TypeNS, answer: []string{"NS ns1.mesos."}, extra: []string{"A 192.0.2.53"}},
		{name: "ns1 A", qname: "ns1.mesos.", qtype: dns.TypeA, answer: []string{"A 192.0.2.53"}},
		{name: "NODATA for another type", qname: "web-shop.marathon.mesos.", qtype: dns.TypeMX, soa: true},
		{name: "NODATA for SRV name asked A", qname: "_web-shop._tcp.marathon.mesos.", qtype: dns.TypeA, soa: true},
		{name: "empty non-terminal", qname: "marathon.mesos.", qtype: dns.TypeA, soa: true},
		{name: "empty non-terminal _tcp", qname: "_tcp.marathon.mesos.", qtype: dns.TypeSRV, soa: true},
		{name: "NXDOMAIN", qname: "nope.marathon.mesos.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: true},
		{name: "NXDOMAIN deep", qname: "a.b.c.d.e.marathon.mesos.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: true},
		{name: "NXDOMAIN per-task", qname: "web-shop-aaaaa.marathon.slave.mesos.", qtype: dns.TypeA,
			rcode: dns.RcodeNameError, soa: true},
		{name: "REFUSED outside the zone", qname: "example.com.", qtype: dns.TypeA, rcode: dns.RcodeRefused},
		{name: "REFUSED suffix that is not a label", qname: "xmesos.", qtype: dns.TypeA, rcode: dns.RcodeRefused},
		{name: "REFUSED AXFR", qname: "mesos.", qtype: dns.TypeAXFR, rcode: dns.RcodeRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, _ := exchange(t, s, question(tc.qname, tc.qtype), false)
			if r.Rcode != tc.rcode {
				t.Fatalf("rcode = %s, want %s\n%v", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode], r)
			}
			if got := rdatas(r.Answer); !slices.Equal(got, tc.answer) {
				t.Errorf("answer = %q, want %q", got, tc.answer)
			}
			if got := rdatas(r.Extra); !slices.Equal(got, tc.extra) {
				t.Errorf("extra = %q, want %q", got, tc.extra)
			}
			if gotSOA := len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == dns.TypeSOA; gotSOA != tc.soa {
				t.Errorf("authority = %v, want SOA: %v", r.Ns, tc.soa)
			}
			if r.Authoritative != (tc.rcode != dns.RcodeRefused) {
				t.Errorf("AA = %v", r.Authoritative)
			}
			if r.RecursionAvailable {
				t.Error("RA set: we never recurse")
			}
			if r.Question[0].Name != tc.qname {
				t.Errorf("question = %q, want %q as asked", r.Question[0].Name, tc.qname)
			}
			for _, rr := range r.Answer {
				if rr.Header().Ttl != 5 {
					t.Errorf("TTL = %d, want 5", rr.Header().Ttl)
				}
			}
		})
	}
}

func TestSOA(t *testing.T) {
	t.Parallel()
	tb := fixtureTable()
	s := newTestServer(t, tb)
	r, _ := exchange(t, s, question("mesos.", dns.TypeSOA), false)
	if len(r.Answer) != 1 {
		t.Fatalf("answer = %v", r.Answer)
	}
	soa := r.Answer[0].(*dns.SOA)
	if soa.Ns != "ns1.mesos." || soa.Mbox != "root.ns1.mesos." || soa.Minttl != 5 {
		t.Errorf("SOA = %v", soa)
	}
	tb.Apply(discovery.Update{Source: "marathon", Removed: []string{"/sick"}})
	r, _ = exchange(t, s, question("nope.mesos.", dns.TypeA), false)
	if got := r.Ns[0].(*dns.SOA).Serial; got <= soa.Serial {
		t.Errorf("serial after a table change = %d, want more than %d", got, soa.Serial)
	}
}

func TestAnswerChangesWithTable(t *testing.T) {
	t.Parallel()
	tb := fixtureTable()
	s := newTestServer(t, tb)
	q := question("_web-shop._tcp.marathon.mesos.", dns.TypeSRV)
	if r, _ := exchange(t, s, q, false); len(r.Answer) != 4 {
		t.Fatalf("answer = %v", r.Answer)
	}
	// web.2 turns unhealthy: the source republishes the app without it.
	web := tb.Snapshot().App("/shop/web")
	next := *web
	next.Services = nil
	for _, svc := range web.Services {
		c := *svc
		c.Backends = c.Backends[:1]
		next.Services = append(next.Services, &c)
	}
	tb.Apply(discovery.Update{Source: "marathon", Apps: []*discovery.App{&next}})
	r, _ := exchange(t, s, q, false)
	if len(r.Answer) != 2 {
		t.Fatalf("answer right after the change = %v, want web.1's two ports", r.Answer)
	}
	for _, rr := range r.Answer {
		if rr.(*dns.SRV).Target != target("web-shop", "web.1", "marathon") {
			t.Errorf("unhealthy task still served: %v", rr)
		}
	}
}

func TestRotation(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, fixtureTable())
	firsts := map[string]bool{}
	q := question("_web-shop._tcp.marathon.mesos.", dns.TypeSRV)
	for range 4 {
		r, _ := exchange(t, s, q, false)
		firsts[r.Answer[0].String()] = true
		// Additional owners must still name the right targets after rotation.
		if got := rdatas(r.Extra); len(got) != 2 {
			t.Fatalf("extra = %v", r.Extra)
		}
		for _, x := range r.Extra {
			a := x.(*dns.A)
			if want := target("web-shop", map[string]string{"10.0.0.1": "web.1", "10.0.0.2": "web.2"}[a.A.String()], "marathon"); a.Hdr.Name != want {
				t.Errorf("extra %v names %s, want %s", a, a.Hdr.Name, want)
			}
		}
	}
	if len(firsts) != 4 {
		t.Errorf("4 queries started with %d distinct records, want 4", len(firsts))
	}
}

func TestTruncation(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, fixtureTable())
	q := question("_big._tcp.marathon.mesos.", dns.TypeSRV)

	r, n := exchange(t, s, q, false)
	if !r.Truncated || n > 512 || len(r.Answer) == 0 || len(r.Extra) != 0 {
		t.Errorf("UDP without EDNS: TC=%v, %d bytes, %d answers, %d extra", r.Truncated, n, len(r.Answer), len(r.Extra))
	}
	q.SetEdns0(4096, false)
	r, n = exchange(t, s, q, false)
	if !r.Truncated || n > 1232 || r.IsEdns0() == nil || r.IsEdns0().UDPSize() != 1232 {
		t.Errorf("UDP with EDNS 4096: TC=%v, %d bytes, OPT %v", r.Truncated, n, r.IsEdns0())
	}
	r, _ = exchange(t, s, q, true)
	if r.Truncated || len(r.Answer) != 100 || len(r.Extra) != 101 {
		t.Errorf("TCP: TC=%v, %d answers, %d extra; want all 100 and 100 A + OPT", r.Truncated, len(r.Answer), len(r.Extra))
	}

	// 4 SRV records fit in 512 bytes, their 2 A records too; a client that
	// offers 512 exactly gets them all without TC.
	q = question("_web-shop._tcp.marathon.mesos.", dns.TypeSRV)
	if r, n = exchange(t, s, q, false); r.Truncated || len(r.Extra) != 2 || n > 512 {
		t.Errorf("small answer: TC=%v, %d extra, %d bytes", r.Truncated, len(r.Extra), n)
	}
}

func TestDropsAdditionalBeforeTruncating(t *testing.T) {
	t.Parallel()
	tb := discovery.NewTable()
	// 8 SRV records of 45 bytes fit in 512 bytes, their 8 A records of 16
	// bytes do not: as many as fit go, without TC.
	tb.Apply(discovery.Update{Source: "marathon", Apps: []*discovery.App{bigApp(8)}})
	s := newTestServer(t, tb)
	want := bigTargets(8)
	r, n := exchange(t, s, question("_big._tcp.marathon.mesos.", dns.TypeSRV), false)
	if r.Truncated || len(r.Answer) != 8 || len(r.Extra) == 0 || len(r.Extra) == 8 || n > 512 || n+16 <= 512 {
		t.Errorf("TC=%v, %d answers, %d extra, %d bytes; want 8 answers, as many extra as fit, no TC", r.Truncated, len(r.Answer), len(r.Extra), n)
	}
	for _, x := range r.Extra {
		if a, ok := x.(*dns.A); !ok || want[a.Hdr.Name].Addr() != netip.AddrFrom4([4]byte(a.A.To4())) {
			t.Errorf("additional %v is not its target's address", x)
		}
	}
}

func TestMalformed(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, fixtureTable())
	w := s.newWorker(&counters{})
	good, _ := question("web-shop.marathon.mesos.", dns.TypeA).Pack()
	resp := func() []byte {
		m := question("web-shop.marathon.mesos.", dns.TypeA)
		m.Response = true
		b, _ := m.Pack()
		return b
	}()
	for _, tc := range []struct {
		name  string
		pkt   []byte
		rcode int // -1: no answer
	}{
		{"empty", nil, -1},
		{"short header", good[:11], -1},
		{"a response", resp, -1},
		{"header only", good[:12], dns.RcodeFormatError},
		{"cut question", good[:20], dns.RcodeFormatError},
		{"two questions", append(append([]byte{}, good[:5]...), append([]byte{2}, good[6:]...)...), dns.RcodeFormatError},
		{"notify", append(append([]byte{}, good[:2]...), append([]byte{4 << 3}, good[3:]...)...), dns.RcodeNotImplemented},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := w.handle(tc.pkt, false)
			if tc.rcode < 0 {
				if out != nil {
					t.Fatalf("answered %x", out)
				}
				return
			}
			r := new(dns.Msg)
			if err := r.Unpack(out); err != nil {
				t.Fatal(err)
			}
			if r.Rcode != tc.rcode {
				t.Errorf("rcode = %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
			}
			if want := binary.BigEndian.Uint16(tc.pkt); r.Id != want {
				t.Errorf("id = %d, want %d", r.Id, want)
			}
		})
	}
}

// RFC 6891 6.1.1: more than one OPT is FORMERR, and an error answered to
// a query with one OPT carries an OPT too.
func TestEDNSErrors(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, fixtureTable())
	w := s.newWorker(&counters{})
	twoOPT := question("web-shop.marathon.mesos.", dns.TypeA)
	twoOPT.SetEdns0(1232, false)
	twoOPT.Extra = append(twoOPT.Extra, &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT, Class: 512}})
	notify := question("web-shop.marathon.mesos.", dns.TypeA)
	notify.Opcode = dns.OpcodeNotify
	notify.SetEdns0(1232, false)
	twoQ := question("web-shop.marathon.mesos.", dns.TypeA)
	twoQ.Question = append(twoQ.Question, twoQ.Question[0])
	twoQ.SetEdns0(1232, false)
	for _, tc := range []struct {
		name  string
		m     *dns.Msg
		rcode int
		opt   bool
	}{
		{"two OPT records", twoOPT, dns.RcodeFormatError, false},
		{"notify with EDNS", notify, dns.RcodeNotImplemented, true},
		{"two questions with EDNS", twoQ, dns.RcodeFormatError, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkt, err := tc.m.Pack()
			if err != nil {
				t.Fatal(err)
			}
			r := new(dns.Msg)
			if err := r.Unpack(w.handle(pkt, false)); err != nil {
				t.Fatal(err)
			}
			if r.Rcode != tc.rcode || (r.IsEdns0() != nil) != tc.opt {
				t.Errorf("rcode %s, OPT %v; want %s, OPT %v", dns.RcodeToString[r.Rcode], r.IsEdns0() != nil, dns.RcodeToString[tc.rcode], tc.opt)
			}
		})
	}
}

func TestEDNSVersion(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, fixtureTable())
	q := question("web-shop.marathon.mesos.", dns.TypeA)
	q.SetEdns0(1232, false)
	q.IsEdns0().SetVersion(1)
	r, _ := exchange(t, s, q, false)
	if r.Rcode != dns.RcodeBadVers || len(r.Answer) != 0 {
		t.Errorf("rcode = %d, answer %v; want BADVERS", r.Rcode, r.Answer)
	}
}

func TestCompressedQuestion(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, fixtureTable())
	// A question name that is a pointer to itself loops: FORMERR, no hang.
	pkt := []byte{0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1}
	w := s.newWorker(&counters{})
	r := new(dns.Msg)
	if err := r.Unpack(w.handle(pkt, false)); err != nil || r.Rcode != dns.RcodeFormatError {
		t.Errorf("pointer loop: %v, %v", r, err)
	}
}

func TestStats(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, fixtureTable())
	c := &counters{}
	s.counters = append(s.counters, c)
	w := s.newWorker(c)
	for _, q := range []*dns.Msg{question("lb.mesos.", dns.TypeA), question("lb.mesos.", dns.TypeA), question("x.org.", dns.TypeSRV)} {
		b, _ := q.Pack()
		w.handle(b, false)
	}
	st := s.Stats()
	if st.Queries["A"] != 2 || st.Queries["SRV"] != 1 || st.Responses["NOERROR"] != 2 || st.Responses["REFUSED"] != 1 ||
		st.CacheHits != 1 || st.CacheMisses != 1 {
		t.Errorf("stats = %+v", st)
	}
}

// A name longer than a per-task label allows is cut; the target still
// resolves. (A 63-byte name has no SRV name: "_" makes its label 64.)
func TestLongNameTarget(t *testing.T) {
	t.Parallel()
	id := "/" + strings.Repeat("long", 15)
	tb := discovery.NewTable()
	tb.Apply(discovery.Update{Source: "marathon", Apps: []*discovery.App{{ID: id, Services: []*discovery.Service{
		service(id, 0, 10000, "", discovery.ProtoTCP, backend("long.1", "10.9.9.9:31000")),
	}}}})
	s := newTestServer(t, tb)
	name := discovery.AppName(id)
	r, _ := exchange(t, s, question("_"+name+"._tcp.marathon.mesos.", dns.TypeSRV), false)
	if len(r.Answer) != 1 {
		t.Fatalf("SRV = %v", r)
	}
	tgt := r.Answer[0].(*dns.SRV).Target
	if l, _, _ := strings.Cut(tgt, "."); len(l) > 63 {
		t.Errorf("target label %q longer than 63", l)
	}
	if r, _ = exchange(t, s, question(tgt, dns.TypeA), false); len(r.Answer) != 1 {
		t.Errorf("target %s: %v", tgt, r)
	}
}

// Withdraw takes this instance out of the lb names, cached answers
// included, and leaves every other name as it was.
func TestWithdraw(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, fixtureTable())
	names := []struct {
		qname string
		qtype uint16
	}{{"lb.mesos.", dns.TypeA}, {"_web-shop._tcp.lb.mesos.", dns.TypeSRV}}
	for _, n := range names {
		for range 2 { // the second from the cache
			if r, _ := exchange(t, s, question(n.qname, n.qtype), false); r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
				t.Fatalf("%s before Withdraw: %v", n.qname, r)
			}
		}
	}
	s.Withdraw()
	for _, n := range names {
		if r, _ := exchange(t, s, question(n.qname, n.qtype), false); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
			t.Fatalf("%s after Withdraw: %v; want no record", n.qname, r)
		}
	}
	if r, _ := exchange(t, s, question("web-shop.marathon.mesos.", dns.TypeA), false); len(r.Answer) == 0 {
		t.Fatalf("a task name after Withdraw: %v; want its answer", r)
	}
}

// Additional owners past the reach of compression pointers (16 KB) are
// written with the longest suffix they share with the first answer record's
// target as a pointer, or whole: here a third of the targets share
// "marathon.slave.mesos" with it, a third only "slave.mesos", a third
// nothing. Every owner must still name its target, whatever the rotation.
func TestFarAdditionalOwners(t *testing.T) {
	t.Parallel()
	z := zone{domain: "mesos", labels: 1}
	res := result{rotate: true}
	addrs := map[string]netip.Addr{}
	for i := range 900 {
		name := fmt.Sprintf("t%d.%s", i, []string{"marathon.slave.mesos", "zk.slave.mesos", "example.org"}[i%3])
		addrs[name+"."] = netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)})
		res.answer = append(res.answer, record{typ: dns.TypeSRV, port: uint16(i), target: name})
		res.extra = append(res.extra, extra{name: name, addr: addrs[name+"."]})
	}
	qname := make([]byte, 256)
	n, err := dns.PackDomainName("_x._tcp.marathon.mesos.", qname, 0, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	e := newPacker(qname[:n], 5).pack(res, &z, 1)
	q := query{id: 1, question: append(qname[:n:n], 0, byte(dns.TypeSRV), 0, 1), qtype: dns.TypeSRV, qclass: 1}
	out := make([]byte, maxTCPSize)
	for i := range 5 {
		if i == 3 {
			e.rot.Add(600) // rotate far: the first record now lies past 16 KB in ans
		}
		size := assemble(out, &q, e, maxTCPSize, &counters{})
		r := new(dns.Msg)
		if err := r.Unpack(out[:size]); err != nil {
			t.Fatalf("query %d: %d bytes do not unpack: %v", i, size, err)
		}
		if r.Truncated || len(r.Answer) != 900 || len(r.Extra) != 900 || size <= maxPointer {
			t.Fatalf("query %d: TC=%v, %d answers, %d extra in %d bytes; want 900 and 900 past 16 KB", i, r.Truncated, len(r.Answer), len(r.Extra), size)
		}
		for _, rr := range r.Answer {
			srv := rr.(*dns.SRV)
			if want, _ := strconv.Atoi(strings.TrimPrefix(strings.Split(srv.Target, ".")[0], "t")); int(srv.Port) != want {
				t.Fatalf("query %d: %v: target of another port", i, srv)
			}
		}
		for _, rr := range r.Extra {
			a, ok := rr.(*dns.A)
			if !ok || addrs[a.Hdr.Name] != netip.AddrFrom4([4]byte(a.A.To4())) {
				t.Fatalf("query %d: additional %v: want %s's address %v", i, rr, rr.Header().Name, addrs[rr.Header().Name])
			}
		}
	}
}

// An app without ports leaves DNS when it is removed, and answers from its
// services once it gets ports.
func TestPortlessAppFollowsTheTable(t *testing.T) {
	t.Parallel()
	tb := fixtureTable()
	s := newTestServer(t, tb)
	ask := func() (int, []string) {
		r, _ := exchange(t, s, question("worker.marathon.mesos.", dns.TypeA), false)
		return r.Rcode, rdatas(r.Answer)
	}
	if rc, got := ask(); rc != dns.RcodeSuccess || !slices.Equal(got, []string{"A 10.0.0.8"}) {
		t.Fatalf("before: %s %q", dns.RcodeToString[rc], got)
	}
	tb.Apply(discovery.Update{Source: "marathon", Apps: []*discovery.App{{ID: "/worker", Services: []*discovery.Service{
		service("/worker", 0, 10007, "", discovery.ProtoTCP, backend("worker.3", "10.0.0.9:31009")),
	}}}})
	if rc, got := ask(); rc != dns.RcodeSuccess || !slices.Equal(got, []string{"A 10.0.0.9"}) {
		t.Fatalf("with a port: %s %q, want the service's backend only", dns.RcodeToString[rc], got)
	}
	tb.Apply(discovery.Update{Source: "marathon", Removed: []string{"/worker"}})
	if rc, got := ask(); rc != dns.RcodeNameError {
		t.Fatalf("removed: %s %q, want NXDOMAIN", dns.RcodeToString[rc], got)
	}
}

// An EDNS version pacer does not speak is counted as BADVERS, the name the
// Stats doc and the metric give it: rcode 16 is also TSIG's BADSIG, which
// is what miekg/dns names it, and which pacer never answers.
func TestStatsNameBadVers(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, fixtureTable())
	c := &counters{}
	s.counters = append(s.counters, c)
	q := question("web-shop.marathon.mesos.", dns.TypeA)
	q.SetEdns0(1232, false)
	q.IsEdns0().SetVersion(1)
	b, _ := q.Pack()
	s.newWorker(c).handle(b, false)
	if st := s.Stats(); st.Responses["BADVERS"] != 1 || len(st.Responses) != 1 {
		t.Errorf("responses = %v, want BADVERS: 1", st.Responses)
	}
}

// The answer's OPT carries the query's DO bit back (RFC 3225 3), whatever
// the answer: one from the table, NXDOMAIN, REFUSED, BADVERS (the parser's
// slow path). pacer signs nothing; the bit says it saw the request.
func TestEDNSDOBitEchoed(t *testing.T) {
	t.Parallel()
	_, udp, _ := runServer(t, fixtureTable())
	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	for _, tc := range []struct {
		name    string
		qname   string
		version uint8
		rcode   int
	}{
		{"answer", "web-shop.marathon.mesos.", 0, dns.RcodeSuccess},
		{"NXDOMAIN", "nothing.marathon.mesos.", 0, dns.RcodeNameError},
		{"REFUSED", "example.com.", 0, dns.RcodeRefused},
		{"BADVERS", "web-shop.marathon.mesos.", 1, dns.RcodeBadVers},
	} {
		for _, do := range []bool{true, false} {
			q := question(tc.qname, dns.TypeA)
			q.SetEdns0(1232, do)
			q.IsEdns0().SetVersion(tc.version)
			r, _, err := c.Exchange(q, udp)
			if err != nil {
				t.Fatalf("%s, DO %v: %v", tc.name, do, err)
			}
			opt := r.IsEdns0()
			if r.Rcode != tc.rcode || opt == nil || opt.Do() != do {
				t.Errorf("%s, DO %v: rcode %s, OPT %v; want %s and the DO bit echoed",
					tc.name, do, dns.RcodeToString[r.Rcode], opt, dns.RcodeToString[tc.rcode])
			}
		}
	}
}
