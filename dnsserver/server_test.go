package dnsserver

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap/zaptest"

	"github.com/pacer-lb/pacer/discovery"
)

// runServer starts a server on 127.0.0.1:0 and returns its UDP and TCP
// addresses once it listens; the test's cleanup stops it.
func runServer(t *testing.T, tb *discovery.Table, opts ...func(*Server)) (s *Server, udp, tcp string) {
	t.Helper()
	type addrs struct{ udp, tcp net.Addr }
	ready := make(chan addrs, 1)
	s, err := New(Config{
		Addr:        "127.0.0.1:0",
		Advertise:   testAdvertise(),
		UDPSockets:  2,
		OnListening: func(u, t net.Addr) { ready <- addrs{u, t} },
	}, tb, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		o(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case a := <-ready:
		return s, a.udp.String(), a.tcp.String()
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	return nil, "", ""
}

func TestServeSockets(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		plain bool
	}{{"batched UDP", false}, {"plain UDP", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testServeSockets(t, func(s *Server) { s.plainUDP = tc.plain })
		})
	}
}

func testServeSockets(t *testing.T, opt func(*Server)) {
	tb := fixtureTable()
	_, udp, tcp := runServer(t, tb, opt)
	if udp != tcp {
		t.Fatalf("UDP on %s, TCP on %s: want one port", udp, tcp)
	}
	udpc := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	tcpc := &dns.Client{Net: "tcp", Timeout: 5 * time.Second}
	ask := func(c *dns.Client, m *dns.Msg) *dns.Msg {
		t.Helper()
		r, _, err := c.Exchange(m, udp)
		if err != nil {
			t.Fatalf("%s %s: %v", c.Net, m.Question[0].String(), err)
		}
		return r
	}

	r := ask(udpc, question("_web-shop._tcp.marathon.mesos.", dns.TypeSRV))
	if len(r.Answer) != 4 || len(r.Extra) != 2 {
		t.Errorf("SRV over UDP: %v", r)
	}
	if r = ask(udpc, question("nope.marathon.mesos.", dns.TypeA)); r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 {
		t.Errorf("NXDOMAIN: %v", r)
	}
	if r = ask(udpc, question("example.com.", dns.TypeA)); r.Rcode != dns.RcodeRefused {
		t.Errorf("REFUSED: %v", r)
	}

	// Health: web.2 leaves the table; the very next answer lacks it.
	web := *tb.Snapshot().App("/shop/web")
	svc := *web.Services[0]
	svc.Backends = svc.Backends[:1]
	web.Services = []*discovery.Service{&svc}
	tb.Apply(discovery.Update{Source: "marathon", Apps: []*discovery.App{&web}})
	if r = ask(udpc, question("web-shop.marathon.mesos.", dns.TypeA)); len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "10.0.0.1" {
		t.Errorf("after web.2 left: %v", r.Answer)
	}

	// 100 tasks: UDP truncates, TCP is complete.
	big := question("_big._tcp.marathon.mesos.", dns.TypeSRV)
	if r = ask(udpc, big); !r.Truncated {
		t.Errorf("100 SRV over UDP not truncated: %d answers", len(r.Answer))
	}
	if r = ask(tcpc, big); r.Truncated || len(r.Answer) != 100 || len(r.Extra) != 100 {
		t.Errorf("100 SRV over TCP: TC=%v, %d answers, %d extra", r.Truncated, len(r.Answer), len(r.Extra))
	}

	// Several queries on one TCP connection.
	conn, err := tcpc.Dial(tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, name := range []string{"lb.mesos.", "ns1.mesos.", "kafka.zk.mesos."} {
		q := question(name, dns.TypeA)
		if err := conn.WriteMsg(q); err != nil {
			t.Fatal(err)
		}
		r, err := conn.ReadMsg()
		if err != nil || r.Id != q.Id || len(r.Answer) == 0 {
			t.Fatalf("query %s on a shared connection: %v, %v", name, r, err)
		}
	}

	// A header without a question: FORMERR over UDP.
	raw, err := net.Dial("udp", udp)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Write([]byte{0xAB, 0xCD, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	n, err := raw.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	m := new(dns.Msg)
	if err := m.Unpack(buf[:n]); err != nil || m.Rcode != dns.RcodeFormatError || m.Id != 0xABCD {
		t.Errorf("malformed query: %v, %v", m, err)
	}
}

// dig runs dig against the server and returns its output.
func dig(t *testing.T, addr string, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("dig")
	if err != nil {
		t.Fatal("dig not found: run `make test` (it installs Debian's bind9-dnsutils) or apt-get install bind9-dnsutils")
	}
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, append([]string{"@" + host, "-p", port, "+tries=1", "+time=5"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("dig %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func TestDig(t *testing.T) {
	t.Parallel()
	tb := fixtureTable()
	_, addr, _ := runServer(t, tb)
	web1, web2 := target("web-shop", "web.1", "marathon"), target("web-shop", "web.2", "marathon")
	for _, tc := range []struct {
		name string
		args []string
		want []string // substrings of dig's output, with runs of white space as one space
	}{
		{"A", []string{"web-shop.marathon.mesos", "A"}, []string{"status: NOERROR", "flags: qr aa rd;", "10.0.0.1", "10.0.0.2"}},
		{"SRV with additional", []string{"_web-shop._tcp.marathon.mesos", "SRV"},
			[]string{"ANSWER: 4, AUTHORITY: 0, ADDITIONAL: 3", "0 1 31000 " + web1, "0 1 31003 " + web2, web1 + " 5 IN A 10.0.0.1"}},
		{"named port", []string{"_admin._web-shop._tcp.marathon.mesos", "SRV"}, []string{"ANSWER: 2,", "31002"}},
		{"per-task target", []string{web2, "A"}, []string{"ANSWER: 1,", "10.0.0.2"}},
		{"udp", []string{"_syslog._udp.marathon.mesos", "SRV"}, []string{"31514"}},
		{"lb", []string{"_web-shop._tcp.lb.mesos", "SRV"}, []string{"0 1 10000 lb.mesos.", "lb.mesos. 5 IN A 192.0.2.53"}},
		{"zk", []string{"_kafka._tcp.zk.mesos", "SRV"}, []string{"ANSWER: 2,", "9092"}},
		{"SOA", []string{"mesos", "SOA"}, []string{"ns1.mesos. root.ns1.mesos."}},
		{"NS", []string{"mesos", "NS"}, []string{"ns1.mesos.", "192.0.2.53"}},
		{"case", []string{"WEB-SHOP.Marathon.Mesos", "A"}, []string{"status: NOERROR", "WEB-SHOP.Marathon.Mesos."}},
		{"NXDOMAIN", []string{"nope.marathon.mesos", "A"}, []string{"status: NXDOMAIN", "AUTHORITY: 1", "SOA"}},
		{"NODATA", []string{"web-shop.marathon.mesos", "TXT"}, []string{"status: NOERROR", "ANSWER: 0, AUTHORITY: 1"}},
		{"unhealthy", []string{"sick.marathon.mesos", "A"}, []string{"status: NOERROR", "ANSWER: 0"}},
		{"REFUSED", []string{"example.com", "A"}, []string{"status: REFUSED"}},
		{"no EDNS", []string{"+noedns", "lb.mesos", "A"}, []string{"192.0.2.53"}},
		{"truncated over UDP", []string{"+ignore", "+noedns", "_big._tcp.marathon.mesos", "SRV"}, []string{"flags: qr aa tc rd;"}},
		{"complete over TCP", []string{"+tcp", "_big._tcp.marathon.mesos", "SRV"}, []string{"ANSWER: 100, AUTHORITY: 0, ADDITIONAL: 101"}},
		{"falls back to TCP", []string{"_big._tcp.marathon.mesos", "SRV"}, []string{"ANSWER: 100,"}},
		{"EDNS advertised", []string{"lb.mesos", "A"}, []string{"udp: 1232"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out := dig(t, addr, tc.args...)
			flat := strings.Join(strings.Fields(out), " ")
			for _, w := range tc.want {
				if !strings.Contains(flat, w) {
					t.Errorf("dig %v lacks %q:\n%s", tc.args, w, out)
				}
			}
		})
	}
}

func TestShutdown(t *testing.T) {
	t.Parallel()
	s, _, tcp := runServer(t, fixtureTable())
	c, err := net.Dial("tcp", tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// The idle connection was closed rather than waited for.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("connection still open after Shutdown")
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

func TestAPI(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, fixtureTable())
	srv := httptest.NewServer(s.APIHandler())
	defer srv.Close()
	get := func(path string, v any) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("GET %s: %s %s", path, resp.Status, resp.Header.Get("Content-Type"))
		}
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	var svcs []apiService
	get("/v1/services/_admin._web-shop._tcp.marathon.mesos.", &svcs)
	if len(svcs) != 2 || svcs[0].Service != "_admin._web-shop._tcp.marathon.mesos." || svcs[0].Port != "31002" ||
		svcs[0].IP != "10.0.0.1" || svcs[0].Host != target("web-shop", "web.1", "marathon") {
		t.Errorf("services = %+v", svcs)
	}
	var hosts []apiHost
	get("/v1/hosts/Web-Shop.marathon.mesos", &hosts)
	if len(hosts) != 2 || hosts[0].Host != "web-shop.marathon.mesos." || hosts[0].IP != "10.0.0.1" {
		t.Errorf("hosts = %+v", hosts)
	}
	get("/v1/hosts/nope.marathon.mesos", &hosts)
	if len(hosts) != 1 || hosts[0] != (apiHost{}) {
		t.Errorf("unknown host = %+v, want one empty element as mesos-dns", hosts)
	}
}

// bigTargets maps the SRV targets of bigApp(n) to their task's address and port.
func bigTargets(n int) map[string]netip.AddrPort {
	m := map[string]netip.AddrPort{}
	for _, b := range bigApp(n).Services[0].Backends {
		m[target("big", b.TaskID, "marathon")] = b.Addr
	}
	return m
}

// askTCP sends q on conn and returns the response and its length. The
// response must unpack, and hold exactly the records its header counts,
// whole, with nothing after them.
func askTCP(t *testing.T, conn *dns.Conn, q *dns.Msg) (*dns.Msg, int) {
	t.Helper()
	if err := conn.WriteMsg(q); err != nil {
		t.Fatal(err)
	}
	raw, err := conn.ReadMsgHeader(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := new(dns.Msg)
	if err := r.Unpack(raw); err != nil {
		t.Fatalf("%s: a response of %d bytes does not unpack: %v", q.Question[0].Name, len(raw), err)
	}
	_, off, err := dns.UnpackDomainName(raw, headerLen)
	if err != nil {
		t.Fatal(err)
	}
	off += 4
	counts := int(binary.BigEndian.Uint16(raw[6:])) + int(binary.BigEndian.Uint16(raw[8:])) + int(binary.BigEndian.Uint16(raw[10:]))
	for i := range counts {
		if _, off, err = dns.UnpackRR(raw, off); err != nil {
			t.Fatalf("record %d of %d: %v", i, counts, err)
		}
	}
	if off != len(raw) {
		t.Fatalf("%d bytes after the %d records the header counts", len(raw)-off, counts)
	}
	return r, len(raw)
}

// TestTCPLargeAnswers asks through the TCP listener for SRV answers longer
// than compression pointers reach (16 KB) and longer than a message (64 KB):
// every record the client gets must be whole and name the right task, and
// TC must tell it when records are missing.
func TestTCPLargeAnswers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		tasks int
		trunc bool // TC, and fewer answers than tasks
		// extra is how many targets' addresses the Additional section
		// holds: "all", "some" (as many as fit), or "none".
		extra string
	}{
		{500, false, "all"},   // 22 KB of SRV and 8 KB of A: all of it
		{1000, false, "some"}, // 45 KB of SRV fit, 16 KB of A do not: those that fit, no TC
		{1500, true, "none"},  // 67 KB of SRV: as many whole records as fit, TC
	} {
		t.Run(fmt.Sprint(tc.tasks), func(t *testing.T) {
			t.Parallel()
			tb := discovery.NewTable()
			tb.Apply(discovery.Update{Source: "marathon", Apps: []*discovery.App{bigApp(tc.tasks)}})
			_, _, addr := runServer(t, tb)
			want := bigTargets(tc.tasks)
			conn, err := (&dns.Client{Net: "tcp", Timeout: 5 * time.Second}).Dial(addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			// Answers rotate: each query puts other records past 16 KB.
			for i := range 4 {
				q := question("_big._tcp.marathon.mesos.", dns.TypeSRV)
				if i%2 == 1 {
					q.SetEdns0(1232, false)
				}
				r, n := askTCP(t, conn, q)
				if r.Truncated != tc.trunc {
					t.Errorf("query %d: TC = %v, want %v (%d answers, %d bytes)", i, r.Truncated, tc.trunc, len(r.Answer), n)
				}
				switch {
				case !tc.trunc && len(r.Answer) != tc.tasks:
					t.Errorf("query %d: %d answers, want %d", i, len(r.Answer), tc.tasks)
				case tc.trunc && (len(r.Answer) >= tc.tasks || n+(n-headerLen)/len(r.Answer) <= maxTCPSize):
					t.Errorf("query %d: %d answers in %d bytes, want as many as fit in %d", i, len(r.Answer), n, maxTCPSize)
				}
				seen := map[netip.AddrPort]bool{}
				for _, rr := range r.Answer {
					srv, ok := rr.(*dns.SRV)
					if !ok || srv.Hdr.Name != "_big._tcp.marathon.mesos." {
						t.Fatalf("query %d: answer %v", i, rr)
					}
					ap, ok := want[srv.Target]
					if !ok || ap.Port() != srv.Port || seen[ap] {
						t.Fatalf("query %d: answer %v: unknown or repeated target, want port %d", i, rr, ap.Port())
					}
					seen[ap] = true
				}
				named := map[string]bool{}
				for _, rr := range r.Extra {
					if rr.Header().Rrtype == dns.TypeOPT {
						continue
					}
					name := rr.Header().Name
					a, ok := rr.(*dns.A)
					if !ok || named[name] || want[name].Addr() != netip.AddrFrom4([4]byte(a.A.To4())) {
						t.Fatalf("query %d: additional %v: unknown or repeated name, or not its task's address %v", i, rr, want[name])
					}
					named[name] = true
				}
				switch {
				case tc.extra == "all" && len(named) != tc.tasks,
					tc.extra == "none" && len(named) != 0:
					t.Errorf("query %d: %d additional addresses, want %s", i, len(named), tc.extra)
				// The largest Additional record here, its owner written out
				// past 16 KB, takes 43 bytes: the next did not fit.
				case tc.extra == "some" && (len(named) == 0 || len(named) == tc.tasks || n+43 <= maxTCPSize):
					t.Errorf("query %d: %d additional addresses in %d bytes, want as many as fit in %d", i, len(named), n, maxTCPSize)
				}
				if (r.IsEdns0() != nil) != (i%2 == 1) {
					t.Errorf("query %d: OPT %v", i, r.IsEdns0())
				}
			}
		})
	}
}

// dig (BIND's parser, which refuses pointers that do not point back) reads
// the same answers.
func TestDigLargeTCP(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		tasks int
		want  string
	}{
		{500, "flags: qr aa rd; QUERY: 1, ANSWER: 500, AUTHORITY: 0, ADDITIONAL: 501"},
		// 45 KB of SRV, then the 900-odd A records that fit (owners written out).
		{1000, "flags: qr aa rd; QUERY: 1, ANSWER: 1000, AUTHORITY: 0, ADDITIONAL: 9"},
		{1500, "flags: qr aa tc rd;"},
	} {
		t.Run(fmt.Sprint(tc.tasks), func(t *testing.T) {
			t.Parallel()
			tb := discovery.NewTable()
			tb.Apply(discovery.Update{Source: "marathon", Apps: []*discovery.App{bigApp(tc.tasks)}})
			_, addr, _ := runServer(t, tb)
			out := dig(t, addr, "+tcp", "_big._tcp.marathon.mesos", "SRV")
			if flat := strings.Join(strings.Fields(out), " "); !strings.Contains(flat, tc.want) {
				t.Errorf("dig lacks %q:\n%.2000s", tc.want, out)
			}
		})
	}
}

// At the TCP connection limit a new connection is closed unanswered, and
// counted: clients that retry over TCP after a truncated answer would
// otherwise fail with no trace in pacer's metrics.
func TestTCPConnectionLimitCounted(t *testing.T) {
	t.Parallel()
	s, _, tcp := runServer(t, fixtureTable(), func(s *Server) { s.maxConns = 2 })
	ask := func(c *dns.Conn) error {
		if err := c.WriteMsg(question("web-shop.marathon.mesos.", dns.TypeA)); err != nil {
			return err
		}
		_, err := c.ReadMsg()
		return err
	}
	var open []*dns.Conn
	for range 2 {
		c, err := dns.Dial("tcp", tcp)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := ask(c); err != nil { // the server holds it now
			t.Fatal(err)
		}
		open = append(open, c)
	}
	third, err := dns.Dial("tcp", tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	third.SetDeadline(time.Now().Add(5 * time.Second))
	if err := ask(third); err == nil {
		t.Fatal("a third connection was answered over a limit of 2")
	}
	if got := s.Stats().TCPRejected; got != 1 {
		t.Errorf("TCPRejected = %d, want 1", got)
	}
	// The open ones still work.
	if err := ask(open[0]); err != nil {
		t.Errorf("an open connection after the rejection: %v", err)
	}
}

// liveHeap returns the bytes of live heap objects.
func liveHeap() int64 {
	runtime.GC()
	runtime.GC() // and what sync.Pool kept for one cycle
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// Connections that asked once and went quiet, up to maxTCPConns of them
// (resolvers keep connections open; a flood opens them on purpose), must not
// each hold a 64 KB query buffer and a 64 KB answer buffer. Not parallel: it
// measures the process's heap.
func TestIdleTCPConnectionsHoldLittleMemory(t *testing.T) {
	_, _, tcp := runServer(t, fixtureTable())
	const conns = 100
	before := liveHeap()
	for range conns {
		c, err := dns.Dial("tcp", tcp)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.WriteMsg(question("web-shop.marathon.mesos.", dns.TypeA)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.ReadMsg(); err != nil { // the server's goroutine has served it
			t.Fatal(err)
		}
	}
	// Both ends of each connection are in this process: 32 KB leaves room
	// for both, not for 128 KB of buffers.
	per := (liveHeap() - before) / conns
	t.Logf("%d bytes of heap per connection, both ends", per)
	if per > 32<<10 {
		t.Errorf("each idle TCP connection holds %d KB of heap, want at most 32 KB", per>>10)
	}
}

// A query longer than maxTCPQuery closes the connection unread, and is
// counted; shorter ones on the same connection before it are answered.
func TestTCPQueryTooLong(t *testing.T) {
	t.Parallel()
	s, _, tcp := runServer(t, fixtureTable())
	c, err := dns.Dial("tcp", tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := c.WriteMsg(question("web-shop.marathon.mesos.", dns.TypeA)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadMsg(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Conn.Write(binary.BigEndian.AppendUint16(nil, maxTCPQuery+1)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after a query longer than 4 KB was announced")
	}
	if got := s.Stats().Dropped; got != 1 {
		t.Errorf("Dropped = %d, want 1", got)
	}
}

// An SRV answer that fits a UDP message while its targets' addresses do not
// all fit carries those that do, without TC: a client that reads the
// Additional section (HAProxy's resolvers, Netty) then resolves only the
// rest, and Go's LookupSRV, which ignores it, loses nothing.
func TestUDPAdditionalAsFits(t *testing.T) {
	t.Parallel()
	tb := discovery.NewTable()
	// 20 SRV records of 45 bytes fit in 1232, their 20 A records of 16 do not.
	tb.Apply(discovery.Update{Source: "marathon", Apps: []*discovery.App{bigApp(20)}})
	_, udp, _ := runServer(t, tb)
	want := bigTargets(20)
	c, err := net.Dial("udp", udp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	for i := range 3 { // the answer rotates; the owners must follow
		q := question("_big._tcp.marathon.mesos.", dns.TypeSRV)
		q.SetEdns0(1232, false)
		pkt, err := q.Pack()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(pkt); err != nil {
			t.Fatal(err)
		}
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		r := new(dns.Msg)
		if err := r.Unpack(buf[:n]); err != nil || r.Id != q.Id {
			t.Fatalf("query %d: %v, %v", i, r, err)
		}
		addrs := 0
		for _, x := range r.Extra {
			if x.Header().Rrtype == dns.TypeOPT {
				continue
			}
			addrs++
			if a, ok := x.(*dns.A); !ok || want[a.Hdr.Name].Addr() != netip.AddrFrom4([4]byte(a.A.To4())) {
				t.Errorf("query %d: additional %v is not its target's address", i, x)
			}
		}
		if r.Truncated || len(r.Answer) != 20 || addrs == 0 || addrs == 20 || n > 1232 || n+16 <= 1232 {
			t.Errorf("query %d: TC=%v, %d answers, %d addresses, %d bytes; want 20 answers and as many addresses as fit in 1232 bytes",
				i, r.Truncated, len(r.Answer), addrs, n)
		}
	}
}

// mesos-dns's HTTP API answers as DNS does: once Withdraw took this
// instance out of the lb names, the API no longer offers it either.
func TestAPIAfterWithdraw(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, fixtureTable())
	srv := httptest.NewServer(s.APIHandler())
	defer srv.Close()
	ips := func(path string) []string {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out []struct{ IP string }
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		var ips []string
		for _, o := range out {
			if o.IP != "" {
				ips = append(ips, o.IP)
			}
		}
		return ips
	}
	const lbSRV, lbHost = "/v1/services/_web-shop._tcp.lb.mesos.", "/v1/hosts/lb.mesos"
	if got := ips(lbSRV); len(got) != 2 {
		t.Fatalf("%s before Withdraw: %v", lbSRV, got)
	}
	s.Withdraw()
	for _, path := range []string{lbSRV, lbHost} {
		if got := ips(path); len(got) != 0 {
			t.Errorf("%s after Withdraw: %v; want this instance gone, as in DNS", path, got)
		}
	}
	if got := ips("/v1/hosts/web-shop.marathon.mesos"); len(got) != 2 {
		t.Errorf("a task name after Withdraw: %v", got)
	}
}
