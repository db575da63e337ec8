// Command http is the pacer side of bench/http/run.sh: pacer's HTTP and TCP
// data planes on a fixed table whose services all point at one backend.
//
//	http -backend 127.0.0.1:8080 -http 127.0.0.1:9000 -http-port 9001 -tcp-port 9002
//
// -http is the vhost listener (Host bench.test), -http-port the HTTP-mode
// service port and -tcp-port the TCP-mode service port. It prints "ready"
// once every listener is open and runs until SIGINT/SIGTERM; -cpuprofile
// writes a CPU profile of the whole run, for go tool pprof.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/internal/gcfloor"
	"github.com/pacer-lb/pacer/proxy"
	"github.com/pacer-lb/pacer/proxy/httpproxy"
)

func main() {
	backend := flag.String("backend", "", "backend host:port (required)")
	vhost := flag.String("http", "127.0.0.1:0", "vhost listener address")
	httpPort := flag.Int("http-port", 0, "HTTP-mode service port (required)")
	tcpPort := flag.Int("tcp-port", 0, "TCP-mode service port (required)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench/http:", err)
			os.Exit(1)
		}
	}
	// As lb does, so that the bench measures what lb runs.
	defer gcfloor.Start(gcfloor.DefaultFloor).Stop()
	err := run(*backend, *vhost, *httpPort, *tcpPort)
	if *cpuprofile != "" {
		pprof.StopCPUProfile()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/http:", err)
		os.Exit(1)
	}
}

func run(backend, vhost string, httpPort, tcpPort int) error {
	be, err := netip.ParseAddrPort(backend)
	if err != nil || httpPort == 0 || tcpPort == 0 {
		return fmt.Errorf("need -backend ip:port, -http-port and -tcp-port")
	}
	table := discovery.NewTable()
	svc := func(port int, mode discovery.Mode, idx int) *discovery.Service {
		return &discovery.Service{
			Key: discovery.ServiceKey{App: "/bench", PortIndex: idx}, Name: "bench", ServicePort: port, Mode: mode,
			VHosts:   map[bool][]string{true: {"bench.test"}}[mode == discovery.ModeHTTP],
			Backends: []discovery.Backend{{TaskID: "bench.1", Addr: be}},
		}
	}
	table.Apply(discovery.Update{Source: "bench", Apps: []*discovery.App{{
		ID: "/bench", Services: []*discovery.Service{svc(httpPort, discovery.ModeHTTP, 0), svc(tcpPort, discovery.ModeTCP, 1)},
	}}})
	log := zap.NewNop()
	lo, hi := min(httpPort, tcpPort), max(httpPort, tcpPort)
	opened := make(chan int, 4)
	hook := func(port int, _ net.Addr) { opened <- port }
	hp, err := httpproxy.New(httpproxy.Config{Bind: "127.0.0.1", PortMin: lo, PortMax: hi, OnListening: hook}, table, log)
	if err != nil {
		return err
	}
	tp, err := proxy.NewTCP(proxy.TCPConfig{Bind: "127.0.0.1", PortMin: lo, PortMax: hi, OnListening: hook}, table, log)
	if err != nil {
		return err
	}
	ln, err := httpproxy.Listen(vhost)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go hp.Run(ctx)
	go tp.Run(ctx)
	go hp.ServeVHost(ln)
	for range 2 {
		select {
		case <-opened:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("listeners did not open")
		}
	}
	fmt.Println("ready", ln.Addr())
	// SIGUSR1 prints how many HTTP answers the poller gave itself.
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	for ctx.Err() == nil {
		select {
		case <-usr1:
			var answered uint64
			for _, st := range hp.Stats() {
				for _, n := range st.Responses {
					answered += n
				}
			}
			fmt.Printf("http answers %d, in the poller %d\n", answered, hp.Totals().InPoller)
		case <-ctx.Done():
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hp.Shutdown(sctx)
	_ = tp.Shutdown(sctx)
	return nil
}
