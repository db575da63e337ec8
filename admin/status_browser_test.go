package admin

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pacer-lb/pacer/discovery"
)

// chromium finds Debian's headless browser, failing with the fix if it is missing.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium not found: run `make test`, which installs Debian's chromium package")
	return ""
}

// renderDOM loads url in headless Chromium, lets its scripts run for budget of
// virtual time, and returns the DOM as a person would then see it. Chromium
// has crashed here once (SIGSEGV, nothing to do with the page): a death by
// a signal is retried once, with its stderr in the log.
func renderDOM(t *testing.T, url string, budget time.Duration) string {
	t.Helper()
	for attempt := 1; ; attempt++ {
		out, stderr, err := runChromium(t, url, budget)
		if err == nil {
			return out
		}
		if attempt == 1 && diedBySignal(err) {
			t.Logf("chromium died (%v); trying once more. Its stderr:\n%s", err, stderr)
			continue
		}
		t.Fatalf("chromium: %v\nits stderr:\n%s", err, stderr)
	}
}

// runChromium runs one headless Chromium in its own process group, and
// kills the whole group when it is done: Chromium's renderer and zygote
// children inherit its stdout, and one left running would keep Output
// waiting for EOF until the package's timeout.
func runChromium(t *testing.T, url string, budget time.Duration) (dom, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium(t),
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+t.TempDir(),
		"--virtual-time-budget="+strconv.Itoa(int(budget/time.Millisecond)),
		"--dump-dom", url)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// Once Chromium exits (or the timeout kills it), stop waiting for its
	// children to close the pipes.
	cmd.WaitDelay = 5 * time.Second
	var errBuf bytes.Buffer
	cmd.Stderr = &errBuf
	out, err := cmd.Output()
	if cmd.Process != nil {
		// The group is ours (Setpgid): whatever of it is left goes too.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if errors.Is(err, exec.ErrWaitDelay) {
		// Chromium itself exited 0 with the DOM written; a child of it
		// held the pipe open.
		err = nil
	}
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return string(out), errBuf.String(), err
}

// diedBySignal reports whether err is a process's death by a signal it did
// not get from the test's timeout (which shows as the context's error).
func diedBySignal(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() != syscall.SIGKILL
}

// The status page, rendered by a real browser, shows what an operator needs
// at a glance, and follows the table by itself.
func TestStatusPageInBrowser(t *testing.T) {
	s, table, src := newTestServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.FollowChanges(ctx)
	broken := &discovery.App{ID: "/broken", Problem: `label HAPROXY_0_PORT: "x" is not a port`}
	table.Apply(discovery.Update{Source: "marathon", Full: true, Apps: []*discovery.App{webApp(), broken}})
	src.st.Synced, src.st.Connected, src.st.LastSync = true, true, time.Now()
	// An error a later sync resolved: history, not an alarm.
	src.st.LastError, src.st.ErrorAt = "event stream closed by Marathon", src.st.LastSync.Add(-time.Minute)

	// After the page's first look at /v1/services, a second task joins: a
	// later refresh of the same page must show it without a reload.
	var fetches atomic.Int32
	h := s.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/services" && fetches.Add(1) == 1 {
			h.ServeHTTP(w, r)
			a := webApp()
			a.Services[0].Backends = append(a.Services[0].Backends, discovery.Backend{TaskID: "shop_web.3", Addr: netip.MustParseAddrPort("10.0.0.3:31002")})
			table.Apply(discovery.Update{Source: "marathon", Apps: []*discovery.App{a}})
			return
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()

	dom := renderDOM(t, srv.URL+"/", 5*time.Second)
	for _, want := range []string{
		"<title>pacer</title>",
		"/shop/web", ">8000<", "web-shop", // the service row: app, port, DNS name
		"10.0.0.1:31000", "10.0.0.3:31002", // both backends, the second from a later refresh
		`is not a port`,                 // the app pacer could not understand, and why
		"shop_web.2", "not running yet", // a task not routed, and why
		"http://marathon:8080", ">live<", // the source and its state
		"event stream closed by Marathon (at ", ", since resolved)<",
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the rendered page lacks %q", want)
		}
	}
	if fetches.Load() < 2 {
		t.Errorf("the page fetched /v1/services %d times; it must refresh by itself", fetches.Load())
	}
	if t.Failed() {
		t.Logf("rendered DOM:\n%s", dom)
	}

	// The stream up but the snapshot failing: the source is behind, and
	// its error is current.
	src.set(func(st *discovery.SourceStatus) {
		st.Behind, st.BehindSince = "full resync (GET /v2/apps) failing: 500", time.Now()
		st.LastError, st.ErrorAt = "GET /v2/apps: 500", time.Now()
	})
	dom = renderDOM(t, srv.URL+"/", 2*time.Second)
	for _, want := range []string{`class="bad">behind: full resync (GET /v2/apps) failing: 500<`, `class="bad">GET /v2/apps: 500<`} {
		if !strings.Contains(dom, want) {
			t.Errorf("the rendered page, source behind, lacks %q\n%s", want, dom)
		}
	}
}

// Behind a proxy that serves pacer under a path, as DC/OS's Admin Router
// serves a Marathon app's first port at /service/<app>/, the status page
// still reaches its data: its requests are relative to where it was loaded.
func TestStatusPageUnderAPathPrefix(t *testing.T) {
	s, table, src := newTestServer(t)
	table.Apply(discovery.Update{Source: "marathon", Full: true, Apps: []*discovery.App{webApp()}})
	src.set(func(st *discovery.SourceStatus) { st.Synced, st.Connected, st.LastSync = true, true, time.Now() })
	mux := http.NewServeMux()
	mux.Handle("/service/pacer/", http.StripPrefix("/service/pacer", s.Handler()))
	srv := httptest.NewServer(mux) // anything else: 404, as the proxy's own paths would be
	defer srv.Close()

	dom := renderDOM(t, srv.URL+"/service/pacer/", 2*time.Second)
	for _, want := range []string{"/shop/web", "10.0.0.1:31000", ">live<"} {
		if !strings.Contains(dom, want) {
			t.Errorf("the page served under /service/pacer/ lacks %q", want)
		}
	}
	if !strings.Contains(dom, `<div id="meta">table version`) {
		t.Error("the page served under /service/pacer/ did not reach its data (asked the proxy's root?)")
	}
	if t.Failed() {
		t.Logf("rendered DOM:\n%s", dom)
	}
}
