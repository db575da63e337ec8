package marathonsim

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Errors returned by the Server's methods, for errors.Is.
var (
	ErrClosed      = errors.New("marathonsim: server closed")
	ErrUnknownApp  = errors.New("app does not exist")
	ErrUnknownTask = errors.New("task does not exist")
	ErrAppExists   = errors.New("app already exists")
)

// InterceptFunc sees every request before the simulator does. It returns true
// when it has answered the request itself.
type InterceptFunc func(w http.ResponseWriter, r *http.Request) bool

// Server is a fake Marathon. Create it with New, serve with Start, stop with
// Close. Its methods are safe for concurrent use.
type Server struct {
	cfg       Config
	ver       version
	feat      features
	heartbeat time.Duration
	restart   time.Duration
	cfgErr    error

	frameworkID string
	agents      []string // Mesos agent ids tasks are "placed" on, round-robin

	proxy     *httputil.ReverseProxy  // standby only
	transport *http.Transport         // standby only: the proxy's, so Close can drop its idle connections
	leader    atomic.Pointer[url.URL] // standby only: the leader (Config.Leader, then SetLeader)

	noLeader atomic.Bool // SetNoLeader: an election is in progress

	intercept atomic.Pointer[InterceptFunc]
	silent    atomic.Int32 // > 0 while a Silently call runs

	// mu guards everything below. Events are framed and queued under it, so
	// their order on every stream matches the order of the state changes.
	mu             sync.Mutex
	closed         bool
	srv            *http.Server
	addr           string // host:port once started
	apps           map[string]*app
	nextAgent      int
	streams        map[*stream]struct{}
	streamsChanged chan struct{} // closed and replaced when streams change
	timers         map[*time.Timer]struct{}
	// wg counts every goroutine the Server starts and every request in
	// flight. Add is only called under mu with closed false, so no Add can
	// race with Close's Wait.
	wg sync.WaitGroup
}

// New returns a Server configured by cfg. It does not listen until Start; an
// invalid cfg is reported by Start.
func New(cfg Config) *Server {
	if cfg.Version == "" {
		cfg.Version = defaultVersion
	}
	s := &Server{
		cfg:            cfg,
		heartbeat:      cfg.Heartbeat,
		restart:        cfg.RestartDelay,
		frameworkID:    newUUID() + "-0000",
		apps:           make(map[string]*app),
		streams:        make(map[*stream]struct{}),
		streamsChanged: make(chan struct{}),
		timers:         make(map[*time.Timer]struct{}),
	}
	if s.heartbeat <= 0 {
		s.heartbeat = defaultHeartbeat
	}
	if s.restart == 0 {
		s.restart = defaultRestartDelay
	}
	s.ver, s.cfgErr = parseVersion(cfg.Version)
	s.feat = featuresOf(s.ver)
	agentBase := newUUID()
	for i := range 3 {
		s.agents = append(s.agents, fmt.Sprintf("%s-S%d", agentBase, i))
	}
	if cfg.Leader != "" && s.cfgErr == nil {
		s.cfgErr = s.setupStandby(cfg.Leader)
	}
	return s
}

// Start listens on addr (e.g. "127.0.0.1:0") and serves in the background.
func (s *Server) Start(addr string) error {
	if s.cfgErr != nil {
		return s.cfgErr
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("marathonsim: listening on %s: %w", addr, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		ln.Close()
		return ErrClosed
	case s.srv != nil:
		ln.Close()
		return errors.New("marathonsim: already started")
	}
	s.addr = ln.Addr().String()
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(logWriter{s}, "", 0),
	}
	s.wg.Add(1)
	go s.serve(s.srv, ln)
	return nil
}

func (s *Server) serve(srv *http.Server, ln net.Listener) {
	defer s.wg.Done()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.logf("marathonsim: serving: %v", err)
	}
}

// URL is the base URL clients use, "http://127.0.0.1:PORT"; "" before Start.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.addr == "" {
		return ""
	}
	return "http://" + s.addr
}

// hostPort is this Marathon's "host:port" as /v2/leader reports it.
func (s *Server) hostPortLocked() string { return s.addr }

// Close stops the HTTP server, every event stream and every task, and waits
// for all goroutines the Server started. It is safe to call more than once.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	srv := s.srv
	s.dropStreamsLocked()
	for t := range s.timers {
		if t.Stop() {
			s.wg.Done() // its callback will never run
		}
	}
	clear(s.timers)
	for _, a := range s.apps {
		for _, t := range a.tasks {
			s.stopProcessLocked(t, false)
		}
	}
	s.mu.Unlock()
	if srv != nil {
		srv.Close() // closes the listener and every connection not hijacked
	}
	s.wg.Wait()
	if s.transport != nil {
		s.transport.CloseIdleConnections()
	}
}

// Intercept installs fn to run before every request; fn returns true when it
// answered the request (tests use it for 500s, garbage, half JSON, slow or
// huge bodies). nil removes the hook. A slow fn should stop when
// r.Context() is done, since Close waits for requests in flight.
func (s *Server) Intercept(fn func(w http.ResponseWriter, r *http.Request) bool) {
	if fn == nil {
		s.intercept.Store(nil)
		return
	}
	f := InterceptFunc(fn)
	s.intercept.Store(&f)
}

// ServeHTTP answers one request as Marathon would. Start uses it; it is
// exported so a test can mount the simulator elsewhere.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		http.Error(w, "marathonsim: closed", http.StatusServiceUnavailable)
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	if fn := s.intercept.Load(); fn != nil && (*fn)(w, r) {
		return
	}
	if s.noLeader.Load() {
		s.serveNoLeader(w, r)
		return
	}
	if s.proxy != nil {
		s.serveStandby(w, r)
		return
	}
	s.route(w, r)
}

// parseLeader validates a leader URL.
func parseLeader(leader string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimRight(leader, "/"))
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("marathonsim: Leader %q: want http[s]://host:port", leader)
	}
	return u, nil
}

// setupStandby prepares the leader proxy (marathon-api.md §1.5).
func (s *Server) setupStandby(leader string) error {
	u, err := parseLeader(leader)
	if err != nil {
		return err
	}
	s.leader.Store(u)
	// Marathon's leader proxy timeouts: --leader_proxy_connection_timeout
	// 5000 ms (§6); its read timeout would cut the proxied event stream.
	s.transport = &http.Transport{
		DialContext:  (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns: 16,
	}
	s.proxy = &httputil.ReverseProxy{
		Transport: s.transport,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(s.leader.Load())
			pr.Out.Header.Add("Via", "1.1 "+s.viaHost())
		},
		ModifyResponse: func(resp *http.Response) error {
			resp.Header.Add("Via", "1.1 "+s.viaHost())
			return nil
		},
		// The proxied stream of Marathon < 1.7 must not sit in a buffer.
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			s.logf("marathonsim: proxying to leader %s: %v", s.leader.Load(), err)
			// 502 is what 1.7+ answers when the leader cannot be reached (§1.5).
			writeJSON(w, http.StatusBadGateway, obj{{"message", "Could not determine the current leader"}})
		},
		ErrorLog: log.New(logWriter{s}, "", 0),
	}
	return nil
}

// SetLeader points a standby (a Server made with Config.Leader) at another
// leader, as after a Marathon leader election. Event streams proxied
// before 1.7 stay on the old leader until it closes them.
func (s *Server) SetLeader(leader string) error {
	if s.proxy == nil {
		return errors.New("marathonsim: SetLeader on a leader (set Config.Leader to make a standby)")
	}
	u, err := parseLeader(leader)
	if err != nil {
		return err
	}
	s.leader.Store(u)
	return nil
}

// SetNoLeader simulates an election in progress (on a leader or a
// standby): every event stream is closed; while it lasts GET /v2/leader
// answers 404 {"message":"There is no leader"} and every other request is
// held for Config.NoLeaderHold and then fails with "Could not determine
// the current leader", 502 from 1.7 and 503 before (§1.5, §3.4).
func (s *Server) SetNoLeader(on bool) {
	s.noLeader.Store(on)
	if on {
		s.DropStreams()
	}
}

// serveNoLeader answers a request while nobody leads.
func (s *Server) serveNoLeader(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v2/leader" {
		writeJSON(w, http.StatusNotFound, obj{{"message", "There is no leader"}})
		return
	}
	// Marathon retries 10 times, 250 ms apart, before giving up.
	if hold := s.noLeaderHold(); hold > 0 {
		t := time.NewTimer(hold)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	status := http.StatusBadGateway
	if !s.feat.redirectEvents {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, obj{{"message", "Could not determine the current leader"}})
}

func (s *Server) noLeaderHold() time.Duration {
	switch h := s.cfg.NoLeaderHold; {
	case h < 0:
		return 0
	case h == 0:
		return defaultNoLeaderHold
	default:
		return h
	}
}

func (s *Server) viaHost() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hostPortLocked()
}

// serveStandby redirects or proxies a request to the leader.
func (s *Server) serveStandby(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v2/events" && s.feat.redirectEvents {
		// 1.7+: Location is the leader's /v2/events with the original query (§1.5).
		loc := s.leader.Load().String() + "/v2/events"
		if r.URL.RawQuery != "" {
			loc += "?" + r.URL.RawQuery
		}
		w.Header().Set("Location", loc)
		w.WriteHeader(http.StatusFound)
		return
	}
	s.proxy.ServeHTTP(w, r)
}

func (s *Server) logf(format string, args ...any) {
	if s.cfg.Logf != nil {
		s.cfg.Logf(format, args...)
	}
}

// logWriter sends net/http's internal log lines to Config.Logf.
type logWriter struct{ s *Server }

func (l logWriter) Write(p []byte) (int, error) {
	l.s.logf("%s", strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

var _ io.Writer = logWriter{}
var _ http.Handler = (*Server)(nil)
