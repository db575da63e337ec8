package admin

import (
	"bufio"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pacer-lb/pacer/proxy"
	"github.com/pacer-lb/pacer/proxy/httpproxy"
)

// The Prometheus text exposition format is small enough to write here; a
// client library would bring a dependency tree and global registries for a
// dozen families. Names follow pacer_<subsystem>_<name>_<unit>.

// metricWriter writes one family at a time in the text format.
type metricWriter struct{ w *bufio.Writer }

func (m metricWriter) family(name, typ, help string) {
	m.w.WriteString("# HELP " + name + " " + help + "\n# TYPE " + name + " " + typ + "\n")
}

// sample writes one sample; labels alternate name, value.
func (m metricWriter) sample(name string, v float64, labels ...string) {
	m.w.WriteString(name)
	if len(labels) > 0 {
		m.w.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				m.w.WriteByte(',')
			}
			m.w.WriteString(labels[i] + `="` + escapeLabel(labels[i+1]) + `"`)
		}
		m.w.WriteByte('}')
	}
	m.w.WriteByte(' ')
	m.w.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
	m.w.WriteByte('\n')
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)

func escapeLabel(s string) string { return labelEscaper.Replace(s) }

func sortedKeys(m map[string]uint64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	m := metricWriter{bw}
	snap := s.deps.Table.Snapshot()

	m.family("pacer_table_version", "gauge", "Version of the routing table being served.")
	m.sample("pacer_table_version", float64(snap.Version()))

	apps := snap.Apps()
	m.family("pacer_service_backends", "gauge", "Routable backends per service.")
	for _, a := range apps {
		for _, svc := range a.Services {
			m.sample("pacer_service_backends", float64(len(svc.Backends)), "app", a.ID, "port_index", strconv.Itoa(svc.Key.PortIndex), "service_port", strconv.Itoa(svc.ServicePort))
		}
	}
	m.family("pacer_app_problems", "gauge", "1 for an app pacer could not understand and does not route.")
	for _, a := range apps {
		if a.Problem != "" {
			m.sample("pacer_app_problems", 1, "app", a.ID)
		}
	}

	sources := make([]sourceHealth, 0, len(s.deps.Sources))
	for _, src := range s.deps.Sources {
		sources = append(sources, sourceHealth{SourceStatus: src.Status()})
	}
	m.family("pacer_source_synced", "gauge", "1 once the source delivered its first complete view.")
	for _, st := range sources {
		m.sample("pacer_source_synced", boolf(st.Synced), "source", st.Name)
	}
	m.family("pacer_source_connected", "gauge", "1 while the source's live feed is up.")
	for _, st := range sources {
		m.sample("pacer_source_connected", boolf(st.Connected), "source", st.Name)
	}
	m.family("pacer_source_current", "gauge", "1 while the table follows the source: synced, feed up and nothing failing behind it (see /healthz for why not).")
	for _, st := range sources {
		m.sample("pacer_source_current", boolf(st.Synced && st.Connected && st.Behind == ""), "source", st.Name)
	}
	m.family("pacer_source_last_sync_timestamp_seconds", "gauge", "Unix time of the source's last successful full sync.")
	for _, st := range sources {
		if !st.LastSync.IsZero() {
			m.sample("pacer_source_last_sync_timestamp_seconds", float64(st.LastSync.UnixNano())/1e9, "source", st.Name)
		}
	}
	for _, c := range []struct {
		name, help string
		get        func(sourceHealth) uint64
	}{
		{"pacer_source_events_total", "Events received from the source.", func(s sourceHealth) uint64 { return s.Events }},
		{"pacer_source_resyncs_total", "Full resyncs completed.", func(s sourceHealth) uint64 { return s.Resyncs }},
		{"pacer_source_reconnects_total", "Reconnections of the live feed.", func(s sourceHealth) uint64 { return s.Reconnects }},
		{"pacer_source_decode_errors_total", "Events or documents that could not be decoded.", func(s sourceHealth) uint64 { return s.DecodeErrors }},
	} {
		m.family(c.name, "counter", c.help)
		for _, st := range sources {
			m.sample(c.name, float64(c.get(st)), "source", st.Name)
		}
	}

	m.family("pacer_source_events_by_type_total", "counter", "Events received from the source, by event type.")
	for _, st := range sources {
		for _, typ := range sortedKeys(st.EventsByType) {
			m.sample("pacer_source_events_by_type_total", float64(st.EventsByType[typ]), "source", st.Name, "type", typ)
		}
	}

	if s.deps.Ports != nil {
		// Ports outside --ports are never bound: they have no listener to
		// report on (/v1/services says why).
		ports := slices.DeleteFunc(s.deps.Ports(), func(p proxy.PortStatus) bool { return p.Plane == "" })
		for _, c := range []struct {
			name, typ, help string
			get             func(proxy.PortStatus) float64
		}{
			{"pacer_tcp_listening", "gauge", "1 while the service port's listener is open.", func(p proxy.PortStatus) float64 { return boolf(p.Listening) }},
			{"pacer_tcp_bind_failing", "gauge", "1 while a claimed service port fails to bind (retried every second; see the log and /v1/services).", func(p proxy.PortStatus) float64 { return boolf(p.BindFailing) }},
			{"pacer_tcp_connections_active", "gauge", "Client connections open on the service port.", func(p proxy.PortStatus) float64 { return float64(p.Active) }},
			{"pacer_tcp_connections_total", "counter", "Client connections accepted on the service port.", func(p proxy.PortStatus) float64 { return float64(p.Total) }},
			{"pacer_tcp_connections_failed_total", "counter", "Client connections closed without reaching a backend.", func(p proxy.PortStatus) float64 { return float64(p.Failed) }},
			{"pacer_tcp_dial_errors_total", "counter", "Failed connects to backends, retried or not.", func(p proxy.PortStatus) float64 { return float64(p.DialErrors) }},
		} {
			m.family(c.name, c.typ, c.help)
			for _, p := range ports {
				m.sample(c.name, c.get(p), "port", strconv.Itoa(p.Port), "plane", p.Plane)
			}
		}
		m.family("pacer_tcp_bytes_total", "counter", "Bytes forwarded, by direction (in: client to backend).")
		for _, p := range ports {
			m.sample("pacer_tcp_bytes_total", float64(p.BytesIn), "port", strconv.Itoa(p.Port), "plane", p.Plane, "direction", "in")
			m.sample("pacer_tcp_bytes_total", float64(p.BytesOut), "port", strconv.Itoa(p.Port), "plane", p.Plane, "direction", "out")
		}
	}

	if s.deps.ConnLimit != nil {
		cl := s.deps.ConnLimit()
		m.family("pacer_tcp_max_conns", "gauge", "The cap on client connections open at once, TCP and HTTP together: every service port of both planes and --http (--max-conns).")
		m.sample("pacer_tcp_max_conns", float64(cl.Max))
		m.family("pacer_tcp_connections_open", "gauge", "Client connections open, TCP and HTTP together, as the cap counts them.")
		m.sample("pacer_tcp_connections_open", float64(cl.Open))
		m.family("pacer_tcp_max_conns_reached", "gauge", "1 while the connection cap is reached: accepting pauses on every port of both planes, new connections wait in the listen backlog.")
		m.sample("pacer_tcp_max_conns_reached", boolf(cl.Limited))
		m.family("pacer_tcp_max_conns_reached_total", "counter", "Times the connection cap (TCP and HTTP together) was reached.")
		m.sample("pacer_tcp_max_conns_reached_total", float64(cl.Reached))
	}

	if s.deps.HTTP != nil {
		stats := s.deps.HTTP()
		svcLabels := func(st httpproxy.ServiceStats) []string {
			return []string{"app", st.App, "port_index", strconv.Itoa(st.PortIndex), "service_port", strconv.Itoa(st.ServicePort)}
		}
		m.family("pacer_http_responses_total", "counter", "HTTP responses by status class, pacer's own 502/503/504 included.")
		for _, st := range stats {
			for i, n := range st.Responses {
				m.sample("pacer_http_responses_total", float64(n), append(svcLabels(st), "code", strconv.Itoa(i+1)+"xx")...)
			}
		}
		m.family("pacer_http_request_duration_seconds", "histogram", "Time from request to response header.")
		for _, st := range stats {
			for i, n := range st.LatencyCounts {
				le := "+Inf"
				if i < len(httpproxy.LatencyBuckets) {
					le = strconv.FormatFloat(httpproxy.LatencyBuckets[i], 'g', -1, 64)
				}
				m.sample("pacer_http_request_duration_seconds_bucket", float64(n), append(svcLabels(st), "le", le)...)
			}
			if n := len(st.LatencyCounts); n > 0 {
				m.sample("pacer_http_request_duration_seconds_sum", st.LatencySum, svcLabels(st)...)
				m.sample("pacer_http_request_duration_seconds_count", float64(st.LatencyCounts[n-1]), svcLabels(st)...)
			}
		}
		m.family("pacer_http_own_responses_total", "counter", "Answers pacer wrote itself, also counted in pacer_http_responses_total: 502 the backend failed, 503 no routable backend, 504 a timeout.")
		for _, st := range stats {
			for i, n := range st.Own {
				m.sample("pacer_http_own_responses_total", float64(n), append(svcLabels(st), "code", strconv.Itoa(502+i))...)
			}
		}
		m.family("pacer_http_retries_total", "counter", "HTTP requests sent again to another backend.")
		for _, st := range stats {
			m.sample("pacer_http_retries_total", float64(st.Retries), svcLabels(st)...)
		}
		m.family("pacer_http_requests_active", "gauge", "HTTP requests and upgraded tunnels in flight.")
		for _, st := range stats {
			m.sample("pacer_http_requests_active", float64(st.Active), svcLabels(st)...)
		}
	}

	if s.deps.Health != nil {
		vs := s.deps.Health()
		m.family("pacer_health_backend_healthy", "gauge", "1 while pacer's own health verdict keeps the backend in rotation.")
		for _, v := range vs {
			m.sample("pacer_health_backend_healthy", boolf(v.Healthy), "backend", v.Addr.String())
		}
		m.family("pacer_health_backend_ejections_total", "counter", "Passive ejections of the backend since pacer first saw it.")
		for _, v := range vs {
			m.sample("pacer_health_backend_ejections_total", float64(v.Ejections), "backend", v.Addr.String())
		}
	}
	if s.deps.HealthStats != nil {
		st := s.deps.HealthStats()
		m.family("pacer_health_probes_total", "counter", "Active health probes by result.")
		m.sample("pacer_health_probes_total", float64(st.ProbesOK), "result", "ok")
		m.sample("pacer_health_probes_total", float64(st.ProbesFailed), "result", "failed")
		m.family("pacer_health_ejections_total", "counter", "Passive ejections of any backend.")
		m.sample("pacer_health_ejections_total", float64(st.Ejections))
	}

	if s.deps.DNS != nil {
		st := s.deps.DNS()
		m.family("pacer_dns_queries_total", "counter", "DNS queries by query type.")
		for _, k := range sortedKeys(st.Queries) {
			m.sample("pacer_dns_queries_total", float64(st.Queries[k]), "qtype", k)
		}
		m.family("pacer_dns_responses_total", "counter", "DNS responses by rcode.")
		for _, k := range sortedKeys(st.Responses) {
			m.sample("pacer_dns_responses_total", float64(st.Responses[k]), "rcode", k)
		}
		m.family("pacer_dns_truncated_total", "counter", "Responses cut short with TC set (UDP; TCP past 64 KB).")
		m.sample("pacer_dns_truncated_total", float64(st.Truncated))
		m.family("pacer_dns_dropped_total", "counter", "Packets read that got no answer (malformed, or not queries); not those the kernel dropped.")
		m.sample("pacer_dns_dropped_total", float64(st.Dropped))
		m.family("pacer_dns_tcp_rejected_total", "counter", "TCP connections closed unanswered at the connection limit.")
		m.sample("pacer_dns_tcp_rejected_total", float64(st.TCPRejected))
		m.family("pacer_dns_cache_hits_total", "counter", "Answers served from the packed-answer cache.")
		m.sample("pacer_dns_cache_hits_total", float64(st.CacheHits))
		m.family("pacer_dns_cache_misses_total", "counter", "Answers built for the cache.")
		m.sample("pacer_dns_cache_misses_total", float64(st.CacheMisses))
	}

	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.family("pacer_go_goroutines", "gauge", "Goroutines that currently exist.")
	m.sample("pacer_go_goroutines", float64(runtime.NumGoroutine()))
	m.family("pacer_go_heap_inuse_bytes", "gauge", "Bytes in in-use heap spans.")
	m.sample("pacer_go_heap_inuse_bytes", float64(ms.HeapInuse))
	m.family("pacer_process_start_time_seconds", "gauge", "Unix time the process started.")
	m.sample("pacer_process_start_time_seconds", float64(s.started.UnixNano())/float64(time.Second))
}
