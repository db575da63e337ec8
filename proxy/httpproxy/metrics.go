package httpproxy

import (
	"sync/atomic"
	"time"

	"github.com/pacer-lb/pacer/discovery"
)

// LatencyBuckets are the upper bounds, in seconds, of the latency histogram
// (time from the request's arrival to the response header).
var LatencyBuckets = [...]float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// svcState is what a service keeps across snapshots: the balancer cursor and
// the counters behind ServiceStats. Every field is atomic.
type svcState struct {
	key  discovery.ServiceKey
	name string // written under Proxy.mu, read by Stats under it too
	port atomic.Int64

	rr       atomic.Uint64
	byClass  [5]atomic.Uint64 // 1xx .. 5xx
	buckets  [len(LatencyBuckets) + 1]atomic.Uint64
	sumNanos atomic.Uint64
	retries  atomic.Uint64
	active   atomic.Int64
	// own counts pacer's own 502, 503 and 504 answers.
	own [3]atomic.Uint64
}

// ownAnswer records one of pacer's own 502, 503 or 504 answers.
func (st *svcState) ownAnswer(status int) {
	if i := status - 502; i >= 0 && i < len(st.own) {
		st.own[i].Add(1)
	}
}

// observe records one answered request.
func (st *svcState) observe(status int, d time.Duration) {
	if c := status/100 - 1; c >= 0 && c < 5 {
		st.byClass[c].Add(1)
	}
	s := d.Seconds()
	i := 0
	for i < len(LatencyBuckets) && s > LatencyBuckets[i] {
		i++
	}
	st.buckets[i].Add(1)
	st.sumNanos.Add(uint64(d))
}

// ServiceStats is what Stats reports about one service, for /metrics.
type ServiceStats struct {
	App         string `json:"app"`
	PortIndex   int    `json:"port_index"`
	Name        string `json:"name"`
	ServicePort int    `json:"service_port"`
	// Responses counts answered requests by status class: [0] is 1xx
	// (including upgrades), [4] is 5xx (including pacer's own 502/503/504).
	Responses [5]uint64 `json:"responses"`
	// LatencyCounts are cumulative counts per LatencyBuckets bound, plus a
	// last one for +Inf (the total), as a Prometheus histogram wants them.
	LatencyCounts []uint64 `json:"latency_counts"`
	// LatencySum is the total latency in seconds.
	LatencySum float64 `json:"latency_sum"`
	// Retries counts requests sent again to another backend.
	Retries uint64 `json:"retries"`
	// Own counts the answers pacer wrote itself rather than pass on a
	// backend's, counted in Responses too: [0] 502 (the backend failed),
	// [1] 503 (no routable backend), [2] 504 (a timeout). Responses' 5xx
	// less these is the backends' own.
	Own [3]uint64 `json:"own"`
	// Active is the requests (and upgraded tunnels) in flight now.
	Active int64 `json:"active"`
}

// Totals counts requests no service answered.
type Totals struct {
	NotFound uint64 `json:"not_found"` // 404: no service for the Host/path
	Refused  uint64 `json:"refused"`   // 403 absolute-form to a foreign host, 405 CONNECT
	// InPoller counts the requests answered inside fastconn's poller, with
	// no goroutine woken (exchange.go); the others went fasthttp's way.
	InPoller uint64 `json:"in_poller"`
}

func (st *svcState) stats() ServiceStats {
	out := ServiceStats{
		App:           st.key.App,
		PortIndex:     st.key.PortIndex,
		Name:          st.name,
		ServicePort:   int(st.port.Load()),
		LatencyCounts: make([]uint64, len(st.buckets)),
		LatencySum:    time.Duration(st.sumNanos.Load()).Seconds(),
		Retries:       st.retries.Load(),
		Active:        st.active.Load(),
	}
	for i := range st.byClass {
		out.Responses[i] = st.byClass[i].Load()
	}
	for i := range st.own {
		out.Own[i] = st.own[i].Load()
	}
	var cum uint64
	for i := range st.buckets {
		cum += st.buckets[i].Load()
		out.LatencyCounts[i] = cum
	}
	return out
}
