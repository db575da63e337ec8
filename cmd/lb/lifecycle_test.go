package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pacer-lb/pacer/discovery/marathonsim"
	"github.com/pacer-lb/pacer/internal/testnet"
)

// Stopping (SIGTERM cancels run's context): /healthz fails first, the
// service port stops accepting, a connection already open keeps working
// until it ends, and run returns nil (exit 0) as soon as it does: the drain
// timeout is an hour, so only the connection's end can explain a return.
func TestStopDrainsOpenConnections(t *testing.T) {
	sim := startSim(t, marathonsim.Config{})
	port := testnet.FreePort(t)
	if err := sim.CreateApp(marathonsim.AppSpec{ID: "/web", Instances: 1, ServicePorts: []int{port}, Run: marathonsim.HTTPHello()}); err != nil {
		t.Fatal(err)
	}
	p := startPacer(t, sim.URL(), port, port, func(c *config) { c.drainTimeout = time.Hour })
	p.waitReady(t)

	// A keep-alive client with one request answered.
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	ask := func() (int, error) {
		if _, err := fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: web\r\n\r\n"); err != nil {
			return 0, err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := ask(); err != nil || code != 200 {
		t.Fatalf("before stop: %d %v", code, err)
	}

	p.stop()
	eventually(t, 5*time.Second, "healthz fails while draining", func() bool {
		resp, err := http.Get(p.admin + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	eventually(t, 5*time.Second, "service port stops accepting", func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	// The open connection is not cut: it is still answered.
	if code, err := ask(); err != nil || code != 200 {
		t.Fatalf("open connection during drain: %d %v", code, err)
	}
	conn.Close()
	p.waitStopped(t, 5*time.Second, "its last connection closing")
}

func TestDemoAppsAnswerAsPrinted(t *testing.T) {
	cfg, err := parseConfig("lb", []string{"--ports", "9000-9001"}, env(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	apps := demoApps(cfg)
	if len(apps) != 2 || apps[0].ID != "/marathon-nc" || apps[0].ServicePorts[0] != 9000 || apps[1].ServicePorts[0] != 9001 {
		t.Fatalf("demo apps = %+v", apps)
	}
	var b strings.Builder
	printDemoHelp(&b, cfg, &net.TCPAddr{Port: 9090}, &net.UDPAddr{Port: 8053})
	for _, want := range []string{"curl localhost:9000\n", "curl localhost:9001\n", "dig @127.0.0.1 -p 8053 _marathon-nc._tcp.marathon.mesos SRV\n", "curl localhost:9090/v1/services\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("demo help lacks %q:\n%s", want, b.String())
		}
	}
}

// The demo's lines name addresses that answer also when --bind, --admin or
// --dns is not a wildcard: a listener on ::1 or 127.0.0.2 alone is not
// reached at localhost, and "curl ::1:8000" is no address at all.
func TestDemoHelpNamesAddressesThatAnswer(t *testing.T) {
	svc, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Fatalf("no IPv6 loopback (::1), which the tests need (dnsserver's too): %v", err)
	}
	defer svc.Close()
	admin, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	dns, err := net.ListenPacket("udp", "127.0.0.3:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	port := svc.Addr().(*net.TCPAddr).Port
	cfg := &config{bind: "::1", portMin: port, portMax: port + 1, domain: "mesos"}
	var b strings.Builder
	printDemoHelp(&b, cfg, admin.Addr(), dns.LocalAddr())
	help := b.String()

	wantDig := fmt.Sprintf("dig @127.0.0.3 -p %d _marathon-nc._tcp.marathon.mesos SRV\n", dns.LocalAddr().(*net.UDPAddr).Port)
	if !strings.Contains(help, wantDig) {
		t.Errorf("demo help lacks %q:\n%s", wantDig, help)
	}
	// The first service port's line and the admin line, dialled as printed.
	curls := regexp.MustCompile(`(?m)^  curl ([^/\s]+)`).FindAllStringSubmatch(help, -1)
	if len(curls) != 3 {
		t.Fatalf("want three curl lines:\n%s", help)
	}
	for _, hostport := range []string{curls[0][1], curls[2][1]} {
		c, err := net.Dial("tcp", hostport)
		if err != nil {
			t.Errorf("curl %s as printed: %v\n%s", hostport, err, help)
			continue
		}
		c.Close()
	}
}

// With --shutdown-delay, a stopping pacer fails /healthz and withdraws its
// lb.<domain> answer but keeps accepting: a client that resolved pacer a
// moment ago, or a load balancer that has not checked /healthz since, is
// served rather than refused. A second signal ends the delay and the drain
// at once, even with a connection still open.
func TestShutdownDelayServesNewClientsUntilASecondSignal(t *testing.T) {
	sim := startSim(t, marathonsim.Config{})
	port := testnet.FreePort(t)
	if err := sim.CreateApp(marathonsim.AppSpec{ID: "/web", Instances: 1, ServicePorts: []int{port}, Run: marathonsim.HTTPHello()}); err != nil {
		t.Fatal(err)
	}
	p := startPacer(t, sim.URL(), port, port, func(c *config) {
		c.shutdownDelay = time.Hour
		c.drainTimeout = time.Hour
	})
	p.waitReady(t)
	get := func(conn net.Conn) (int, error) {
		if _, err := fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: web\r\n\r\n"); err != nil {
			return 0, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	p.stop()
	eventually(t, 5*time.Second, "healthz fails", func() bool {
		resp, err := http.Get(p.admin + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	if n := p.lbRecords(t); n != 0 {
		t.Fatalf("lb.mesos A during the delay: %d records, want none", n)
	}
	// A new client, after both: still served.
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("a new client during the shutdown delay was refused: %v", err)
	}
	defer conn.Close()
	if code, err := get(conn); err != nil || code != 200 {
		t.Fatalf("a new client during the shutdown delay: %d %v", code, err)
	}

	// The connection stays open; a second signal still ends everything now,
	// not after the hour-long delay and drain.
	p.hurry()
	p.waitStopped(t, 5*time.Second, "a second signal")
	if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
		c.Close()
		t.Fatal("the service port still accepts after run returned")
	}
}

// A listener that cannot open stops pacer with one line naming its flag and
// the way out, whether it is --admin (opened first) or --dns.
func TestListenerInUseNamesItsFlag(t *testing.T) {
	sim := startSim(t, marathonsim.Config{})
	port := testnet.FreePort(t)
	taken, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenTCP, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer takenTCP.Close()
	for _, tc := range []struct {
		flag, addr, want string
	}{
		{"--dns", taken.LocalAddr().String(), "pick a free port, or --dns \"\" to turn DNS off"},
		{"--admin", takenTCP.Addr().String(), "pick a free port"},
	} {
		cfg, err := parseConfig("lb", []string{"--marathon", sim.URL(), "--bind", "127.0.0.1",
			"--ports", fmt.Sprintf("%d-%d", port, port), "--admin", "127.0.0.1:0", "--dns", "127.0.0.1:0", tc.flag, tc.addr}, env(nil), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		// A run that starts after all (the bug this test is for) must not
		// run on past the test.
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- run(ctx, nil, cfg, zaptest.NewLogger(t), nil) }()
		t.Cleanup(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Errorf("%s: run did not stop within 10s of cancel", tc.flag)
			}
		})
		select {
		case err := <-done:
			done <- err // for the cleanup: run has returned
			if err == nil || !strings.HasPrefix(err.Error(), tc.flag+":") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s on a port in use: %v, want it to start with %s: and say %q", tc.flag, err, tc.flag, tc.want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s on a port in use: still running after 10s", tc.flag)
		}
	}
}
