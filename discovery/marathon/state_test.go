package marathon

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func fetched(t *testing.T, js string) decodedApp {
	t.Helper()
	d := decodeOneApp(json.RawMessage(js))
	if d.Def == nil {
		t.Fatal(d.Problem)
	}
	return d
}

func taskIDs(a *appState) []string {
	var ids []string
	for id := range a.tasks {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func running(app, id string) *event {
	return &event{EventType: evStatusUpdate, AppID: app, TaskID: id, TaskStatus: stateRunning, Host: "10.0.0.1", Ports: []int{1}}
}

// A fetch answer is the truth as of when it was issued: events that came
// after it win, in both directions.
func TestStateFetchVersusNewerEvents(t *testing.T) {
	t.Parallel()
	s := newState()
	s.mergeFetched(fetched(t, `{"id":"/a","ports":[1],"tasks":[{"id":"a.1","state":"TASK_RUNNING"},{"id":"a.2","state":"TASK_RUNNING"}]}`), s.next())

	f := s.next() // a fetch is issued here...
	s.applyStatus(running("/a", "a.3"), s.next())
	s.applyStatus(&event{AppID: "/a", TaskID: "a.2", TaskStatus: stateKilled}, s.next())
	s.applyStatus(&event{AppID: "/a", TaskID: "a.1", TaskStatus: stateUnreachable}, s.next())
	// ...and answers with what Marathon knew before those events.
	s.mergeFetched(fetched(t, `{"id":"/a","ports":[1],"tasks":[{"id":"a.1","state":"TASK_RUNNING","healthCheckResults":[{"alive":true}]},{"id":"a.2","state":"TASK_RUNNING"}]}`), f)

	a := s.apps["/a"]
	if got := taskIDs(a); !slices.Equal(got, []string{"a.1", "a.3"}) {
		t.Fatalf("tasks = %q, want a.1 (fetched) and a.3 (newer event); a.2 was killed", got)
	}
	if st := a.tasks["a.1"].t.State; st != stateUnreachable {
		t.Errorf("a.1 state = %s, want the newer event's", st)
	}
	if len(a.tasks["a.1"].t.HealthCheckResults) != 1 {
		t.Error("health results of the fetch lost")
	}

	// An answer older than the one applied is ignored.
	if s.mergeFetched(fetched(t, `{"id":"/a","ports":[1],"tasks":[]}`), f-1) {
		t.Error("older fetch applied")
	}
	// A later full snapshot is the truth again.
	s.applyFull([]decodedApp{fetched(t, `{"id":"/a","ports":[1],"tasks":[{"id":"a.3","state":"TASK_RUNNING"}]}`)}, s.next())
	if got := taskIDs(s.apps["/a"]); !slices.Equal(got, []string{"a.3"}) {
		t.Fatalf("after full: %q", got)
	}
}

func TestStateRemovalAndFullOrdering(t *testing.T) {
	t.Parallel()
	s := newState()
	full := s.next() // a full snapshot is issued...
	s.mergeFetched(fetched(t, `{"id":"/a","ports":[1]}`), s.next())
	if !s.removeFetched("/a", s.next()) { // ...the app is deleted (404)...
		t.Fatal("404 not applied")
	}
	// ...and the older snapshot, still listing it, must not bring it back.
	s.applyFull([]decodedApp{fetched(t, `{"id":"/a","ports":[1]}`), fetched(t, `{"id":"/b","ports":[2]}`)}, full)
	if s.apps["/a"] != nil || s.apps["/b"] == nil {
		t.Fatalf("apps = %v", s.apps)
	}

	// An app known only from an event newer than a snapshot survives it.
	f := s.next()
	_, _, fetch := s.applyStatus(running("/new", "new.1"), s.next())
	if !fetch {
		t.Error("unknown app not fetched")
	}
	s.applyFull([]decodedApp{fetched(t, `{"id":"/b","ports":[2]}`)}, f)
	if s.apps["/new"] == nil {
		t.Fatal("app vouched for by a newer event dropped")
	}
	// A snapshot newer than everything drops what it does not list...
	one := s.next() // (a fetch of /b, issued before it)
	last := s.next()
	s.applyFull(nil, last)
	if len(s.apps) != 0 {
		t.Fatalf("apps %v", s.apps)
	}
	// ...and the fetch issued before it, landing after, does not bring /b
	// back (fetches land in any order).
	if s.mergeFetched(fetched(t, `{"id":"/b","ports":[2]}`), one) || s.apps["/b"] != nil {
		t.Fatal("a fetch issued before the snapshot brought back an app it dropped")
	}
	// The next snapshot clears the tombs of the one before.
	s.applyFull(nil, s.next())
	if len(s.tombs) != 0 {
		t.Fatalf("tombs %v", s.tombs)
	}
}

func TestStateStatusIdempotence(t *testing.T) {
	t.Parallel()
	s := newState()
	s.mergeFetched(fetched(t, `{"id":"/a","ports":[1],"healthChecks":[{"protocol":"TCP"}]}`), s.next())
	for range 3 { // duplicates change nothing
		s.applyStatus(running("/a", "a.1"), s.next())
	}
	if len(s.apps["/a"].tasks) != 1 {
		t.Fatal("duplicate RUNNING added twice")
	}
	if _, _, fetch := s.applyStatus(running("/a", "a.1"), s.next()); !fetch {
		t.Error("RUNNING of a health-checked app: no fetch")
	}
	s.applyStatus(&event{AppID: "/a", TaskID: "a.1", TaskStatus: stateKilling}, s.next())
	if _, changed, _ := s.applyStatus(running("/a", "a.1"), s.next()); changed {
		t.Error("RUNNING after KILLING applied")
	}
	s.applyStatus(&event{AppID: "/a", TaskID: "a.1", TaskStatus: stateFinished}, s.next())
	s.applyStatus(&event{AppID: "/a", TaskID: "a.1", TaskStatus: stateKilled}, s.next())
	s.applyStatus(running("/a", "a.1"), s.next())
	if len(s.apps["/a"].tasks) != 0 {
		t.Fatal("terminal task resurrected")
	}
	// A snapshot taken before the kill does not bring it back either.
	s.mergeFetched(fetched(t, `{"id":"/a","ports":[1],"tasks":[{"id":"a.1","state":"TASK_RUNNING"}]}`), s.next())
	if len(s.apps["/a"].tasks) != 0 {
		t.Fatal("terminal task resurrected by a snapshot")
	}
	// Newer version on a task: the definition changed, fetch it.
	ev := running("/a", "a.2")
	ev.Version = "2099-01-01T00:00:00.000Z"
	s.apps["/a"].def.Version = "2020-01-01T00:00:00.000Z"
	s.apps["/a"].def.HealthChecks = nil
	if _, _, fetch := s.applyStatus(ev, s.next()); !fetch {
		t.Error("newer version: no fetch")
	}
}

func TestQueueOverflow(t *testing.T) {
	t.Parallel()
	q := newEventQueue()
	for range maxQueued + 5 {
		q.Push([]byte("x"))
	}
	items, overflow := q.Take()
	if !overflow || len(items) != 5 {
		t.Fatalf("overflow %v, %d items", overflow, len(items))
	}
	if items, overflow = q.Take(); overflow || len(items) != 0 {
		t.Fatal("overflow not reset")
	}
}

func TestBackoffBounds(t *testing.T) {
	t.Parallel()
	b := backoff{min: 100 * time.Millisecond, max: 5 * time.Second}
	for i := range 100 {
		d := b.next()
		want := min(100*time.Millisecond<<min(i, 30), 5*time.Second)
		if d < want/2 || d > want {
			t.Fatalf("attempt %d: %v outside [%v, %v]", i, d, want/2, want)
		}
	}
	b.reset()
	if d := b.next(); d > 100*time.Millisecond {
		t.Fatalf("after reset: %v", d)
	}
}

func TestResolverCacheAndLiterals(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	var fail atomic.Bool
	r := newResolver(nil)
	var now atomic.Int64
	r.now = func() time.Time { return time.Unix(0, now.Load()) }
	r.lookup = func(ctx context.Context, host string) (netip.Addr, error) {
		calls.Add(1)
		if fail.Load() {
			return netip.Addr{}, errors.New("dns down")
		}
		return netip.MustParseAddr("10.9.9.9"), nil
	}
	refreshed := make(chan string, 4)
	r.refreshed = func(host string) { refreshed <- host }
	for _, lit := range []string{"10.0.0.1", "::ffff:10.0.0.2", "fd00::1"} {
		if _, err := r.Resolve(context.Background(), lit); err != nil {
			t.Fatal(err)
		}
	}
	if calls.Load() != 0 {
		t.Fatal("IP literal looked up")
	}
	if a, _ := r.Resolve(context.Background(), "::ffff:10.0.0.2"); !a.Is4() {
		t.Errorf("mapped address not unmapped: %v", a)
	}
	r.Resolve(context.Background(), "agent-1")
	r.Resolve(context.Background(), "agent-1")
	if calls.Load() != 1 {
		t.Fatalf("%d lookups, want 1 (cached)", calls.Load())
	}
	// Expired and DNS down: the last good address stays, before and after
	// the lookup in the background fails.
	now.Add(int64(2 * resolveTTL))
	fail.Store(true)
	if a, err := r.Resolve(context.Background(), "agent-1"); err != nil || a.String() != "10.9.9.9" {
		t.Fatalf("stale address not kept: %v %v", a, err)
	}
	<-refreshed
	if a, err := r.Resolve(context.Background(), "agent-1"); err != nil || a.String() != "10.9.9.9" {
		t.Fatalf("stale address not kept after a failed refresh: %v %v", a, err)
	}
	if _, err := r.Resolve(context.Background(), "agent-2"); err == nil {
		t.Fatal("unknown host resolved")
	}
}

// An expired address is served at once while the host is looked up again
// in the background: Resolve runs on the goroutine that applies Marathon's
// events, and a slow DNS server must not hold them up. The new address is
// served once the lookup is done.
func TestResolverRefreshesInTheBackground(t *testing.T) {
	t.Parallel()
	r := newResolver(nil)
	var now atomic.Int64
	r.now = func() time.Time { return time.Unix(0, now.Load()) }
	release := make(chan struct{})
	var calls atomic.Int32
	r.lookup = func(ctx context.Context, host string) (netip.Addr, error) {
		if calls.Add(1) == 1 {
			return netip.MustParseAddr("10.9.9.9"), nil
		}
		<-release // a DNS server that takes its time
		return netip.MustParseAddr("10.9.9.10"), nil
	}
	refreshed := make(chan string, 1)
	r.refreshed = func(host string) { refreshed <- host }
	if a, _ := r.Resolve(context.Background(), "agent-1"); a.String() != "10.9.9.9" {
		t.Fatalf("first lookup: %v", a)
	}
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	now.Add(int64(2 * resolveTTL))
	for range 3 { // one lookup in flight, however often it is asked
		got := make(chan netip.Addr, 1)
		go func() {
			a, _ := r.Resolve(context.Background(), "agent-1")
			got <- a
		}()
		select {
		case a := <-got:
			if a.String() != "10.9.9.9" {
				t.Fatalf("expired address while the lookup waits: %v; want the last one", a)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Resolve waited for the lookup of an expired address")
		}
	}
	unblock()
	select {
	case <-refreshed:
	case <-time.After(5 * time.Second):
		t.Fatal("the background lookup never ended")
	}
	if a, _ := r.Resolve(context.Background(), "agent-1"); a.String() != "10.9.9.10" {
		t.Fatalf("after the background lookup: %v, want the new address", a)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d lookups, want 2: one background lookup per host at a time", n)
	}
}
