package marathon

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/discovery/marathonsim"
)

// Configured with a standby only, the source finds the leader
// (GET /v2/leader through the standby) and talks to it directly; when that
// leader dies it falls back to the standby and finds the new one.
func TestLeaderFoundThroughStandby(t *testing.T) {
	t.Parallel()
	leader := newSim(t, marathonsim.Config{})
	createApp(t, leader, marathonsim.AppSpec{ID: "/web", Instances: 2})
	standby := newSim(t, marathonsim.Config{Leader: leader.URL()})
	var atLeader, atStandby requestLog
	atLeader.install(leader)
	atStandby.install(standby)

	src, tb, _ := startLogged(t, Config{URLs: []string{withCreds(standby.URL())}})
	waitSim(t, tb, leader, "/web")
	waitFor(t, "connected", func() bool { return src.Status().Connected })
	if ep := src.Status().Endpoint; ep != leader.URL() {
		t.Errorf("Endpoint = %q, want the leader %q", ep, leader.URL())
	}
	for _, r := range atStandby.all() {
		if r.URL.Path != "/v2/leader" {
			t.Errorf("standby saw %s: should have gone to the leader", r.URL.Path)
		}
	}
	for _, r := range atLeader.all() {
		if r.URL.Path != "/v2/leader" && r.Header.Get("Via") != "" {
			t.Errorf("leader saw %s through the standby", r.URL.Path)
		}
		if r.Header.Get("Authorization") == "" {
			t.Errorf("leader saw %s without credentials", r.URL.Path)
		}
	}

	// An election: a new leader with other tasks; the old one dies.
	next := newSim(t, marathonsim.Config{})
	createApp(t, next, marathonsim.AppSpec{ID: "/web", Instances: 3})
	if err := standby.SetLeader(next.URL()); err != nil {
		t.Fatal(err)
	}
	leader.Close()
	waitSim(t, tb, next, "/web")
	waitFor(t, "connected to the new leader", func() bool {
		return src.Status().Connected && src.Status().Endpoint == next.URL() && next.Streams() == 1
	})
}

// testLeader is a Config.Leader hook, shaped like zookeeper.LeaderWatcher.Watch.
type testLeader struct {
	mu      sync.Mutex
	url     string
	changed chan struct{}
}

func (l *testLeader) Watch() (string, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.url, l.changed
}

func (l *testLeader) set(u string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.url = u
	close(l.changed)
	l.changed = make(chan struct{})
}

// With Config.Leader (ZooKeeper), no URL is needed; a leader change moves
// the stream to the new leader and resyncs from it.
func TestLeaderHook(t *testing.T) {
	t.Parallel()
	one := newSim(t, marathonsim.Config{})
	createApp(t, one, marathonsim.AppSpec{ID: "/web", Instances: 2})
	two := newSim(t, marathonsim.Config{})
	createApp(t, two, marathonsim.AppSpec{ID: "/web", Instances: 3})
	hook := &testLeader{url: one.URL(), changed: make(chan struct{})}

	src, tb, _ := startLogged(t, Config{Leader: hook.Watch, Token: testToken})
	waitSim(t, tb, one, "/web")
	waitFor(t, "stream on the first leader", func() bool { return src.Status().Connected && one.Streams() == 1 })
	resyncs := src.Status().Resyncs

	hook.set(two.URL())
	waitSim(t, tb, two, "/web")
	waitFor(t, "stream moved", func() bool {
		return one.Streams() == 0 && two.Streams() == 1 && src.Status().Connected
	})
	st := src.Status()
	if st.Endpoint != two.URL() || st.Resyncs <= resyncs {
		t.Errorf("status = %+v", st)
	}
	if strings.Contains(st.LastError, "leader changed") {
		t.Errorf("a leader change reported as an error: %q", st.LastError)
	}
}

// Until ZooKeeper names a Marathon leader (every start with --marathon
// zk://, for a moment) the source waits, and says so once at info: no
// warning that the stream or the resync failed, which an operator would
// chase on every start. Then it syncs from the leader named.
func TestNoLeaderYetIsNoWarning(t *testing.T) {
	t.Parallel()
	sim := newSim(t, marathonsim.Config{})
	createApp(t, sim, marathonsim.AppSpec{ID: "/web", Instances: 2})
	hook := &testLeader{changed: make(chan struct{})}
	src, tb, logs := startLogged(t, Config{Leader: hook.Watch})
	waitFor(t, "the source to wait for a leader", func() bool {
		return logs.FilterMessage("waiting for ZooKeeper to name the Marathon leader").Len() == 1 &&
			strings.Contains(src.Status().LastError, "no Marathon leader known yet")
	})
	hook.set(sim.URL())
	waitSim(t, tb, sim, "/web")
	for _, e := range logs.All() {
		if e.Level >= zapcore.WarnLevel {
			t.Errorf("logged at %s before the first leader: %s %v", e.Level, e.Message, e.ContextMap())
		}
	}
}

// https with a CA file: without it the certificate is refused (and said
// so); with it the source syncs. Bad CA files fail New.
func TestCAFile(t *testing.T) {
	t.Parallel()
	sim := marathonsim.New(marathonsim.Config{RestartDelay: -1})
	t.Cleanup(sim.Close)
	createApp(t, sim, marathonsim.AppSpec{ID: "/web", Instances: 2})
	ts := httptest.NewUnstartedServer(sim)
	ts.StartTLS()
	t.Cleanup(ts.Close)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	url := strings.Replace(ts.URL, "https://", "https://pacer:"+testSecret+"@", 1)

	untrusting, _, _ := startLogged(t, Config{URLs: []string{url}})
	waitFor(t, "certificate error", func() bool {
		return strings.Contains(untrusting.Status().LastError, "certificate")
	})

	src, tb, _ := startLogged(t, Config{URLs: []string{url}, CAFile: ca})
	waitSim(t, tb, sim, "/web")
	waitFor(t, "connected", func() bool { return src.Status().Connected })

	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{filepath.Join(dir, "missing.pem"), notPEM} {
		if _, err := New(Config{URLs: []string{url}, CAFile: f}, discovery.NewTable(), nil); err == nil {
			t.Errorf("CAFile %s accepted", f)
		}
	}
	if _, err := New(Config{URLs: []string{url}, CAFile: ca, HTTPClient: &http.Client{Transport: http.NewFileTransport(http.Dir(dir))}}, discovery.NewTable(), nil); err == nil {
		t.Error("CAFile with a foreign transport accepted")
	}
}

// Credentials configured for https never go out over http: neither on a
// leader redirect (Marathon names an http leader unless --disable_http)
// nor by adopting an http leader found through an https standby.
func TestNoCredentialDowngrade(t *testing.T) {
	t.Parallel()
	s, err := New(Config{URLs: []string{"https://pacer:" + testSecret + "@standby:8443"}}, discovery.NewTable(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := s.client
	from, _ := http.NewRequest("GET", "https://standby:8443/v2/events", nil)
	from.Header.Set("Authorization", c.eps[0].auth)
	to, _ := http.NewRequest("GET", "http://leader:8080/v2/events", nil)
	if err := c.hc.CheckRedirect(to, []*http.Request{from}); err == nil || !strings.Contains(err.Error(), "clear text") {
		t.Errorf("redirect https->http with credentials: %v", err)
	}
	if to.Header.Get("Authorization") != "" {
		t.Error("credentials set on the http request")
	}
	same, _ := http.NewRequest("GET", "https://leader:8443/v2/events", nil)
	if err := c.hc.CheckRedirect(same, []*http.Request{from}); err != nil || same.Header.Get("Authorization") != c.eps[0].auth {
		t.Errorf("redirect https->https: %v, Authorization %q", err, same.Header.Get("Authorization"))
	}

	c.adopt(c.eps[0], "http://leader:8080", "test")
	if l, ok := c.leader.get(); ok {
		t.Errorf("adopted %s", l.redacted)
	}
	c.adopt(c.eps[0], "https://leader:8443", "test")
	if l, ok := c.leader.get(); !ok || l.redacted != "https://leader:8443" || l.auth != c.eps[0].auth {
		t.Errorf("leader = %+v, %v", l, ok)
	}
}

// A leader that takes connections and never answers (a JVM in a long GC
// pause, Jetty out of threads) is dropped like one that refuses them: the
// source asks the standby again and follows the new leader, instead of
// waiting on the hung one for ever.
func TestHungLeaderIsDropped(t *testing.T) {
	t.Parallel()
	leader := newSim(t, marathonsim.Config{})
	createApp(t, leader, marathonsim.AppSpec{ID: "/web", Instances: 2})
	standby := newSim(t, marathonsim.Config{Leader: leader.URL()})
	src, tb, _ := startLogged(t, Config{URLs: []string{withCreds(standby.URL())},
		StreamIdleTimeout: 500 * time.Millisecond, FetchTimeout: 500 * time.Millisecond})
	waitSim(t, tb, leader, "/web")
	waitFor(t, "the leader", func() bool { return src.Status().Endpoint == leader.URL() })

	next := newSim(t, marathonsim.Config{})
	createApp(t, next, marathonsim.AppSpec{ID: "/web", Instances: 3})
	leader.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		<-r.Context().Done() // accepted, never answered
		return true
	})
	if err := standby.SetLeader(next.URL()); err != nil {
		t.Fatal(err)
	}
	leader.DropStreams()
	waitSim(t, tb, next, "/web")
	waitFor(t, "the new leader", func() bool {
		return src.Status().Connected && src.Status().Endpoint == next.URL()
	})
}
