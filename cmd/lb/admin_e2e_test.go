package main

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/pacer-lb/pacer/discovery/marathonsim"
	"github.com/pacer-lb/pacer/internal/testnet"
)

// metricSum scrapes p's /metrics and sums the samples of name whose labels
// include every want pair ("k", "v", ...). It also returns the matching
// lines, for failure messages.
func metricSum(t testing.TB, p *pacer, name string, want ...string) (float64, string) {
	t.Helper()
	resp, err := http.Get(p.admin + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	var sum float64
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		series, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		metric, labels, _ := strings.Cut(series, "{")
		if metric != name || !hasLabels(labels, want) {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		sum += v
		lines = append(lines, line)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading /metrics: %v", err)
	}
	return sum, strings.Join(lines, "; ")
}

// hasLabels reports whether the label text (`a="1",b="2"}`) has every pair.
func hasLabels(labels string, want []string) bool {
	for i := 0; i+1 < len(want); i += 2 {
		if !strings.Contains(labels, want[i]+`="`+want[i+1]+`"`) {
			return false
		}
	}
	return true
}

// waitMetric waits until the sum of name's samples with the given labels
// reaches at least min, printing the last samples seen on a timeout.
func waitMetric(t testing.TB, p *pacer, min float64, name string, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		v, lines := metricSum(t, p, name, labels...)
		if v >= min {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v after 5s, want >= %v (samples: %q)", name, labels, v, min, lines)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The admin server gets the real stats and resync functions from run: one
// TCP connection, one HTTP request and one DNS query through a running
// pacer each move their plane's counter in /metrics, and POST /v1/resync
// makes the Marathon source resync. The admin package's own tests inject
// fakes, so only this test notices a dropped or crossed wiring line.
func TestAdminSeesEveryPlane(t *testing.T) {
	sim := startSim(t, marathonsim.Config{})
	tcpPort, httpPort := createBothModes(t, sim)
	p := startPacer(t, sim.URL(), tcpPort, httpPort)
	p.waitReady(t)
	eventually(t, 5*time.Second, "both apps routed", func() bool {
		return backends(t, p, "/tcpapp") == 1 && backends(t, p, "/webapp") == 1
	})

	// TCP plane: one connection (carrying a request the task answers).
	if code, body := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/", tcpPort)); code != 200 {
		t.Fatalf("TCP-mode service port: %d %q", code, body)
	}
	waitMetric(t, p, 1, "pacer_tcp_connections_total", "port", strconv.Itoa(tcpPort), "plane", "tcp")

	// HTTP plane: one request on the HTTP-mode service port.
	if code, body := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/", httpPort)); code != 200 {
		t.Fatalf("HTTP-mode service port: %d %q", code, body)
	}
	waitMetric(t, p, 1, "pacer_http_responses_total", "app", "/webapp", "code", "2xx")

	// DNS: one A query for the HTTP app.
	m := new(dns.Msg)
	m.SetQuestion("webapp.marathon.mesos.", dns.TypeA)
	r, err := dns.Exchange(m, p.dns.String())
	if err != nil {
		t.Fatalf("DNS query: %v", err)
	}
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("webapp.marathon.mesos A: rcode %s, %d answers, want NOERROR and 1: %v", dns.RcodeToString[r.Rcode], len(r.Answer), r)
	}
	waitMetric(t, p, 1, "pacer_dns_queries_total", "qtype", "A")
	waitMetric(t, p, 1, "pacer_dns_responses_total", "rcode", "NOERROR")

	// Resync: one POST (they are spaced 5 s apart) adds one full resync.
	before, lines := metricSum(t, p, "pacer_source_resyncs_total", "source", "marathon")
	if before < 1 {
		t.Fatalf("pacer_source_resyncs_total = %v after the first sync, want >= 1 (samples: %q)", before, lines)
	}
	resp, err := http.Post(p.admin+"/v1/resync", "", nil)
	if err != nil {
		t.Fatalf("POST /v1/resync: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /v1/resync: %d, want 202", resp.StatusCode)
	}
	waitMetric(t, p, before+1, "pacer_source_resyncs_total", "source", "marathon")
}

// createBothModes creates /tcpapp, a TCP-mode app, and /webapp, an
// HTTP-mode one, each with one task answering HTTP, on two free service
// ports, the TCP one the lower (startPacer's range).
func createBothModes(t *testing.T, sim *marathonsim.Server) (tcpPort, httpPort int) {
	t.Helper()
	ports := testnet.FreePorts(t, 2)
	tcpPort, httpPort = min(ports[0], ports[1]), max(ports[0], ports[1])
	if err := sim.CreateApp(marathonsim.AppSpec{ID: "/tcpapp", Instances: 1, ServicePorts: []int{tcpPort}, Run: marathonsim.HTTPHello()}); err != nil {
		t.Fatal(err)
	}
	if err := sim.CreateApp(marathonsim.AppSpec{ID: "/webapp", Instances: 1, ServicePorts: []int{httpPort},
		Labels: map[string]string{"PACER_0_MODE": "http"}, Run: marathonsim.HTTPHello()}); err != nil {
		t.Fatal(err)
	}
	return tcpPort, httpPort
}
