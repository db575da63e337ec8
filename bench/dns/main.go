// Command dns is the pacer side of the DNS benchmark (bench/dns/run.sh): it
// fills a routing table with generated apps, serves it through dnsserver,
// and writes the same records as an NSD zone file plus a dnsperf query file,
// so both servers answer identical queries with identical records.
//
// Usage:
//
//	go run ./bench/dns -addr 127.0.0.1:0 -apps 100 -tasks 3 -out DIR
//
// It writes DIR/mesos.zone and DIR/queries.txt, prints "listening HOST:PORT"
// once it serves, and runs until SIGINT or SIGTERM. -cpuprofile FILE writes
// a CPU profile of the whole run.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/dnsserver"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/dns:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:0", "DNS listen address")
	apps := flag.Int("apps", 100, "number of apps")
	tasks := flag.Int("tasks", 3, "routable tasks per app")
	out := flag.String("out", ".", "directory for mesos.zone and queries.txt")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the serving to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	table := discovery.NewTable()
	table.Apply(discovery.Update{Source: "marathon", Full: true, Apps: generate(*apps, *tasks)})

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ready := make(chan net.Addr, 1)
	srv, err := dnsserver.New(dnsserver.Config{
		Addr:        *addr,
		Advertise:   netip.MustParseAddr("127.0.0.1"),
		OnListening: func(udp, _ net.Addr) { ready <- udp },
	}, table, zap.NewNop())
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	var bound net.Addr
	select {
	case bound = <-ready:
	case err := <-done:
		return err
	}
	names := make([]string, 0, *apps)
	for i := range *apps {
		names = append(names, "_"+appName(i)+"._tcp.marathon.mesos.")
	}
	if err := writeZone(filepath.Join(*out, "mesos.zone"), bound.String(), names); err != nil {
		return err
	}
	if err := writeQueries(filepath.Join(*out, "queries.txt"), names); err != nil {
		return err
	}
	fmt.Println("listening", bound)
	return <-done
}

func appName(i int) string { return discovery.AppName(fmt.Sprintf("/bench/app%03d", i)) }

// generate returns apps /bench/appNNN, each with tasks routable tasks on
// distinct agents.
func generate(apps, tasks int) []*discovery.App {
	out := make([]*discovery.App, 0, apps)
	for i := range apps {
		id := fmt.Sprintf("/bench/app%03d", i)
		svc := &discovery.Service{
			Key:         discovery.ServiceKey{App: id},
			Name:        discovery.AppName(id),
			ServicePort: 10000 + i,
		}
		for t := range tasks {
			svc.Backends = append(svc.Backends, discovery.Backend{
				TaskID: fmt.Sprintf("bench_app%03d.%d", i, t),
				Host:   fmt.Sprintf("agent-%d", t),
				Addr:   netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i / 250), byte(i % 250), byte(t + 1)}), uint16(31000+t)),
			})
		}
		out = append(out, &discovery.App{ID: id, Source: "marathon", Services: []*discovery.Service{svc}})
	}
	return out
}

// writeZone asks pacer over TCP for every SRV name, the A records of each
// app and the zone's SOA and NS, and writes what it answered as a zone file,
// so NSD serves exactly pacer's records.
func writeZone(path, addr string, srvNames []string) error {
	c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second}
	var lines []string
	ask := func(name string, qtype uint16) (*dns.Msg, error) {
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		r, _, err := c.Exchange(m, addr)
		if err != nil {
			return nil, fmt.Errorf("asking %s %s: %w", name, dns.TypeToString[qtype], err)
		}
		return r, nil
	}
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"mesos.", dns.TypeSOA}, {"mesos.", dns.TypeNS}, {"ns1.mesos.", dns.TypeA}} {
		r, err := ask(q.name, q.qtype)
		if err != nil {
			return err
		}
		for _, rr := range r.Answer {
			lines = append(lines, rr.String())
		}
	}
	for _, name := range srvNames {
		r, err := ask(name, dns.TypeSRV)
		if err != nil {
			return err
		}
		if len(r.Answer) == 0 {
			return fmt.Errorf("no SRV records for %s", name)
		}
		for _, rr := range append(r.Answer, r.Extra...) {
			if rr.Header().Rrtype != dns.TypeOPT {
				lines = append(lines, rr.String())
			}
		}
		host := strings.TrimPrefix(strings.Replace(name, "._tcp", "", 1), "_")
		if r, err = ask(host, dns.TypeA); err != nil {
			return err
		}
		for _, rr := range r.Answer {
			lines = append(lines, rr.String())
		}
	}
	slices.Sort(lines)
	lines = slices.Compact(lines)
	return os.WriteFile(path, []byte("$ORIGIN mesos.\n"+strings.Join(lines, "\n")+"\n"), 0o644)
}

// writeQueries writes dnsperf's query file: every SRV name once.
func writeQueries(path string, srvNames []string) error {
	var b strings.Builder
	for _, n := range srvNames {
		fmt.Fprintf(&b, "%s SRV\n", n)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
