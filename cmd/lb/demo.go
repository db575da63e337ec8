package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/discovery/marathonsim"
)

// demoApps are the apps `lb demo` deploys on its simulated Marathon: the
// seed's nc example, whose every task serves one connection and exits, and a
// steady three-task web app.
func demoApps(cfg *config) []marathonsim.AppSpec {
	return []marathonsim.AppSpec{
		{
			ID:           "/marathon-nc",
			Instances:    1,
			ServicePorts: []int{cfg.portMin},
			// `echo "hello $MESOS_TASK_ID" | nc -l $PORT0`, answering as
			// HTTP/1.0 because today's curl refuses a bare HTTP/0.9 reply.
			Run: marathonsim.OneShotHello(true),
		},
		{
			ID:           "/web",
			Instances:    3,
			ServicePorts: []int{cfg.portMin + 1},
			Run:          marathonsim.HTTPHello(),
		},
	}
}

// runDemo starts the Marathon simulator with the demo apps and runs pacer
// against it, printing what to try once everything listens.
func runDemo(ctx context.Context, hurry <-chan struct{}, cfg *config, log *zap.Logger) error {
	if cfg.portMax < cfg.portMin+1 {
		return fmt.Errorf("--ports: the demo needs two service ports, got %d-%d", cfg.portMin, cfg.portMax)
	}
	sim := marathonsim.New(marathonsim.Config{})
	if err := sim.Start("127.0.0.1:0"); err != nil {
		return fmt.Errorf("starting the Marathon simulator: %w", err)
	}
	defer sim.Close()
	for _, app := range demoApps(cfg) {
		if err := sim.CreateApp(app); err != nil {
			return fmt.Errorf("demo app %s: %w", app.ID, err)
		}
	}
	// The simulator, whatever --marathon or the environment said: a zk://
	// URL there would otherwise win over it.
	cfg.marathon, cfg.marathonZK = []string{sim.URL()}, nil
	log.Info("Marathon simulator running", zap.String("url", sim.URL()))

	var adminAddr, dnsAddr net.Addr
	return run(ctx, hurry, cfg, log, &hooks{
		listening: func(a, d net.Addr) { adminAddr, dnsAddr = a, d },
		ready:     func() { printDemoHelp(os.Stdout, cfg, adminAddr, dnsAddr) },
	})
}

func printDemoHelp(out io.Writer, cfg *config, adminAddr, dnsAddr net.Addr) {
	var b strings.Builder
	fmt.Fprintf(&b, "\npacer demo is running against a simulated Marathon. Try:\n\n")
	fmt.Fprintf(&b, "  curl %s\n      /marathon-nc: every task answers one connection and exits; each curl reaches the task alive now\n", reachAt(cfg.bind, cfg.portMin))
	fmt.Fprintf(&b, "  curl %s\n      /web: three tasks, round robin\n", reachAt(cfg.bind, cfg.portMin+1))
	if dnsAddr != nil {
		host, port, _ := net.SplitHostPort(dnsAddr.String())
		if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
			host = "127.0.0.1"
		}
		fmt.Fprintf(&b, "  dig @%s -p %s _marathon-nc._tcp.marathon.%s SRV\n", host, port, cfg.domain)
		if _, err := exec.LookPath("dig"); err != nil {
			fmt.Fprintf(&b, "      (dig is in Debian's bind9-dnsutils: apt-get install bind9-dnsutils)\n")
		}
	}
	admin := reachAddr(adminAddr)
	fmt.Fprintf(&b, "  curl %s/v1/services\n      the routing table as JSON\n", admin)
	fmt.Fprintf(&b, "  http://%s/\n      the status page, in a browser\n\nCtrl-C stops the demo.\n\n", admin)
	fmt.Fprint(out, b.String())
}

// reachAt is the host:port a user on this machine types to reach a
// listener on host and port: localhost for a wildcard or 127.0.0.1 (what the
// defaults give), else the address itself, in brackets if IPv6. A listener
// on 127.0.0.2 or ::1 alone is not reached at localhost:port, and
// "::1:8000" is no address at all.
func reachAt(host string, port int) string {
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() || ip.Equal(net.IPv4(127, 0, 0, 1)) {
		host = "localhost"
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// reachAddr is reachAt for a listener's address.
func reachAddr(a net.Addr) string {
	host, p, _ := net.SplitHostPort(a.String())
	port, _ := strconv.Atoi(p)
	return reachAt(host, port)
}
