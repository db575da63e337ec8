// Command spine measures pacer's core path end to end, with lb running as its
// own process against the in-repo Marathon simulator:
//
//   - event to first routed connection: a client waits on an empty service
//     port, the simulator scales the app from 0 to 1 (emitting TASK_RUNNING),
//     and the time until the client reads the new task's first byte through
//     pacer is recorded, over -trials trials (median, p99);
//   - event to changed DNS answer: the same scale-up, with a client asking
//     for the app's SRV records until they appear;
//   - connections per second through a service port against straight to the
//     backend, each connection a dial plus one short reply, -conns workers,
//     interleaved rounds.
//
// Usage: go run ./bench/spine -lb bin/lb   (see bench/run.sh)
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/pacer-lb/pacer/discovery/marathonsim"
	"github.com/pacer-lb/pacer/internal/testnet"
)

func main() {
	lbPath := flag.String("lb", "bin/lb", "the lb binary to measure")
	trials := flag.Int("trials", 100, "event-to-route trials")
	conns := flag.Int("conns", 8, "concurrent workers for the connection-rate test")
	secs := flag.Duration("duration", 5*time.Second, "length of each connection-rate round")
	rounds := flag.Int("rounds", 3, "interleaved connection-rate rounds")
	flag.Parse()
	if err := run(*lbPath, *trials, *conns, *secs, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "spine:", err)
		os.Exit(1)
	}
}

// helloTask answers every connection with one line naming the task, then closes it.
func helloTask(ctx context.Context, ln net.Listener, taskID string) {
	msg := []byte("hello " + taskID + "\n")
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = c.Write(msg)
		_ = c.Close()
	}
}

func run(lbPath string, trials, conns int, dur time.Duration, rounds int) error {
	sim := marathonsim.New(marathonsim.Config{})
	if err := sim.Start("127.0.0.1:0"); err != nil {
		return err
	}
	defer sim.Close()
	ports, err := testnet.Ports(4)
	if err != nil {
		return err
	}
	probePort, connPort, adminPort, dnsPort := ports[0], ports[1], ports[2], ports[3]
	lo, hi := min(probePort, connPort), max(probePort, connPort)
	if err := sim.CreateApp(marathonsim.AppSpec{ID: "/probe", Instances: 0, ServicePorts: []int{probePort}, Run: helloTask}); err != nil {
		return err
	}
	if err := sim.CreateApp(marathonsim.AppSpec{ID: "/conn", Instances: 1, ServicePorts: []int{connPort}, Run: helloTask}); err != nil {
		return err
	}

	lb := exec.Command(lbPath, "--marathon", sim.URL(), "--bind", "127.0.0.1", "--ports", fmt.Sprintf("%d-%d", lo, hi),
		"--admin", fmt.Sprintf("127.0.0.1:%d", adminPort), "--dns", fmt.Sprintf("127.0.0.1:%d", dnsPort),
		"--log-level", "warn", "--log-format", "json")
	lb.Stdout, lb.Stderr = os.Stderr, os.Stderr
	lb.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := lb.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", lbPath, err)
	}
	defer func() {
		_ = lb.Process.Signal(syscall.SIGTERM)
		_ = lb.Wait()
	}()
	admin := fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	if err := waitFor(10*time.Second, func() bool { return healthy(admin) }); err != nil {
		return fmt.Errorf("lb never became ready: %w", err)
	}

	fmt.Printf("machine: %d CPUs (%s), GOMAXPROCS of lb unset, %s\n\n", runtime.NumCPU(), cpuModel(), time.Now().UTC().Format(time.DateOnly))

	// 1. Event to first routed connection.
	probe := fmt.Sprintf("127.0.0.1:%d", probePort)
	var lat []time.Duration
	for i := range trials {
		if err := waitFor(5*time.Second, func() bool { return backends(admin, "/probe") == 0 }); err != nil {
			return fmt.Errorf("trial %d: /probe still has backends", i)
		}
		c, err := net.Dial("tcp", probe)
		if err != nil {
			return fmt.Errorf("trial %d: dial: %w", i, err)
		}
		got := make(chan error, 1)
		var t1 time.Time
		go func() {
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err := bufio.NewReader(c).ReadString('\n')
			t1 = time.Now()
			got <- err
		}()
		// Give the proxy a moment to have the client parked, so the measured
		// interval starts at the event, not at the accept.
		time.Sleep(20 * time.Millisecond)
		t0 := time.Now()
		if err := sim.Scale("/probe", 1); err != nil {
			return err
		}
		if err := <-got; err != nil {
			return fmt.Errorf("trial %d: no reply through pacer: %w", i, err)
		}
		c.Close()
		lat = append(lat, t1.Sub(t0))
		if err := sim.Scale("/probe", 0); err != nil {
			return err
		}
	}
	slices.Sort(lat)
	fmt.Printf("event to first routed connection (%d trials): median %v, p99 %v, max %v\n\n",
		len(lat), lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)*99/100].Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))

	// 2. Event to changed DNS answer: the same scale-up, with a client asking
	// for the app's SRV records over UDP as fast as answers come back.
	dnsConn, err := dns.Dial("udp", fmt.Sprintf("127.0.0.1:%d", dnsPort))
	if err != nil {
		return err
	}
	defer dnsConn.Close()
	srv := new(dns.Msg).SetQuestion("_probe._tcp.marathon.mesos.", dns.TypeSRV)
	answers := func() (int, error) {
		_ = dnsConn.SetDeadline(time.Now().Add(time.Second))
		if err := dnsConn.WriteMsg(srv); err != nil {
			return 0, err
		}
		r, err := dnsConn.ReadMsg()
		if err != nil {
			return 0, err
		}
		return len(r.Answer), nil
	}
	var dnsLat []time.Duration
	for i := range trials {
		if err := sim.Scale("/probe", 0); err != nil {
			return err
		}
		if err := waitFor(5*time.Second, func() bool { n, err := answers(); return err == nil && n == 0 }); err != nil {
			return fmt.Errorf("dns trial %d: SRV answer never emptied", i)
		}
		t0 := time.Now()
		if err := sim.Scale("/probe", 1); err != nil {
			return err
		}
		for {
			n, err := answers()
			if err != nil {
				return fmt.Errorf("dns trial %d: %w", i, err)
			}
			if n > 0 {
				break
			}
			if time.Since(t0) > 5*time.Second {
				return fmt.Errorf("dns trial %d: no SRV answer 5s after the event", i)
			}
		}
		dnsLat = append(dnsLat, time.Since(t0))
	}
	if err := sim.Scale("/probe", 0); err != nil {
		return err
	}
	slices.Sort(dnsLat)
	fmt.Printf("event to changed DNS answer (%d trials): median %v, p99 %v, max %v\n\n",
		len(dnsLat), dnsLat[len(dnsLat)/2].Round(time.Microsecond), dnsLat[len(dnsLat)*99/100].Round(time.Microsecond), dnsLat[len(dnsLat)-1].Round(time.Microsecond))

	// 3. Connections per second, through pacer and direct, interleaved.
	tasks := sim.Tasks("/conn")
	if len(tasks) != 1 {
		return fmt.Errorf("/conn has %d tasks", len(tasks))
	}
	direct := fmt.Sprintf("127.0.0.1:%d", tasks[0].Ports[0])
	via := fmt.Sprintf("127.0.0.1:%d", connPort)
	var sumVia, sumDirect float64
	fmt.Printf("connections/s, %d workers, dial + one-line reply + close, %v rounds:\n", conns, dur)
	fmt.Printf("%-6s %14s %14s %8s\n", "round", "via pacer", "direct", "ratio")
	for r := 1; r <= rounds; r++ {
		v, errsV := connRate(via, conns, dur)
		d, errsD := connRate(direct, conns, dur)
		if errsV+errsD > 0 {
			return fmt.Errorf("round %d: %d failed connections via pacer, %d direct", r, errsV, errsD)
		}
		sumVia += v
		sumDirect += d
		fmt.Printf("%-6d %14.0f %14.0f %8.2f\n", r, v, d, v/d)
	}
	fmt.Printf("%-6s %14.0f %14.0f %8.2f\n", "mean", sumVia/float64(rounds), sumDirect/float64(rounds), sumVia/sumDirect)
	return nil
}

// connRate runs workers that each dial addr, read the reply to EOF and close,
// for d; it returns connections per second and the number of failures.
func connRate(addr string, workers int, d time.Duration) (float64, int64) {
	var ok, failed atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256)
			for time.Now().Before(deadline) {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					failed.Add(1)
					continue
				}
				n := 0
				for {
					m, err := c.Read(buf)
					n += m
					if err != nil {
						break
					}
				}
				c.Close()
				if n == 0 {
					failed.Add(1)
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	return float64(ok.Load()) / d.Seconds(), failed.Load()
}

func healthy(admin string) bool {
	resp, err := http.Get(admin + "/healthz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

func backends(admin, app string) int {
	resp, err := http.Get(admin + "/v1/services")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var v struct {
		Apps []struct {
			ID       string
			Services []struct{ Backends []json.RawMessage }
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return -1
	}
	for _, a := range v.Apps {
		if a.ID == app && len(a.Services) > 0 {
			return len(a.Services[0].Backends)
		}
	}
	return 0
}

func waitFor(d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("condition not met after %v", d)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}
