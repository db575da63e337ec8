package dnsserver

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/discovery"
)

// testAdvertise is the test server's own address (lb.mesos, ns1.mesos).
func testAdvertise() netip.Addr { return netip.MustParseAddr("192.0.2.53") }

func backend(task, addr string) discovery.Backend {
	return discovery.Backend{TaskID: task, Host: "agent", Addr: netip.MustParseAddrPort(addr)}
}

func service(app string, idx, port int, portName string, proto discovery.Protocol, bs ...discovery.Backend) *discovery.Service {
	return &discovery.Service{
		Key:         discovery.ServiceKey{App: app, PortIndex: idx},
		Name:        discovery.AppName(app),
		PortName:    portName,
		ServicePort: port,
		Protocol:    proto,
		Backends:    bs,
	}
}

// bigApp returns /big with n routable tasks.
func bigApp(n int) *discovery.App {
	var bs []discovery.Backend
	for i := range n {
		bs = append(bs, backend(fmt.Sprintf("big.%03d", i), fmt.Sprintf("10.1.%d.%d:%d", i/250, i%250+1, 31000+i)))
	}
	return &discovery.App{ID: "/big", Services: []*discovery.Service{service("/big", 0, 10100, "", discovery.ProtoTCP, bs...)}}
}

// fixtureTable holds every kind of app the names cover.
func fixtureTable() *discovery.Table {
	tb := discovery.NewTable()
	web := &discovery.App{ID: "/shop/web", Services: []*discovery.Service{
		service("/shop/web", 0, 10000, "http", discovery.ProtoTCP,
			backend("web.1", "10.0.0.1:31000"), backend("web.2", "10.0.0.2:31001")),
		service("/shop/web", 1, 10001, "admin", discovery.ProtoTCP,
			backend("web.1", "10.0.0.1:31002"), backend("web.2", "10.0.0.2:31003")),
	}}
	syslog := &discovery.App{ID: "/syslog", Services: []*discovery.Service{
		service("/syslog", 0, 10002, "", discovery.ProtoUDP, backend("syslog.1", "10.0.0.3:31514")),
	}}
	// Its only task is unhealthy, so the source left no backends.
	sick := &discovery.App{ID: "/sick", Services: []*discovery.Service{service("/sick", 0, 10003, "", discovery.ProtoTCP)}}
	v6 := &discovery.App{ID: "/v6", Services: []*discovery.Service{
		service("/v6", 0, 10004, "", discovery.ProtoTCP, backend("v6.1", "[2001:db8::1]:8080")),
	}}
	// /zzz claims /shop/web's port 10000 and loses it (the lowest app id
	// wins); /out's port is outside the test server's --ports.
	zzz := &discovery.App{ID: "/zzz", Services: []*discovery.Service{
		service("/zzz", 0, 10000, "", discovery.ProtoTCP, backend("zzz.1", "10.0.0.5:31005")),
	}}
	out := &discovery.App{ID: "/out", Services: []*discovery.Service{
		service("/out", 0, 9500, "", discovery.ProtoTCP, backend("out.1", "10.0.0.6:31006")),
	}}
	// A Marathon port of protocol "udp,tcp".
	both := &discovery.App{ID: "/both", Services: []*discovery.Service{
		service("/both", 0, 10006, "", discovery.ProtoTCPUDP, backend("both.1", "10.0.0.7:31007")),
	}}
	// /worker has no ports: its routable tasks' addresses are its A
	// records, as in mesos-dns.
	worker := &discovery.App{ID: "/worker", Tasks: []discovery.TaskState{
		{ID: "worker.1", State: "TASK_RUNNING", Routable: true, Addr: netip.MustParseAddr("10.0.0.8")},
		{ID: "worker.2", State: "TASK_STAGING", Reason: "TASK_STAGING"},
	}}
	typo := problemApp("/typo", backend("typo.1", "10.0.0.9:31009"))
	// An app with a Problem and no ports: its tasks' Addr, set only on the
	// healthy ones, are its A records as for /worker.
	typoWorker := &discovery.App{ID: "/typo-worker", Problem: typoProblem, Tasks: []discovery.TaskState{
		{ID: "tw.1", State: "TASK_RUNNING", Reason: "app not routed: " + typoProblem, Addr: netip.MustParseAddr("10.0.0.10")},
		{ID: "tw.2", State: "TASK_RUNNING", Reason: "app not routed: " + typoProblem},
	}}
	tb.Apply(discovery.Update{Source: "marathon", Apps: []*discovery.App{web, syslog, sick, v6, zzz, out, both, worker, typo, typoWorker, bigApp(100)}})
	kafka := &discovery.App{ID: "zk:kafka", Source: sourceZK, Services: []*discovery.Service{{
		Key: discovery.ServiceKey{App: "zk:kafka"}, Name: "kafka", ServicePort: 10005,
		Backends: []discovery.Backend{backend("kafka-0", "10.0.1.1:9092"), backend("kafka-1", "10.0.1.2:9092")},
	}}}
	tb.Apply(discovery.Update{Source: sourceZK, Apps: []*discovery.App{kafka}})
	return tb
}

// typoProblem is the Problem of the apps problemApp makes.
const typoProblem = `label HAPROXY_0_PORT="x": want a port number 1-65535`

// problemApp is an app as the Marathon source publishes it when it cannot
// read a load-balancer label: not routed, but with its port (named "http")
// as a DNS-only service whose backends are its healthy tasks, which also
// carry their addresses. A task "<last backend's task>.sick" is unhealthy
// and has none.
func problemApp(id string, healthy ...discovery.Backend) *discovery.App {
	svc := service(id, 0, 0, "http", discovery.ProtoTCP, healthy...)
	a := &discovery.App{ID: id, Problem: typoProblem, DNSOnly: []*discovery.Service{svc}}
	for _, b := range healthy {
		a.Tasks = append(a.Tasks, discovery.TaskState{ID: b.TaskID, State: "TASK_RUNNING",
			Reason: "app not routed: " + typoProblem, Addr: b.Addr.Addr()})
	}
	a.Tasks = append(a.Tasks, discovery.TaskState{ID: id + ".sick", State: "TASK_RUNNING", Reason: "app not routed: " + typoProblem})
	return a
}

func newTestServer(t testing.TB, tb *discovery.Table) *Server {
	t.Helper()
	s, err := New(Config{Addr: "127.0.0.1:0", Advertise: testAdvertise(), PortMin: 10000, PortMax: 10100, UDPSockets: 2}, tb, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// exchange runs m through the server's query path without sockets.
func exchange(t testing.TB, s *Server, m *dns.Msg, tcp bool) (*dns.Msg, int) {
	t.Helper()
	pkt, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	w := s.newWorker(&counters{})
	resp := w.handle(pkt, tcp)
	if resp == nil {
		return nil, 0
	}
	r := new(dns.Msg)
	if err := r.Unpack(resp); err != nil {
		t.Fatalf("unpacking the response to %s: %v", m.Question[0].String(), err)
	}
	return r, len(resp)
}

func question(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}
