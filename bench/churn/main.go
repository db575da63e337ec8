// Command churn is the churn benchmark: continuous load through pacer (lb as
// its own process) on a service of four tasks of the in-repo Marathon
// simulator, while one task is killed and replaced every -every, for
// -duration per scenario:
//
//  1. http-grace: HTTP mode, Marathon's kill grace (TASK_KILLING, the
//     process dies -grace later). Want: zero non-2xx, zero socket errors.
//  2. http-abrupt: HTTP mode, abrupt deaths (no event; the process and its
//     connections vanish; Marathon learns -learn later). Want: zero for GETs.
//  3. tcp-grace and tcp-abrupt: the same on a TCP-mode service, one
//     connection per request. Want: zero refused and zero reset before the
//     client sent its request; with grace, zero failures at all.
//
// Then two detection measurements: a task that dies silently (Marathon never
// learns) with no traffic, and under load, timed from the kill until
// /v1/services lists it out of rotation.
//
// The clients never retry. It prints requests, failures and kills per
// scenario, and exits 1 if a "want" above does not hold.
//
// Usage: go run ./bench/churn -lb bin/lb   (see bench/run.sh)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"

	"github.com/pacer-lb/pacer/discovery/marathonsim"
	"github.com/pacer-lb/pacer/internal/churn"
	"github.com/pacer-lb/pacer/internal/testnet"
)

func main() {
	lbPath := flag.String("lb", "bin/lb", "the lb binary to measure")
	dur := flag.Duration("duration", 30*time.Second, "length of each scenario")
	every := flag.Duration("every", 500*time.Millisecond, "one kill every")
	grace := flag.Duration("grace", 300*time.Millisecond, "kill grace: TASK_KILLING to the process's death")
	learn := flag.Duration("learn", 700*time.Millisecond, "abrupt deaths: how long until Marathon learns")
	workers := flag.Int("workers", 16, "concurrent clients")
	flag.Parse()
	ok, err := run(*lbPath, *dur, *every, *grace, *learn, *workers)
	if err != nil {
		fmt.Fprintln(os.Stderr, "churn:", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

func run(lbPath string, dur, every, grace, learn time.Duration, workers int) (bool, error) {
	sim := marathonsim.New(marathonsim.Config{})
	if err := sim.Start("127.0.0.1:0"); err != nil {
		return false, err
	}
	defer sim.Close()
	ports, err := testnet.Ports(3)
	if err != nil {
		return false, err
	}
	httpPort, tcpPort, adminPort := ports[0], ports[1], ports[2]
	if err := sim.CreateApp(marathonsim.AppSpec{ID: "/churn-http", Instances: 4, ServicePorts: []int{httpPort},
		HealthCheck: &marathonsim.HealthCheck{Path: "/health"}}); err != nil {
		return false, err
	}
	if err := sim.CreateApp(marathonsim.AppSpec{ID: "/churn-tcp", Instances: 4, ServicePorts: []int{tcpPort},
		HealthCheck: &marathonsim.HealthCheck{Protocol: "TCP"}}); err != nil {
		return false, err
	}
	lb := exec.Command(lbPath, "--marathon", sim.URL(), "--bind", "127.0.0.1",
		"--ports", fmt.Sprintf("%d-%d", min(httpPort, tcpPort), max(httpPort, tcpPort)),
		"--admin", fmt.Sprintf("127.0.0.1:%d", adminPort), "--dns", "", "--log-level", "warn", "--log-format", "json")
	lb.Stdout, lb.Stderr = os.Stderr, os.Stderr
	lb.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := lb.Start(); err != nil {
		return false, fmt.Errorf("starting %s: %w", lbPath, err)
	}
	defer func() {
		_ = lb.Process.Signal(syscall.SIGTERM)
		_ = lb.Wait()
	}()
	admin := fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	for _, app := range []string{"/churn-http", "/churn-tcp"} {
		if err := waitFor(15*time.Second, func() bool { return len(services(admin, app).Backends) == 4 }); err != nil {
			return false, fmt.Errorf("%s never had four backends in rotation: %w", app, err)
		}
	}
	fmt.Printf("machine: %d CPUs, %s; each scenario %v, one kill every %v, %d clients, no client retries\n",
		runtime.NumCPU(), time.Now().UTC().Format(time.DateOnly), dur, every, workers)
	fmt.Printf("command: go run ./bench/churn -lb %s -duration %v -every %v -grace %v -learn %v -workers %d\n\n", lbPath, dur, every, grace, learn, workers)

	ok := true
	httpAddr, tcpAddr := fmt.Sprintf("127.0.0.1:%d", httpPort), fmt.Sprintf("127.0.0.1:%d", tcpPort)
	for _, sc := range []struct {
		name   string
		addr   string
		app    string
		mode   churn.Mode
		abrupt bool
	}{
		{"http-grace", httpAddr, "/churn-http", churn.HTTP, false},
		{"http-abrupt", httpAddr, "/churn-http", churn.HTTP, true},
		{"tcp-grace", tcpAddr, "/churn-tcp", churn.TCP, false},
		{"tcp-abrupt", tcpAddr, "/churn-tcp", churn.TCP, true},
	} {
		if err := waitFor(15*time.Second, func() bool { return len(services(admin, sc.app).Backends) == 4 }); err != nil {
			return false, fmt.Errorf("%s: app did not heal before the run: %w", sc.name, err)
		}
		load := &churn.Load{Addr: sc.addr, Mode: sc.mode, Workers: workers, Expect: "hello from "}
		k := &churn.Killer{Sim: sim, App: sc.app, Every: every, LearnAfter: learn}
		if sc.abrupt {
			k.Abrupt = true
		} else {
			k.Grace = grace
		}
		res := churn.Run(context.Background(), sc.name, load, k, dur)
		fmt.Println(res)
		want := res.Failures() == 0
		if sc.mode == churn.TCP && sc.abrupt {
			want = res.Refused+res.ResetEarly == 0
		}
		if !want {
			ok = false
			fmt.Println("  FAIL: the scenario's want does not hold")
		}
	}

	fmt.Println()
	for _, loaded := range []bool{false, true} {
		// Healed first: the task the last run killed has a replacement in
		// rotation, so the victim is one pacer routes to.
		if err := waitFor(15*time.Second, func() bool { return len(services(admin, "/churn-http").Backends) == 4 }); err != nil {
			return false, err
		}
		d, reason, c, err := silentDeath(sim, admin, httpAddr, loaded)
		if err != nil {
			return false, err
		}
		what := "idle"
		if loaded {
			what = "under load (" + c.String() + ")"
		}
		fmt.Printf("silent death, %s: out of rotation after %v: %s\n", what, d.Round(time.Millisecond), reason)
		if d > 3*time.Second || c.Failures() != 0 {
			ok = false
			fmt.Println("  FAIL: want out within 3s and no failed request")
		}
	}
	return ok, nil
}

// silentDeath kills a task of /churn-http with no event and times how long
// pacer takes to list it out of rotation.
func silentDeath(sim *marathonsim.Server, admin, addr string, loaded bool) (time.Duration, string, churn.Counts, error) {
	var counts churn.Counts
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan churn.Counts, 1)
	load := &churn.Load{Addr: addr, Mode: churn.HTTP, Workers: 8, Expect: "hello from "}
	if loaded {
		go func() { done <- load.Run(ctx) }()
		if err := waitFor(5*time.Second, func() bool { return load.Counts().Requests > 1000 }); err != nil {
			return 0, "", counts, err
		}
	}
	// A task in rotation: a replacement still waiting for its first health
	// check result would never be listed out of rotation.
	var victim string
	for _, b := range services(admin, "/churn-http").Backends {
		victim = b.TaskID
	}
	start := time.Now()
	if err := sim.KillTask(victim, marathonsim.KillOptions{Abrupt: true}); err != nil {
		return 0, "", counts, err
	}
	var took time.Duration
	var reason string
	err := waitFor(10*time.Second, func() bool {
		for _, b := range services(admin, "/churn-http").OutOfRotation {
			if b.TaskID == victim {
				took = time.Since(start)
				if b.Health != nil {
					reason = b.Health.Reason
				}
				return true
			}
		}
		return false
	})
	if loaded {
		time.Sleep(time.Second) // a second of load after the ejection, to catch late failures
		cancel()
		counts = <-done
	}
	_ = sim.KillTask(victim, marathonsim.KillOptions{}) // Marathon learns; the app heals
	return took, reason, counts, err
}

type backend struct {
	TaskID string `json:"task_id"`
	Health *struct {
		Reason string `json:"reason"`
	} `json:"health"`
}

type service struct {
	Backends      []backend `json:"backends"`
	OutOfRotation []backend `json:"out_of_rotation"`
}

func services(admin, app string) service {
	resp, err := http.Get(admin + "/v1/services")
	if err != nil {
		return service{}
	}
	defer resp.Body.Close()
	var v struct {
		Apps []struct {
			ID       string
			Services []service
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return service{}
	}
	for _, a := range v.Apps {
		if a.ID == app && len(a.Services) > 0 {
			return a.Services[0]
		}
	}
	return service{}
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
