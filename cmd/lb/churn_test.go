package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pacer-lb/pacer/discovery/marathonsim"
	"github.com/pacer-lb/pacer/internal/churn"
	"github.com/pacer-lb/pacer/internal/testnet"
)

// The short form of bench/churn: continuous load on a service of four tasks
// while one task is killed and replaced every 500ms, for churnFor per
// scenario. Every request must succeed; the clients never retry.
const churnFor = 4 * time.Second

// churnApp starts the simulator with a four-task app on a fresh service port
// and pacer in front of it, and returns the simulator and the port's address.
func churnApp(t *testing.T, hc *marathonsim.HealthCheck, run marathonsim.TaskFunc) (*marathonsim.Server, *pacer, string) {
	t.Helper()
	sim := startSim(t, marathonsim.Config{})
	port := testnet.FreePort(t)
	if err := sim.CreateApp(marathonsim.AppSpec{ID: "/churn", Instances: 4, ServicePorts: []int{port}, HealthCheck: hc, Run: run}); err != nil {
		t.Fatal(err)
	}
	p := startPacer(t, sim.URL(), port, port)
	p.waitReady(t)
	eventually(t, 10*time.Second, "four backends routed", func() bool { return backends(t, p, "/churn") == 4 })
	return sim, p, fmt.Sprintf("127.0.0.1:%d", port)
}

func runChurn(t *testing.T, addr string, mode churn.Mode, k *churn.Killer) churn.Result {
	t.Helper()
	load := &churn.Load{Addr: addr, Mode: mode, Workers: 8, Expect: "hello from "}
	k.AtLeast = int(churnFor / time.Second) // more time, not fewer kills, on a loaded machine
	res := churn.Run(context.Background(), t.Name(), load, k, churnFor)
	t.Log(res)
	if res.Kills < int(churnFor/time.Second) {
		t.Errorf("only %d kills in %v: the churn did not happen", res.Kills, churnFor)
	}
	if res.Requests == 0 {
		t.Error("no request succeeded")
	}
	if res.Failures() != 0 {
		// A request that got no answer may still be in the process: its
		// goroutines say where (once, under make test's load, a GET here
		// went unanswered for the client's 10 s, and the drain then used
		// its whole timeout).
		var b strings.Builder
		_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
		t.Logf("goroutines after the failures:\n%s", b.String())
	}
	return res
}

// HTTP mode, Marathon's kill grace: TASK_KILLING, then the process dies
// 300ms later. pacer stops picking the task at TASK_KILLING; the requests
// already on it finish.
func TestChurnHTTPGrace(t *testing.T) {
	sim, _, addr := churnApp(t, &marathonsim.HealthCheck{Path: "/health"}, marathonsim.HTTPHello())
	res := runChurn(t, addr, churn.HTTP, &churn.Killer{Sim: sim, App: "/churn", Grace: 300 * time.Millisecond})
	if res.Failures() != 0 {
		t.Fatalf("%d failed requests: %v", res.Failures(), res.Counts)
	}
}

// HTTP mode, abrupt deaths: no event, the process and its connections
// vanish, Marathon learns 700ms later. GETs still all succeed: a broken
// pooled connection or a refused connect is retried on another backend,
// and passive detection ejects the dead task within a few requests.
func TestChurnHTTPAbrupt(t *testing.T) {
	sim, _, addr := churnApp(t, &marathonsim.HealthCheck{Path: "/health"}, marathonsim.HTTPHello())
	res := runChurn(t, addr, churn.HTTP, &churn.Killer{Sim: sim, App: "/churn", Abrupt: true})
	if res.Failures() != 0 {
		t.Fatalf("%d failed requests: %v", res.Failures(), res.Counts)
	}
}

// TCP mode: no client connection is ever refused or reset before it could
// send; with the kill grace, none fails at all. An abrupt death still breaks
// the connections that were on the task (TCP cannot replay a request it
// does not understand): those are counted as "no reply" and logged.
func TestChurnTCP(t *testing.T) {
	sim, _, addr := churnApp(t, &marathonsim.HealthCheck{Protocol: "TCP"}, marathonsim.HTTPHello())
	t.Run("grace", func(t *testing.T) {
		res := runChurn(t, addr, churn.TCP, &churn.Killer{Sim: sim, App: "/churn", Grace: 300 * time.Millisecond})
		if res.Failures() != 0 {
			t.Fatalf("%d failed connections: %v", res.Failures(), res.Counts)
		}
	})
	t.Run("abrupt", func(t *testing.T) {
		res := runChurn(t, addr, churn.TCP, &churn.Killer{Sim: sim, App: "/churn", Abrupt: true})
		if n := res.Refused + res.ResetEarly; n != 0 {
			t.Fatalf("%d connections refused or reset before the client sent a byte: %v", n, res.Counts)
		}
	})
}

// backendView is one backend in /v1/services.
type backendView struct {
	TaskID string `json:"task_id"`
	Addr   string `json:"addr"`
	Health *struct {
		Healthy bool      `json:"healthy"`
		Reason  string    `json:"reason"`
		Since   time.Time `json:"since"`
		Active  string    `json:"active"`
	} `json:"health"`
}

// ejected returns the /v1/services entry of task if pacer has it out of
// rotation.
func ejected(t testing.TB, p *pacer, app, task string) (backendView, bool) {
	t.Helper()
	var v struct {
		Apps []struct {
			ID       string
			Services []struct {
				OutOfRotation []backendView `json:"out_of_rotation"`
			}
		}
	}
	getServices(t, p, &v)
	for _, a := range v.Apps {
		if a.ID != app {
			continue
		}
		for _, s := range a.Services {
			for _, b := range s.OutOfRotation {
				if b.TaskID == task {
					return b, true
				}
			}
		}
	}
	return backendView{}, false
}

// waitEjected polls /v1/services every 5ms until task is out of rotation and
// returns how long that took from start; it fails after 10s. The tests
// assert a generous bound and log the measured time.
func waitEjected(t *testing.T, p *pacer, app, task string, start time.Time) (backendView, time.Duration) {
	t.Helper()
	for time.Since(start) < 10*time.Second {
		if b, ok := ejected(t, p, app, task); ok {
			if b.Health == nil {
				t.Fatalf("task %s out of rotation with no health verdict: %+v", task, b)
			}
			return b, time.Since(start)
		}
		time.Sleep(5 * time.Millisecond) // polling an endpoint: there is no hook across processes
	}
	t.Fatalf("task %s still in rotation 10s after it died", task)
	return backendView{}, 0
}

// A task that dies with no event at all (Marathon never learns) leaves
// rotation within 3s: by the active check when there is no traffic, by
// passive detection under traffic, and no request fails meanwhile.
func TestSilentDeathLeavesRotation(t *testing.T) {
	sim, p, addr := churnApp(t, &marathonsim.HealthCheck{Path: "/health"}, marathonsim.HTTPHello())
	tasks := sim.Tasks("/churn")

	// No traffic: only the active check (1s interval, fall 2) can tell.
	start := time.Now()
	if err := sim.KillTask(tasks[0].ID, marathonsim.KillOptions{Abrupt: true}); err != nil {
		t.Fatal(err)
	}
	b, took := waitEjected(t, p, "/churn", tasks[0].ID, start)
	t.Logf("idle: silent death detected after %v: %s", took.Round(time.Millisecond), b.Health.Reason)
	if took > 3500*time.Millisecond || b.Health == nil || !strings.HasPrefix(b.Health.Reason, "active:") {
		t.Errorf("idle: out after %v (%+v), want under 3s by the active check", took, b.Health)
	}

	// Under load: passive detection, and no failed request.
	load := &churn.Load{Addr: addr, Mode: churn.HTTP, Workers: 8, Expect: "hello from "}
	ctx, cancel := context.WithCancel(context.Background())
	counts := make(chan churn.Counts, 1)
	go func() { counts <- load.Run(ctx) }()
	// stop ends the load once: here, or at cleanup when the test fails
	// before that (a load left running takes the CPU from later tests).
	stop := sync.OnceValue(func() churn.Counts { cancel(); return <-counts })
	t.Cleanup(func() { stop() })
	eventually(t, 5*time.Second, "load running", func() bool { return load.Counts().Requests > 100 })
	start = time.Now()
	if err := sim.KillTask(tasks[1].ID, marathonsim.KillOptions{Abrupt: true}); err != nil {
		t.Fatal(err)
	}
	b, took = waitEjected(t, p, "/churn", tasks[1].ID, start)
	before := load.Counts().Requests
	eventually(t, 5*time.Second, "more load after the ejection", func() bool { return load.Counts().Requests > before+100 })
	c := stop()
	t.Logf("under load: silent death detected after %v: %s; load %v", took.Round(time.Millisecond), b.Health.Reason, c)
	if took > 3*time.Second {
		t.Errorf("under load: out after %v, want under 3s", took)
	}
	if c.Failures() != 0 {
		t.Errorf("%d requests failed around the silent death: %v", c.Failures(), c)
	}
}

// flakyHealth is HTTPHello whose /health answers 503 while its task is in sick.
type flakyHealth struct {
	mu   sync.Mutex
	sick map[string]bool
}

func (f *flakyHealth) set(task string, sick bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sick[task] = sick
}

func (f *flakyHealth) run(ctx context.Context, ln net.Listener, taskID string) {
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) {
		f.mu.Lock()
		sick := f.sick[taskID]
		f.mu.Unlock()
		if sick {
			http.Error(w, "sick", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "hello from "+taskID+"\n")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	_ = srv.Serve(ln)
}

// A task whose /health fails while Marathon still says it is alive is taken
// out by pacer's active check, and comes back when /health passes again.
func TestFailingHealthCheckTakesTaskOut(t *testing.T) {
	fh := &flakyHealth{sick: map[string]bool{}}
	sim, p, addr := churnApp(t, &marathonsim.HealthCheck{Path: "/health"}, fh.run)
	sick := sim.Tasks("/churn")[2].ID
	start := time.Now()
	fh.set(sick, true)
	b, took := waitEjected(t, p, "/churn", sick, start)
	t.Logf("failing /health detected after %v: %s", took.Round(time.Millisecond), b.Health.Reason)
	if took > 3500*time.Millisecond || b.Health.Active != "down" || !strings.Contains(b.Health.Reason, "503") {
		t.Errorf("out after %v with %+v, want under 3s by the active check naming the 503", took, b.Health)
	}
	if h := sim.Tasks("/churn")[2].Healthy; h == nil || !*h {
		t.Fatal("the simulator stopped calling the task healthy; the test needs Marathon to say alive")
	}
	for range 20 {
		code, body := httpGet(t, "http://"+addr+"/")
		if code != 200 || strings.Contains(body, sick) {
			t.Fatalf("got %d %q: the sick task still gets requests", code, body)
		}
	}
	fh.set(sick, false)
	start = time.Now()
	eventually(t, 10*time.Second, "the task back in rotation", func() bool {
		_, out := ejected(t, p, "/churn", sick)
		return !out
	})
	t.Logf("back in rotation after %v", time.Since(start).Round(time.Millisecond))
}
