package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
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
	host := "localhost"
	if cfg.bind != "0.0.0.0" && cfg.bind != "::" && cfg.bind != "127.0.0.1" {
		host = cfg.bind
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\npacer demo is running against a simulated Marathon. Try:\n\n")
	fmt.Fprintf(&b, "  curl %s:%d\n      /marathon-nc: every task answers one connection and exits; each curl reaches the task alive now\n", host, cfg.portMin)
	fmt.Fprintf(&b, "  curl %s:%d\n      /web: three tasks, round robin\n", host, cfg.portMin+1)
	if dnsAddr != nil {
		_, port, _ := net.SplitHostPort(dnsAddr.String())
		fmt.Fprintf(&b, "  dig @127.0.0.1 -p %s _marathon-nc._tcp.marathon.%s SRV\n", port, cfg.domain)
		if _, err := exec.LookPath("dig"); err != nil {
			fmt.Fprintf(&b, "      (dig is in Debian's bind9-dnsutils: apt-get install bind9-dnsutils)\n")
		}
	}
	_, aport, _ := net.SplitHostPort(adminAddr.String())
	fmt.Fprintf(&b, "  curl localhost:%s/v1/services\n      the routing table as JSON\n", aport)
	fmt.Fprintf(&b, "  http://localhost:%s/\n      the status page, in a browser\n\nCtrl-C stops the demo.\n\n", aport)
	fmt.Fprint(out, b.String())
}
