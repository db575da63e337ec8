package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/dnsserver"
	healthcheck "github.com/pacer-lb/pacer/health"
	"github.com/pacer-lb/pacer/proxy"
	"github.com/pacer-lb/pacer/proxy/httpproxy"
)

// Deps are what the admin endpoints report on. Only Table is required.
type Deps struct {
	Table   *discovery.Table
	Sources []discovery.StatusReporter
	// Ports reports the service-port listeners; nil when there is no TCP proxy.
	Ports func() []proxy.PortStatus
	// ConnLimit reports the connection cap (--max-conns) both data planes
	// share; nil when there is none.
	ConnLimit func() proxy.ConnLimitStatus
	// Ready reports whether every source has synced and the listeners match
	// the table; nil means ready once every source has synced.
	Ready func() bool
	// HTTP reports the HTTP data plane's per-service counters; may be nil.
	HTTP func() []httpproxy.ServiceStats
	// Health reports pacer's own verdict on every backend (package health);
	// nil when there is no health checker.
	Health func() []healthcheck.Verdict
	// HealthStats reports the health checker's counters; may be nil.
	HealthStats func() healthcheck.Stats
	// DNS reports the DNS server's counters; nil when DNS is off.
	DNS func() dnsserver.Stats
	// Resync asks every source for a full resync; nil disables POST /v1/resync.
	Resync func()
	// Routes are further handlers by ServeMux pattern, e.g. the DNS HTTP API.
	Routes map[string]http.Handler
	// Version is pacer's version string.
	Version string
}

// Server is the admin HTTP server.
type Server struct {
	deps     Deps
	log      *zap.Logger
	srv      *http.Server
	started  time.Time
	draining atomic.Bool
	changes  changeLog
	resyncs  resyncLimiter
	// emptyGrace is how long a service may have no routable backend before
	// it is warned of (see alarms); tests shorten or lengthen it.
	emptyGrace time.Duration
}

// New returns an admin server for deps; call Serve to start it.
func New(deps Deps, log *zap.Logger) (*Server, error) {
	if deps.Table == nil {
		return nil, errors.New("admin: Deps.Table is required")
	}
	s := &Server{deps: deps, log: log.Named("admin"), started: time.Now(), resyncs: resyncLimiter{gap: minResyncGap}, emptyGrace: emptyGrace}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /_haproxy_health_check", s.healthz) // marathon-lb's monitor-uri
	mux.HandleFunc("GET /v1/services", s.services)
	mux.HandleFunc("POST /v1/resync", s.resync)
	mux.HandleFunc("GET /metrics", s.metrics)
	mux.HandleFunc("GET /v1/changes", s.changesHandler)
	mux.HandleFunc("GET /{$}", s.statusPage)
	for pattern, h := range deps.Routes {
		mux.Handle(pattern, h)
	}
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
	}
	return s, nil
}

// Serve serves on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.log.Info("admin listening", zap.Stringer("addr", ln.Addr()))
	if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin: serving on %s: %w", ln.Addr(), err)
	}
	return nil
}

// Handler returns the admin routes, for tests that use httptest.
func (s *Server) Handler() http.Handler { return s.srv.Handler }

// SetDraining makes /healthz fail from now on, so Marathon and peers stop
// sending traffic before the listeners close.
func (s *Server) SetDraining() { s.draining.Store(true) }

// Shutdown stops the admin server, waiting for requests in flight until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.resyncs.stop()
	return s.srv.Shutdown(ctx)
}

// health is the /healthz body.
type health struct {
	Status string `json:"status"`
	// Reason explains a status other than "ok".
	Reason  string         `json:"reason,omitempty"`
	Version uint64         `json:"table_version"`
	Uptime  string         `json:"uptime"`
	Sources []sourceHealth `json:"sources"`
}

type sourceHealth struct {
	discovery.SourceStatus
	// SyncAge is how old the table from this source is: time since its last
	// successful sync. While a source is down pacer serves its last good
	// table and this grows.
	SyncAge string `json:"sync_age,omitempty"`
	Stale   bool   `json:"stale"`
}

func (s *Server) healthReport() (int, health) {
	h := health{Status: "ok", Version: s.deps.Table.Snapshot().Version(), Uptime: time.Since(s.started).Round(time.Second).String()}
	code := http.StatusOK
	for _, src := range s.deps.Sources {
		st := src.Status()
		sh := sourceHealth{SourceStatus: st}
		if !st.LastSync.IsZero() {
			sh.SyncAge = time.Since(st.LastSync).Round(time.Millisecond).String()
		}
		sh.Stale = st.Synced && (!st.Connected || st.Behind != "")
		switch {
		case !st.Synced:
			code = http.StatusServiceUnavailable
			h.Status = "starting"
			h.Reason = fmt.Sprintf("waiting for the first sync from %s", st.Name)
		case sh.Stale && h.Status == "ok" && !st.Connected:
			h.Status = "stale"
			h.Reason = fmt.Sprintf("%s is unreachable; serving the last good table", st.Name)
		case sh.Stale && h.Status == "ok":
			h.Status = "stale"
			h.Reason = fmt.Sprintf("%s: %s, since %s; serving the last good table", st.Name, st.Behind, st.BehindSince.UTC().Format(time.RFC3339))
		}
		h.Sources = append(h.Sources, sh)
	}
	if code == http.StatusOK && s.deps.Ready != nil && !s.deps.Ready() {
		code, h.Status, h.Reason = http.StatusServiceUnavailable, "starting", "opening service-port listeners"
	}
	if s.draining.Load() {
		code, h.Status, h.Reason = http.StatusServiceUnavailable, "draining", "shutting down"
	}
	return code, h
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	code, h := s.healthReport()
	writeJSON(w, code, h)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
