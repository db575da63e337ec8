// Command scale measures pacer at the size of a large Marathon cluster: the
// real 1,000-app group tree with 10 tasks per app (10,000 tasks), served by a
// minimal Marathon in this process, with lb running as its own process.
//
// It reports the full resync time (fetch and decode, then apply) as lb logs
// it, lb's resident memory once synced, and the time from a status_update
// event written to the event stream to the first connection reaching the new
// task through lb's service port, over -trials trials.
//
// Usage: go run ./bench/scale -lb bin/lb   (see bench/run.sh)
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pacer-lb/pacer/internal/fixtures"
	"github.com/pacer-lb/pacer/internal/testnet"
)

const probeApp = "/bench/probe"

func main() {
	lbPath := flag.String("lb", "bin/lb", "the lb binary to measure")
	trials := flag.Int("trials", 200, "event-to-route trials")
	resyncs := flag.Int("resyncs", 5, "full resyncs to time")
	tasks := flag.Int("tasks", 10, "tasks per app")
	flag.Parse()
	if err := run(*lbPath, *trials, *resyncs, *tasks); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
}

// marathon is the smallest Marathon that lb needs: the apps snapshot, one
// app, and an event stream this program writes to.
type marathon struct {
	mu     sync.Mutex
	body   []byte
	byID   map[string][]byte
	stream chan []byte
}

func (m *marathon) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/v2/events":
		if r.Header.Get("Accept") != "text/event-stream" {
			http.Error(w, "HTTP method GET is not supported by this URL", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream;charset=utf-8")
		w.WriteHeader(200)
		fl := w.(http.Flusher)
		fmt.Fprintf(w, "event: event_stream_attached\r\ndata: {\"remoteAddress\":\"127.0.0.1\",\"eventType\":\"event_stream_attached\",\"timestamp\":\"2020-03-05T10:15:02.101Z\"}\r\n\r\n")
		fl.Flush()
		hb := time.NewTicker(10 * time.Second)
		defer hb.Stop()
		for {
			select {
			case ev := <-m.stream:
				if _, err := w.Write(ev); err != nil {
					return
				}
				fl.Flush()
			case <-hb.C:
				_, _ = w.Write([]byte("\r\n"))
				fl.Flush()
			case <-r.Context().Done():
				return
			}
		}
	case r.URL.Path == "/v2/apps":
		m.mu.Lock()
		b := m.body
		m.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	case strings.HasPrefix(r.URL.Path, "/v2/apps/"):
		id := strings.TrimPrefix(r.URL.Path, "/v2/apps")
		m.mu.Lock()
		b, ok := m.byID[id]
		m.mu.Unlock()
		if !ok {
			w.WriteHeader(404)
			fmt.Fprintf(w, `{"message":"App '%s' does not exist"}`, id)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"app":%s}`, b)
	case r.URL.Path == "/v2/leader":
		fmt.Fprintf(w, `{"leader":%q}`, r.Host)
	case r.URL.Path == "/ping":
		fmt.Fprint(w, "pong")
	default:
		http.NotFound(w, r)
	}
}

func run(lbPath string, trials, resyncs, tasksPerApp int) error {
	apps, err := fixtures.Cluster(fixtures.GroupTree1000(), tasksPerApp)
	if err != nil {
		return err
	}
	ports, err := testnet.Ports(2)
	if err != nil {
		return err
	}
	probePort, adminPort := ports[0], ports[1]
	probe := fmt.Sprintf(`{"id":%q,"instances":0,"portDefinitions":[{"port":%d,"protocol":"tcp"}],"networks":[{"mode":"host"}],"labels":{},"version":"2020-03-05T10:14:50.512Z","tasks":[]}`, probeApp, probePort)
	apps = append(apps, fixtures.App{ID: probeApp, JSON: json.RawMessage(probe)})
	m := &marathon{body: fixtures.AppsJSON(apps), byID: map[string][]byte{}, stream: make(chan []byte, 16)}
	for _, a := range apps {
		m.byID[a.ID] = a.JSON
	}
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { _ = http.Serve(mln, m) }()

	lb := exec.Command(lbPath, "--marathon", "http://"+mln.Addr().String(), "--bind", "127.0.0.1",
		"--ports", fmt.Sprintf("%d-%d", probePort, probePort), "--admin", fmt.Sprintf("127.0.0.1:%d", adminPort),
		"--dns", "", "--log-format", "json")
	stderr, err := lb.StderrPipe()
	if err != nil {
		return err
	}
	lb.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := lb.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", lbPath, err)
	}
	defer func() {
		_ = lb.Process.Signal(syscall.SIGTERM)
		_ = lb.Wait()
	}()
	resyncLog := make(chan map[string]any, 64)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == "resync done" {
				resyncLog <- line
			}
		}
	}()

	totalTasks := len(apps) * tasksPerApp
	fmt.Printf("cluster: %d apps, %d tasks, /v2/apps?embed=apps.tasks is %.1f MB\n\n", len(apps)-1, totalTasks-tasksPerApp, float64(len(m.body))/1e6)

	// Full resyncs: the first at start, then SIGHUP (POST /v1/resync would
	// space them 5 s apart).
	fmt.Printf("%-8s %14s %10s %10s\n", "resync", "fetch+decode", "apply", "total")
	var totals []time.Duration
	var maxTotal time.Duration
	for i := 0; i <= resyncs; i++ {
		if i > 0 {
			if err := lb.Process.Signal(syscall.SIGHUP); err != nil {
				return fmt.Errorf("asking lb for a resync: %w", err)
			}
		}
		select {
		case line := <-resyncLog:
			fd := secondsField(line["fetch_decode"])
			ap := secondsField(line["apply"])
			name := strconv.Itoa(i)
			if i == 0 {
				name = "initial"
			}
			totals = append(totals, fd+ap)
			maxTotal = max(maxTotal, fd+ap)
			fmt.Printf("%-8s %14v %10v %10v\n", name, fd.Round(time.Millisecond), ap.Round(time.Millisecond), (fd + ap).Round(time.Millisecond))
		case <-time.After(30 * time.Second):
			return fmt.Errorf("no 'resync done' log line within 30s")
		}
	}
	slices.Sort(totals)
	fmt.Printf("median %v, max %v\n", totals[len(totals)/2].Round(time.Millisecond), maxTotal.Round(time.Millisecond))
	rss, hwm := memory(lb.Process.Pid)
	fmt.Printf("\nlb resident memory after %d resyncs: VmRSS %.1f MB, peak VmHWM %.1f MB\n\n", resyncs+1, float64(rss)/1024, float64(hwm)/1024)

	// Event to route: a client waits on the probe's service port; the event
	// names a task on a fresh local listener; the latency ends when that
	// listener accepts the proxied connection.
	var lat []time.Duration
	for i := range trials {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		accepted := make(chan time.Time, 1)
		go func() {
			c, err := ln.Accept()
			if err == nil {
				accepted <- time.Now()
				c.Close()
			}
		}()
		client, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", probePort))
		if err != nil {
			return fmt.Errorf("trial %d: %w", i, err)
		}
		time.Sleep(5 * time.Millisecond) // let lb park the client before the event
		task := fmt.Sprintf("bench_probe.instance-%08x-5ec9-11ea-9a3f-0242ac110004._app.1", i)
		t0 := time.Now()
		m.stream <- statusUpdate(task, "TASK_RUNNING", port)
		select {
		case t1 := <-accepted:
			lat = append(lat, t1.Sub(t0))
		case <-time.After(5 * time.Second):
			return fmt.Errorf("trial %d: the new task got no connection within 5s", i)
		}
		client.Close()
		m.stream <- statusUpdate(task, "TASK_KILLED", port)
		ln.Close()
	}
	slices.Sort(lat)
	fmt.Printf("event to route live (%d trials, 1,000 apps loaded): median %v, p99 %v, max %v\n",
		len(lat), lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)*99/100].Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
	return nil
}

func statusUpdate(task, state string, port int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "event: status_update_event\r\ndata: {\"slaveId\":\"S1\",\"taskId\":%q,\"taskStatus\":%q,\"message\":\"\",\"appId\":%q,\"host\":\"127.0.0.1\",\"ipAddresses\":[],\"ports\":[%d],\"version\":\"2020-03-05T10:14:50.512Z\",\"eventType\":\"status_update_event\",\"timestamp\":\"%s\"}\r\n\r\n",
		task, state, probeApp, port, time.Now().UTC().Format("2006-01-02T15:04:05.000Z"))
	return b.Bytes()
}

// secondsField reads a zap duration field written as seconds (JSON encoder).
func secondsField(v any) time.Duration {
	f, _ := v.(float64)
	return time.Duration(f * float64(time.Second))
}

// memory returns VmRSS and VmHWM of pid in KiB.
func memory(pid int) (rss, hwm int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			hwm = n
		}
	}
	return rss, hwm
}
