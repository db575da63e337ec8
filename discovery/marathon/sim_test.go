package marathon

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/discovery/marathonsim"
)

// Helpers for tests against marathonsim over real sockets.

// testSecret is the password every sim test puts in its Marathon URL; it
// must never show in logs or Status.
const testSecret = "s3cret-pw"

func newSim(t *testing.T, cfg marathonsim.Config) *marathonsim.Server {
	t.Helper()
	if cfg.RestartDelay == 0 {
		cfg.RestartDelay = -1
	}
	s := marathonsim.New(cfg)
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// withCreds puts user:testSecret into a sim URL.
func withCreds(u string) string {
	return strings.Replace(u, "http://", "http://pacer:"+testSecret+"@", 1)
}

func createApp(t *testing.T, s *marathonsim.Server, spec marathonsim.AppSpec) {
	t.Helper()
	if err := s.CreateApp(spec); err != nil {
		t.Fatal(err)
	}
}

// waitHealthy waits until every task of app has a passing check result.
func waitHealthy(t *testing.T, s *marathonsim.Server, app string) {
	t.Helper()
	waitFor(t, app+" healthy in the sim", func() bool {
		for _, ti := range s.Tasks(app) {
			if ti.Healthy == nil || !*ti.Healthy {
				return false
			}
		}
		return true
	})
}

// simBackends is what app's first service should route to: the sim's
// running tasks (and, when they have check results, alive ones), as
// "task@127.0.0.1:port" sorted by task id.
func simBackends(s *marathonsim.Server, app string, skip ...string) []string {
	var out []string
	for _, ti := range s.Tasks(app) {
		if ti.State != stateRunning || (ti.Healthy != nil && !*ti.Healthy) || slices.Contains(skip, ti.ID) {
			continue
		}
		out = append(out, ti.ID+"@"+ti.Host+":"+strconv.Itoa(ti.Ports[0]))
	}
	slices.Sort(out)
	return out
}

// waitSim waits until the table routes app exactly as the sim says.
func waitSim(t *testing.T, tb *discovery.Table, s *marathonsim.Server, app string, skip ...string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s backends to match the sim (have %q, sim %q)", app, backends(tb, app), simBackends(s, app, skip...)), func() bool {
		want := simBackends(s, app, skip...)
		return len(want) > 0 && slices.Equal(backends(tb, app), want)
	})
}

// startLogged runs a Source like startSource, with its logs also recorded.
func startLogged(t *testing.T, cfg Config) (*Source, *discovery.Table, *observer.ObservedLogs) {
	t.Helper()
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin = 10 * time.Millisecond
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = 200 * time.Millisecond
	}
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core))
	table := discovery.NewTable()
	s, err := New(cfg, table, log)
	if err != nil {
		t.Fatal(err)
	}
	runSource(t, s, func() { checkNoSecrets(t, s, logs) })
	return s, table, logs
}

// checkNoSecrets fails if the test password or token shows anywhere the
// source reports.
func checkNoSecrets(t *testing.T, s *Source, logs *observer.ObservedLogs) {
	t.Helper()
	st := s.Status()
	for _, v := range []string{st.Endpoint, st.LastError} {
		if strings.Contains(v, testSecret) || strings.Contains(v, testToken) {
			t.Errorf("Status shows a credential: %q", v)
		}
	}
	for _, e := range logs.All() {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += fmt.Sprintf(" %s=%v", k, v)
		}
		if strings.Contains(line, testSecret) || strings.Contains(line, testToken) ||
			strings.Contains(line, "cGFjZXI6") { // base64 of "pacer:", the basic-auth header
			t.Errorf("log shows a credential: %s", line)
		}
	}
}

const testToken = "tok-abcdef123456"

// logged reports whether a log entry at Warn or above mentions what.
func logged(logs *observer.ObservedLogs, what string) bool {
	for _, e := range logs.All() {
		if e.Level < zapcore.WarnLevel {
			continue
		}
		line := e.Message
		for _, v := range e.ContextMap() {
			line += fmt.Sprint(" ", v)
		}
		if strings.Contains(line, what) {
			return true
		}
	}
	return false
}

// requestLog counts the requests a sim sees (an Intercept that answers
// nothing itself).
type requestLog struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (l *requestLog) install(s *marathonsim.Server) {
	s.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		l.mu.Lock()
		l.reqs = append(l.reqs, r.Clone(context.Background()))
		l.mu.Unlock()
		return false
	})
}

// count returns how many requests had exactly this path.
func (l *requestLog) count(path string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.reqs {
		if r.URL.Path == path {
			n++
		}
	}
	return n
}

func (l *requestLog) all() []*http.Request {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.reqs)
}
