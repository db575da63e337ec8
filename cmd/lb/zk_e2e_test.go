package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/pacer-lb/pacer/discovery/marathonsim"
	"github.com/pacer-lb/pacer/internal/testnet"
	"github.com/pacer-lb/pacer/internal/zktest"
)

// lineServer answers every connection with one line and closes it.
func lineServer(t *testing.T, line string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, line)
			c.Close()
		}
	}()
	return ln.Addr().String()
}

func readLine(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read from %s: %v", addr, err)
	}
	return strings.TrimSpace(line)
}

// The deployment the seed's clusters use: lb finds the Marathon leader in
// ZooKeeper (--marathon zk://.../marathon) and serves ZooKeeper-registered
// members (--zk-service) beside Marathon's apps, on a real ZooKeeper.
func TestZooKeeperLeaderAndServices(t *testing.T) {
	zks := zktest.Start(t)
	c := zks.Conn(t)
	sim := startSim(t, marathonsim.Config{})
	ports := testnet.FreePorts(t, 2) // two FreePort calls may return the same port
	webPort, dbPort := ports[0], ports[1]
	if err := sim.CreateApp(marathonsim.AppSpec{ID: "/web", Instances: 1, ServicePorts: []int{webPort}, Run: marathonsim.HTTPHello()}); err != nil {
		t.Fatal(err)
	}
	// Marathon's Curator leader latch, as Marathon 1.5+ writes it.
	u, _ := url.Parse(sim.URL())
	zktest.EnsurePath(t, c, "/marathon/leader-curator")
	if _, err := c.Create("/marathon/leader-curator/_c_6b1d4f7e-latch-0000000007", []byte(u.Host), 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	// A nerve-registered database member.
	db := lineServer(t, "db member one")
	host, port, _ := net.SplitHostPort(db)
	zktest.EnsurePath(t, c, "/services/db")
	if _, err := c.Create("/services/db/i-1_0000000001", fmt.Appendf(nil, `{"host":%q,"port":%s,"name":"i-1"}`, host, port), 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}

	lo, hi := min(webPort, dbPort), max(webPort, dbPort)
	p := startPacer(t, "http://unused.invalid:1", lo, hi, func(cfg *config) {
		mc, err := parseConfig("lb", []string{
			"--marathon", "zk://" + zks.Addr() + "/marathon",
			"--zk", zks.Addr(),
			"--zk-service", fmt.Sprintf("db=/services/db:%d", dbPort),
		}, env(nil), nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg.marathon, cfg.marathonZK = nil, mc.marathonZK
		cfg.zkServers, cfg.zkServices = mc.zkServers, mc.zkServices
	})
	p.waitReady(t)

	if code, body := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/", webPort)); code != 200 || !strings.HasPrefix(body, "hello from web.") {
		t.Fatalf("Marathon app through the leader found in ZooKeeper: %d %q", code, body)
	}
	if got := readLine(t, fmt.Sprintf("127.0.0.1:%d", dbPort)); got != "db member one" {
		t.Fatalf("ZooKeeper service: %q", got)
	}
	// A second member replaces the first: routing follows at once.
	db2 := lineServer(t, "db member two")
	host2, port2, _ := net.SplitHostPort(db2)
	if _, err := c.Create("/services/db/i-2_0000000002", fmt.Appendf(nil, `{"host":%q,"port":%s,"name":"i-2"}`, host2, port2), 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete("/services/db/i-1_0000000001", -1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the replaced member is routed", func() bool {
		return readLine(t, fmt.Sprintf("127.0.0.1:%d", dbPort)) == "db member two"
	})
}

// A stopping pacer withdraws itself as the drain begins, while it still
// finishes open connections: its --zk-announce member goes, and its DNS
// stops answering lb.<domain> with it, so clients that find pacers either
// way stop choosing it before its listeners are gone.
func TestStopWithdrawsThisInstanceFirst(t *testing.T) {
	zks := zktest.Start(t)
	c := zks.Conn(t)
	zktest.EnsurePath(t, c, "/pacers")
	sim := startSim(t, marathonsim.Config{})
	port := testnet.FreePort(t)
	if err := sim.CreateApp(marathonsim.AppSpec{ID: "/web", Instances: 1, ServicePorts: []int{port}, Run: marathonsim.HTTPHello()}); err != nil {
		t.Fatal(err)
	}
	p := startPacer(t, sim.URL(), port, port, func(cfg *config) {
		cfg.drainTimeout = time.Hour
		cfg.zkServers = []string{zks.Addr()}
		cfg.zkAnnounce = "/pacers"
	})
	p.waitReady(t)
	members := func() int {
		kids, _, err := c.Children("/pacers")
		if err != nil {
			t.Fatal(err)
		}
		return len(kids)
	}
	eventually(t, 5*time.Second, "the announcement", func() bool { return members() == 1 })

	// An open connection keeps the drain going.
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: web\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("before stop: %v %v", resp, err)
	}

	if n := p.lbRecords(t); n != 1 {
		t.Fatalf("lb.mesos A before stop: %d records, want this instance", n)
	}

	p.stop()
	eventually(t, 5*time.Second, "the announcement withdrawn", func() bool { return members() == 0 })
	if n := p.lbRecords(t); n != 0 { // the drain began with the withdrawal
		t.Errorf("lb.mesos A while draining: %d records, want none", n)
	}
	select {
	case err := <-p.done:
		t.Fatalf("run returned (%v) before the open connection closed: the drain was cut short", err)
	default:
	}
	conn.Close()
	p.waitStopped(t, 10*time.Second, "its last connection closing")
}
