package marathon

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/pacer-lb/pacer/discovery/marathonsim"
)

// Faults Marathon (or what stands in front of it) produces, against the
// simulator over real sockets. In each, the source keeps the last good
// table, says what happened in Status().LastError and the logs, and
// converges within seconds once Marathon recovers.

// recoverWithin bounds convergence after Marathon recovers. Backoff tops
// out at BackoffMax (200 ms in these tests, 5 s by default).
const recoverWithin = 5 * time.Second

func waitRecovered(t *testing.T, what string, since time.Time, cond func() bool) {
	t.Helper()
	waitFor(t, what, cond)
	if took := time.Since(since); took > recoverWithin {
		t.Errorf("%s took %v after recovery, want under %v", what, took, recoverWithin)
	}
}

// fetchBody GETs a sim URL the way the source would.
func fetchBody(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A failing GET /v2/apps in every way we know keeps the last table.
func TestFaultSnapshot(t *testing.T) {
	t.Parallel()
	const limit = 4 << 20
	huge := func(contentLength bool) func(w http.ResponseWriter, r *http.Request) {
		return func(w http.ResponseWriter, r *http.Request) {
			const size = 20 << 20
			if contentLength {
				w.Header().Set("Content-Length", fmt.Sprint(size))
			}
			w.Header().Set("Content-Type", "application/json")
			chunk := []byte(`{"apps":[` + strings.Repeat(" ", 64<<10-9))
			for n := 0; n < size; n += len(chunk) {
				if _, err := w.Write(chunk); err != nil {
					return
				}
				chunk = []byte(strings.Repeat(" ", 64<<10))
			}
		}
	}
	tests := []struct {
		name   string
		serve  func(real []byte) func(w http.ResponseWriter, r *http.Request)
		errHas string
	}{
		{"500", func([]byte) func(w http.ResponseWriter, r *http.Request) {
			return func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, `{"message":"An unexpected server error occurred."}`, http.StatusInternalServerError)
			}
		}, "HTTP 500"},
		{"garbage", func([]byte) func(w http.ResponseWriter, r *http.Request) {
			return func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, "<html><body>502 Bad Gateway</body></html>")
			}
		}, "decoding apps"},
		{"half a JSON document", func(real []byte) func(w http.ResponseWriter, r *http.Request) {
			return func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write(real[:len(real)/2]) // a clean end: chunked
			}
		}, "decoding apps"},
		{"body cut short", func(real []byte) func(w http.ResponseWriter, r *http.Request) {
			return func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", fmt.Sprint(len(real)))
				_, _ = w.Write(real[:len(real)/2]) // then the connection closes
			}
		}, "unexpected EOF"},
		{"no answer", func([]byte) func(w http.ResponseWriter, r *http.Request) {
			return func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
		}, "no complete answer within 300ms"},
		{"body trickles", func(real []byte) func(w http.ResponseWriter, r *http.Request) {
			return func(w http.ResponseWriter, r *http.Request) {
				for _, b := range real {
					if _, err := w.Write([]byte{b}); err != nil {
						return
					}
					w.(http.Flusher).Flush()
					select {
					case <-r.Context().Done():
						return
					case <-time.After(50 * time.Millisecond):
					}
				}
			}
		}, "no complete answer within 300ms"},
		{"20 MB with Content-Length", func([]byte) func(w http.ResponseWriter, r *http.Request) { return huge(true) },
			"larger than the 4194304-byte limit"},
		{"20 MB chunked", func([]byte) func(w http.ResponseWriter, r *http.Request) { return huge(false) },
			"larger than the 4194304-byte limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// The cases about the fetch timeout get a short one; the others
			// a long one, so that a loaded machine reading 4 MB slowly still
			// meets the failure the case is about.
			timeout := time.Minute
			if strings.Contains(tt.errHas, "within 300ms") {
				timeout = 300 * time.Millisecond
			}
			sim := newSim(t, marathonsim.Config{})
			createApp(t, sim, marathonsim.AppSpec{ID: "/web", Instances: 2})
			src, tb, logs := startLogged(t, Config{
				URLs:         []string{withCreds(sim.URL())},
				FetchTimeout: timeout,
				MaxBodyBytes: limit,
			})
			waitSim(t, tb, sim, "/web")
			good := tb.Snapshot()
			real := fetchBody(t, sim.URL()+"/v2/apps?embed=apps.tasks&embed=apps.readiness")

			serve := tt.serve(real)
			sim.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
				if r.URL.Path != "/v2/apps" {
					return false
				}
				serve(w, r)
				return true
			})
			// Marathon changes, and the event is lost: only a snapshot
			// can show it.
			sim.Silently(func() {
				if err := sim.Scale("/web", 3); err != nil {
					t.Error(err)
				}
			})
			before := src.Status().ErrorAt
			src.Resync()
			waitFor(t, "the error", func() bool {
				st := src.Status()
				return st.ErrorAt.After(before) && strings.Contains(st.LastError, tt.errHas)
			})
			if tb.Snapshot() != good {
				t.Fatal("the table changed")
			}
			// Events still apply: the table is current, only the resync
			// failed.
			if st := src.Status(); st.Behind != "" {
				t.Fatalf("behind %q after a failed resync with events applying", st.Behind)
			}
			// The status is recorded before the warning is written.
			waitFor(t, fmt.Sprintf("a warning in the logs mentioning %q", tt.errHas), func() bool { return logged(logs, tt.errHas) })

			// The stream reconnects: its events wait for a snapshot that
			// fails, so the stream is up and the table stands still. The
			// status says so (for /healthz), not only the log.
			sim.DropStreams()
			waitFor(t, "behind, with the stream up again", func() bool {
				st := src.Status()
				return st.Connected && strings.Contains(st.Behind, "events held") && !st.BehindSince.IsZero()
			})

			sim.Intercept(nil)
			waitRecovered(t, "convergence", time.Now(), func() bool {
				want := simBackends(sim, "/web")
				return len(want) == 3 && slices.Equal(backends(tb, "/web"), want)
			})
			// The status follows the table's publication.
			waitFor(t, "behind cleared by a good snapshot", func() bool {
				st := src.Status()
				return st.Behind == "" && st.LastSync.After(st.ErrorAt)
			})
		})
	}
}

// Nobody leads (an election): /v2/leader says 404, everything else 502
// "Could not determine the current leader" after Marathon's hold.
func TestFaultNoLeader(t *testing.T) {
	t.Parallel()
	sim := newSim(t, marathonsim.Config{NoLeaderHold: 50 * time.Millisecond})
	createApp(t, sim, marathonsim.AppSpec{ID: "/web", Instances: 2})
	src, tb, logs := startLogged(t, Config{URLs: []string{withCreds(sim.URL())}})
	waitSim(t, tb, sim, "/web")
	good := tb.Snapshot()

	sim.SetNoLeader(true)
	waitFor(t, "no leader reported", func() bool {
		st := src.Status()
		return !st.Connected && strings.Contains(st.LastError, "There is no leader")
	})
	src.Resync()
	waitFor(t, "the snapshot's error", func() bool {
		return strings.Contains(src.Status().LastError, "Could not determine the current leader")
	})
	if tb.Snapshot() != good {
		t.Fatal("the table changed")
	}
	waitFor(t, "the logs saying there is no leader", func() bool {
		return logged(logs, "no Marathon leader") && logged(logs, "HTTP 502")
	})
	sim.Silently(func() {
		if err := sim.Scale("/web", 3); err != nil {
			t.Error(err)
		}
	})

	sim.SetNoLeader(false)
	waitRecovered(t, "convergence", time.Now(), func() bool {
		want := simBackends(sim, "/web")
		return len(want) == 3 && slices.Equal(backends(tb, "/web"), want) && src.Status().Connected
	})
}

// The stream closes in the middle of an event: the partial event is
// dropped (never applied), the source reconnects and resyncs.
func TestFaultStreamClosesMidEvent(t *testing.T) {
	t.Parallel()
	sim := newSim(t, marathonsim.Config{})
	createApp(t, sim, marathonsim.AppSpec{ID: "/web", Instances: 2})
	src, tb, _ := startLogged(t, Config{URLs: []string{withCreds(sim.URL())}})
	waitSim(t, tb, sim, "/web")
	waitFor(t, "connected", func() bool { return src.Status().Connected })
	victim := sim.Tasks("/web")[0]

	var cut atomic.Bool
	sim.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/v2/events" || !cut.CompareAndSwap(false, true) {
			return false
		}
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return true
		}
		defer conn.Close()
		bw := bufio.NewWriter(conn)
		// A whole data line, but no blank line to dispatch it.
		fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream;charset=utf-8\r\nConnection: close\r\n\r\n"+
			"event: status_update_event\r\ndata: {\"taskId\":%q,\"taskStatus\":\"TASK_KILLED\",\"appId\":\"/web\",\"host\":\"127.0.0.1\",\"ports\":[%d],\"eventType\":\"status_update_event\"}\r\n",
			victim.ID, victim.Ports[0])
		_ = bw.Flush()
		return true
	})
	events, reconnects := src.Status().Events, src.Status().Reconnects
	sim.DropStreams()
	waitFor(t, "two reconnects", func() bool { return src.Status().Reconnects >= reconnects+2 && src.Status().Connected })
	if got := src.Status().Events; got != events {
		t.Errorf("events = %d, want %d: the partial event was dispatched", got, events)
	}
	if st := src.Status(); st.DecodeErrors != 0 {
		t.Errorf("decode errors = %d", st.DecodeErrors)
	}
	waitSim(t, tb, sim, "/web")
}

// A 200 that closes at once (a new leader still preparing) is retried
// with growing backoff, not in a tight loop, and reported.
func TestFaultStreamClosesAtOnce(t *testing.T) {
	t.Parallel()
	sim := newSim(t, marathonsim.Config{})
	createApp(t, sim, marathonsim.AppSpec{ID: "/web", Instances: 2})
	var closing atomic.Bool
	var mu sync.Mutex
	var attempts []time.Time
	sim.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/v2/events" || !closing.Load() {
			return false
		}
		mu.Lock()
		attempts = append(attempts, time.Now())
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream;charset=utf-8")
		w.WriteHeader(http.StatusOK)
		return true
	})
	src, tb, logs := startLogged(t, Config{URLs: []string{sim.URL()}, BackoffMin: 20 * time.Millisecond, BackoffMax: time.Second})
	waitSim(t, tb, sim, "/web")
	before := backends(tb, "/web")
	closing.Store(true)
	sim.DropStreams()
	waitFor(t, "six short-lived streams", func() bool { mu.Lock(); defer mu.Unlock(); return len(attempts) >= 6 })
	mu.Lock()
	span := attempts[5].Sub(attempts[0])
	mu.Unlock()
	// Waits before attempts 2..6 are at least half of 20, 40, 80, 160 and
	// 320 ms: a stream that closes at once must not reset the backoff.
	if span < 310*time.Millisecond {
		t.Errorf("six attempts within %v: not backing off", span)
	}
	if e := src.Status().LastError; !strings.Contains(e, "closed by Marathon") {
		t.Errorf("LastError = %q", e)
	}
	// Reported once, not three lines a cycle: each cycle connects,
	// disconnects and resyncs.
	for msg, most := range map[string]int{"event stream disconnected": 2, "connected to the event stream": 2, "resync done": 1} {
		n := 0
		for _, e := range logs.FilterMessageSnippet(msg).All() {
			if e.Level >= zapcore.InfoLevel {
				n++
			}
		}
		if n > most {
			t.Errorf("%q logged %d times at info or above over six flaps, want at most %d", msg, n, most)
		}
	}
	if got := backends(tb, "/web"); !slices.Equal(got, before) {
		t.Errorf("backends changed: %q, want %q", got, before)
	}
	closing.Store(false)
	waitRecovered(t, "a lasting stream", time.Now(), func() bool { return src.Status().Connected && sim.Streams() == 1 })
}

// Events out of order or repeated: a stale TASK_RUNNING does not bring a
// killed task back, TASK_STAGING after TASK_RUNNING does not take a task
// out, and repeats change nothing.
func TestFaultEventsOutOfOrderAndRepeated(t *testing.T) {
	t.Parallel()
	sim := newSim(t, marathonsim.Config{})
	createApp(t, sim, marathonsim.AppSpec{ID: "/web", Instances: 3})
	var reqs requestLog
	reqs.install(sim)
	src, tb, _ := startLogged(t, Config{URLs: []string{sim.URL()}})
	waitSim(t, tb, sim, "/web")
	waitFor(t, "connected", func() bool { return src.Status().Connected })
	tasks := sim.Tasks("/web")
	status := func(ti marathonsim.TaskInfo, state string) map[string]any {
		return map[string]any{"slaveId": "S1", "taskId": ti.ID, "taskStatus": state, "message": "", "appId": "/web",
			"host": ti.Host, "ipAddresses": []any{}, "ports": ti.Ports}
	}
	events := src.Status().Events
	// Repeats of what Marathon already said.
	for range 5 {
		sim.Emit(evStatusUpdate, status(tasks[1], stateRunning))
	}
	waitFor(t, "repeats read", func() bool { return src.Status().Events >= events+5 })
	if n := reqs.count("/v2/apps/web"); n != 0 {
		t.Errorf("%d app fetches for repeated status updates, want none", n)
	}
	// The kill, then a late TASK_RUNNING for the killed task.
	if err := sim.KillTask(tasks[0].ID, marathonsim.KillOptions{NoRestart: true}); err != nil {
		t.Fatal(err)
	}
	sim.Emit(evStatusUpdate, status(tasks[0], stateRunning))
	// A TASK_STAGING that belongs before TASK_RUNNING.
	sim.Emit(evStatusUpdate, status(tasks[2], stateStaging))
	waitFor(t, "events read", func() bool { return src.Status().Events >= events+8 })
	waitSim(t, tb, sim, "/web")
	want := simBackends(sim, "/web")
	if len(want) != 2 {
		t.Fatalf("sim backends = %q", want)
	}
	// Give the state goroutine the same events again after a resync: the
	// answer must not change.
	resyncs := src.Status().Resyncs
	src.Resync()
	waitFor(t, "resync", func() bool { return src.Status().Resyncs > resyncs })
	if got := backends(tb, "/web"); !slices.Equal(got, want) {
		t.Errorf("backends = %q, want %q", got, want)
	}
}

// A resync an operator asks for (SIGHUP, POST /v1/resync) reports its
// result at info every time: only those a reconnecting stream brings are
// quieted.
func TestRequestedResyncsLogged(t *testing.T) {
	t.Parallel()
	sim := newSim(t, marathonsim.Config{})
	createApp(t, sim, marathonsim.AppSpec{ID: "/web", Instances: 1})
	src, tb, logs := startLogged(t, Config{URLs: []string{sim.URL()}})
	waitSim(t, tb, sim, "/web")
	for i := range 2 {
		before := src.Status().Resyncs
		src.Resync()
		waitFor(t, fmt.Sprintf("resync %d", i+1), func() bool { return src.Status().Resyncs > before })
	}
	// The count is bumped just before the line is written.
	waitFor(t, "\"resync done\" at info for the first sync and the two requested", func() bool {
		n := 0
		for _, e := range logs.FilterMessage("resync done").All() {
			if e.Level >= zapcore.InfoLevel {
				n++
			}
		}
		return n >= 3
	})
}
