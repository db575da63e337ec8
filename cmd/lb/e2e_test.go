package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap/zaptest"

	"github.com/pacer-lb/pacer/discovery/marathonsim"
	"github.com/pacer-lb/pacer/internal/testnet"
)

// pacer is one running lb, as a test sees it.
type pacer struct {
	admin string // http://127.0.0.1:PORT
	dns   net.Addr
	done  chan error
	stop  context.CancelFunc // a first SIGTERM
	hurry func()             // a second one
	ready chan struct{}      // closed once synced with service ports open
}

// waitReady waits for the first sync and the service-port listeners.
func (p *pacer) waitReady(t testing.TB) {
	t.Helper()
	select {
	case <-p.ready:
	case <-time.After(10 * time.Second):
		t.Fatal("lb not ready (first sync, service ports) after 10s")
	}
}

// waitStopped waits up to within for run to return, which must be nil (a
// clean stop exits 0); why names what should have ended it.
func (p *pacer) waitStopped(t testing.TB, within time.Duration, why string) {
	t.Helper()
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("run returned %v, want nil (exit 0)", err)
		}
		p.done <- nil // for the cleanup registered by startPacer
	case <-time.After(within):
		t.Fatalf("run did not return within %v of %s", within, why)
	}
}

// lbRecords counts the A records this pacer's DNS gives for lb.mesos: one
// (itself) while it serves, none once it withdraws.
func (p *pacer) lbRecords(t testing.TB) int {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion("lb.mesos.", dns.TypeA)
	r, err := dns.Exchange(m, p.dns.String())
	if err != nil {
		t.Fatal(err)
	}
	return len(r.Answer)
}

// startPacer runs lb against marathonURL with the given service port range,
// returning once every listener is open (the ready hook), never by sleeping.
func startPacer(t testing.TB, marathonURL string, portMin, portMax int, mutate ...func(*config)) *pacer {
	t.Helper()
	cfg, err := parseConfig("lb", []string{
		"--marathon", marathonURL,
		"--bind", "127.0.0.1",
		"--ports", fmt.Sprintf("%d-%d", portMin, portMax),
		"--admin", "127.0.0.1:0",
		"--dns", "127.0.0.1:0",
		"--drain-timeout", "2s",
	}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mutate {
		m(cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	hurry := make(chan struct{})
	p := &pacer{done: make(chan error, 1), stop: cancel, hurry: sync.OnceFunc(func() { close(hurry) })}
	listening := make(chan struct{})
	p.ready = make(chan struct{})
	go func() {
		p.done <- run(ctx, hurry, cfg, zaptest.NewLogger(t), &hooks{
			listening: func(a, d net.Addr) {
				p.admin = "http://" + a.String()
				p.dns = d
				close(listening)
			},
			ready: func() { close(p.ready) },
		})
	}()
	select {
	case <-listening:
	case err := <-p.done:
		t.Fatalf("lb stopped before it was listening: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("lb not listening after 10s")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-p.done:
			if err != nil {
				t.Errorf("lb returned %v on shutdown", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("lb did not stop within 10s of cancel")
		}
	})
	return p
}

func startSim(t testing.TB, cfg marathonsim.Config) *marathonsim.Server {
	t.Helper()
	sim := marathonsim.New(cfg)
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	return sim
}

// startWeb runs a simulator with /web (HTTPHello tasks) on a free service
// port, and a pacer in front of it that routes all of them.
func startWeb(t *testing.T, instances int) (*marathonsim.Server, int, *pacer) {
	t.Helper()
	sim := startSim(t, marathonsim.Config{})
	port := testnet.FreePort(t)
	if err := sim.CreateApp(marathonsim.AppSpec{ID: "/web", Instances: instances, ServicePorts: []int{port}, Run: marathonsim.HTTPHello()}); err != nil {
		t.Fatal(err)
	}
	p := startPacer(t, sim.URL(), port, port)
	p.waitReady(t)
	eventually(t, 5*time.Second, fmt.Sprintf("%d backends routed", instances), func() bool { return backends(t, p, "/web") == instances })
	return sim, port, p
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// eventuallySeen polls cond until it holds or the deadline passes; cond
// also returns what it saw, which a timeout prints (the last one).
func eventuallySeen(t testing.TB, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, seen := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s; last seen: %s", d, what, seen)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readHello dials addr and returns the first line the task sent.
func readHello(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reading from %s: %w (got %q)", addr, err, line)
	}
	return strings.TrimSpace(line), nil
}

// The seed's example: each task answers one connection and exits, Marathon
// starts another elsewhere, and `nc lb 8000` a hundred times in a row reaches
// the task alive at that moment every time.
func TestSeedExampleHundredConnections(t *testing.T) {
	sim := startSim(t, marathonsim.Config{})
	port := testnet.FreePort(t)
	if err := sim.CreateApp(marathonsim.AppSpec{ID: "/marathon-nc", Instances: 1, ServicePorts: []int{port}, Run: marathonsim.OneShotHello(false)}); err != nil {
		t.Fatal(err)
	}
	startPacer(t, sim.URL(), port, port).waitReady(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	seen := map[string]bool{}
	for i := range 100 {
		line, err := readHello(addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		id, ok := strings.CutPrefix(line, "hello ")
		if !ok || !strings.HasPrefix(id, "marathon-nc.") {
			t.Fatalf("connection %d: got %q, want hello marathon-nc.<task>", i+1, line)
		}
		if seen[id] {
			t.Fatalf("connection %d reached task %s twice: a dead task was routed", i+1, id)
		}
		seen[id] = true
	}
	if len(seen) != 100 {
		t.Fatalf("%d distinct tasks, want 100", len(seen))
	}
}

func httpGet(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}).Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestThreeTasksShareLoad(t *testing.T) {
	_, port, _ := startWeb(t, 3)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)

	counts := map[string]int{}
	for range 30 {
		code, body := httpGet(t, url)
		if code != 200 {
			t.Fatalf("status %d: %s", code, body)
		}
		counts[strings.TrimSpace(body)]++
	}
	if len(counts) != 3 {
		t.Fatalf("responses came from %d tasks, want 3: %v", len(counts), counts)
	}
	for task, n := range counts {
		if n != 10 {
			t.Errorf("task %s got %d of 30 requests, want 10 (round robin)", task, n)
		}
	}
}

// getServices decodes p's /v1/services into v.
func getServices(t testing.TB, p *pacer, v any) {
	t.Helper()
	resp, err := http.Get(p.admin + "/v1/services")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("decoding /v1/services: %v", err)
	}
}

// backends returns how many routable backends /v1/services lists for app.
func backends(t testing.TB, p *pacer, app string) int {
	t.Helper()
	var v struct {
		Apps []struct {
			ID       string
			Services []struct{ Backends []json.RawMessage }
		}
	}
	getServices(t, p, &v)
	for _, a := range v.Apps {
		if a.ID == app && len(a.Services) > 0 {
			return len(a.Services[0].Backends)
		}
	}
	return 0
}

func TestKilledTaskReplacementIsRouted(t *testing.T) {
	sim, port, _ := startWeb(t, 1)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	_, first := httpGet(t, url)
	old := sim.Tasks("/web")[0].ID
	if !strings.Contains(first, old) {
		t.Fatalf("answer %q is not from task %s", first, old)
	}
	if err := sim.KillTask(old, marathonsim.KillOptions{}); err != nil {
		t.Fatal(err)
	}
	// The very next request must reach the replacement: pacer holds it until
	// the new task is routed instead of failing it.
	code, body := httpGet(t, url)
	if code != 200 || strings.Contains(body, old) {
		t.Fatalf("after the kill: %d %q, want 200 from the replacement", code, body)
	}
}

func TestScaleToZeroAndBack(t *testing.T) {
	sim, port, p := startWeb(t, 2)
	if err := sim.Scale("/web", 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "no backends after scale to 0", func() bool { return backends(t, p, "/web") == 0 })
	// With no task the listener stays open (proxy's TestTCPHoldsClient*
	// tests cover what a client meets there, held until a task comes).
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("the listener must stay open while the app has no tasks: %v", err)
	}
	c.Close()
	if err := sim.Scale("/web", 2); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "two backends after scale back", func() bool { return backends(t, p, "/web") == 2 })
	if code, body := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/", port)); code != 200 {
		t.Fatalf("after scaling back: %d %s", code, body)
	}
}

// Marathon drops every stream while state changes without events; the
// resync after the reconnect must converge.
func TestDroppedStreamConvergesAfterResync(t *testing.T) {
	sim, _, p := startWeb(t, 1)
	sim.Silently(func() {
		if err := sim.Scale("/web", 3); err != nil {
			t.Error(err)
		}
	})
	// Wait until the simulator runs all three, silently: pacer cannot know.
	eventually(t, 5*time.Second, "simulator runs 3 tasks", func() bool { return len(sim.Tasks("/web")) == 3 })
	if n := backends(t, p, "/web"); n != 1 {
		t.Fatalf("pacer saw %d backends without any event; the test is not testing the resync", n)
	}
	sim.DropStreams()
	eventually(t, 10*time.Second, "three backends after the reconnect's resync", func() bool { return backends(t, p, "/web") == 3 })
}

// Marathon is not up when pacer starts: pacer retries and serves once it answers.
func TestMarathonDownAtStart(t *testing.T) {
	ports := testnet.FreePorts(t, 2) // two FreePort calls may return the same port
	marathonAddr, port := fmt.Sprintf("127.0.0.1:%d", ports[0]), ports[1]
	p := startPacer(t, "http://"+marathonAddr, port, port)

	resp, err := http.Get(p.admin + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/healthz before any sync = %d, want 503", resp.StatusCode)
	}

	sim := marathonsim.New(marathonsim.Config{})
	if err := sim.CreateApp(marathonsim.AppSpec{ID: "/web", Instances: 1, ServicePorts: []int{port}, Run: marathonsim.HTTPHello()}); err != nil {
		t.Fatal(err)
	}
	if err := sim.Start(marathonAddr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	eventually(t, 10*time.Second, "healthz 200 after Marathon came up", func() bool {
		resp, err := http.Get(p.admin + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	if code, _ := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/", port)); code != 200 {
		t.Fatalf("status %d through the service port", code)
	}
}

// Marathon goes away: pacer keeps serving the last table and says so.
func TestMarathonGoneKeepsLastTable(t *testing.T) {
	sim, port, p := startWeb(t, 2)
	// Marathon answers 500 to everything and drops the stream.
	sim.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		http.Error(w, "boom", http.StatusInternalServerError)
		return true
	})
	sim.DropStreams()
	eventuallySeen(t, 10*time.Second, "healthz 200 reporting the source stale", func() (bool, string) {
		resp, err := http.Get(p.admin + "/healthz")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 200 && strings.Contains(string(b), `"stale"`), fmt.Sprintf("%d %s", resp.StatusCode, b)
	})
	if n := backends(t, p, "/web"); n != 2 {
		t.Fatalf("backends = %d after Marathon failed, want the last good 2", n)
	}
	if code, _ := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/", port)); code != 200 {
		t.Fatalf("status %d through the service port while Marathon is down", code)
	}
}
