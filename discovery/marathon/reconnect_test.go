package marathon

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/pacer-lb/pacer/discovery"
)

// handLoop is a state goroutine driven by the test, step by step, against a
// real HTTP Marathon at url: the test decides in which order the stream's
// notices, queued events and fetch answers reach it, which Run leaves to a
// select.
func handLoop(t *testing.T, url string) (*loop, *discovery.Table) {
	t.Helper()
	table := discovery.NewTable()
	s, err := New(Config{URLs: []string{url}}, table, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	l := newLoop(s, ctx, &wg)
	l.retryTimer = time.NewTimer(time.Hour)
	l.retryTimer.Stop()
	l.resyncTimer = time.NewTimer(time.Hour)
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		l.resyncTimer.Stop()
	})
	return l, table
}

// nextResult waits for the fetch the loop started.
func (l *loop) nextResult(t *testing.T) fetchResult {
	t.Helper()
	select {
	case r := <-l.results:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no fetch answer")
		return fetchResult{}
	}
}

func pushEvent(t *testing.T, q *eventQueue, eventType string, data map[string]any) {
	t.Helper()
	data["eventType"] = eventType
	b, err := json.Marshal(data)
	if err != nil {
		t.Fatal(err)
	}
	q.Push(b)
}

// Events the state goroutine had not taken yet when the stream dropped came
// from before the gap: the snapshot taken after the new subscription already
// covers them. Held and replayed on top of it, as if newer, a TASK_RUNNING
// (or alive=true) from before the gap brought back a task that died while no
// stream was up, and it stayed routed until the next periodic resync.
func TestReconnectDoesNotReplayEventsFromBeforeTheGap(t *testing.T) {
	t.Parallel()
	f := newFakeMarathon(t, &fakeApp{ID: "/web", Port: 10000, Tasks: []fakeTask{{ID: "web.1", Host: "127.0.0.1", Port: 31001}}})
	l, table := handLoop(t, f.srv.URL)

	// First stream: subscribe, snapshot.
	l.onConn(connNotice{up: true})
	l.onFull(l.nextResult(t))
	want := []string{"web.1@127.0.0.1:31001"}
	if got := backends(table, "/web"); !slices.Equal(got, want) {
		t.Fatalf("after the first sync: %q, want %q", got, want)
	}

	// web.2 starts; its TASK_RUNNING is read off the first stream but not
	// yet taken by the state goroutine (busy: a big resync, a slow DNS
	// lookup) when that stream drops. While no stream is up web.2 dies,
	// and its TASK_KILLED is lost with the gap. The stream reconnects (a
	// leader change reconnects at once) and its notice is picked first.
	pushEvent(t, l.s.queue, evStatusUpdate, statusUpdate("/web", "web.2", stateRunning, "127.0.0.1", 31002))
	l.onConn(connNotice{})
	l.onConn(connNotice{up: true})
	l.onFull(l.nextResult(t)) // Marathon lists web.1 alone
	l.drain()

	if got := backends(table, "/web"); !slices.Equal(got, want) {
		t.Fatalf("after the reconnect's snapshot: %q, want %q (web.2 died during the gap)", got, want)
	}
}

// A leader change cuts the fetches still in flight to the old leader. One
// that hangs there (a partitioned or crashed host answers nothing) held the
// new leader's snapshot, and every event of its stream waiting for it, for
// up to FetchTimeout (30 s by default) after the failover.
func TestLeaderChangeCutsFetchesToTheOldLeader(t *testing.T) {
	t.Parallel()
	web := func(tasks ...fakeTask) *fakeApp { return &fakeApp{ID: "/web", Port: 10000, Tasks: tasks} }
	web1 := fakeTask{ID: "web.1", Host: "127.0.0.1", Port: 31001}
	web2 := fakeTask{ID: "web.2", Host: "127.0.0.1", Port: 31002}
	old := newFakeMarathon(t, web(web1))
	next := newFakeMarathon(t, web(web1, web2))
	hook := &testLeader{url: old.srv.URL, changed: make(chan struct{})}
	src, table := startSource(t, Config{Leader: hook.Watch, FetchTimeout: time.Hour})
	hung := make(chan struct{})
	t.Cleanup(func() { close(hung) }) // before the fakes close and Run ends
	waitBackends(t, table, "/web", "web.1@127.0.0.1:31001")

	// The old leader stops answering while a resync asks it for /v2/apps.
	old.set(func(f *fakeMarathon) { f.onSnapshot = func() { <-hung } })
	n := old.countPath("/v2/apps")
	src.Resync()
	waitFor(t, "a resync hanging on the old leader", func() bool { return old.countPath("/v2/apps") > n })

	// ZooKeeper names the next leader, whose stream reports web.2.
	hook.set(next.srv.URL)
	next.stream(0).send(evStatusUpdate, statusUpdate("/web", "web.2", stateRunning, "127.0.0.1", 31002))
	waitBackends(t, table, "/web", "web.1@127.0.0.1:31001", "web.2@127.0.0.1:31002")
	if st := src.Status(); strings.Contains(st.LastError, "context canceled") || strings.Contains(st.LastError, "leader changed") {
		t.Errorf("the cut fetch reported as an error: %q", st.LastError)
	}
}
