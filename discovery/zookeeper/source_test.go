package zookeeper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/internal/zktest"
)

func TestNewValidates(t *testing.T) {
	t.Parallel()
	table := discovery.NewTable()
	good := ServiceSpec{"web", "/web", 8000}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"no servers", Config{Services: []ServiceSpec{good}}, "needs --zk"},
		{"no services", Config{Servers: []string{"a:1"}}, "no services"},
		{"bad name", Config{Servers: []string{"a:1"}, Services: []ServiceSpec{{"Web", "/w", 0}}}, "not a DNS label"},
		{"twice", Config{Servers: []string{"a:1"}, Services: []ServiceSpec{good, good}}, "given twice"},
		{"same port", Config{Servers: []string{"a:1"}, Services: []ServiceSpec{good, {"api", "/api", 8000}}}, "both claim service port 8000"},
		{"bad path", Config{Servers: []string{"a:1"}, Services: []ServiceSpec{{"web", "web", 0}}}, "does not start with '/'"},
	}
	for _, tc := range tests {
		if _, err := New(tc.cfg, table, nil); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: New error = %v, want it to contain %q", tc.name, err, tc.wantErr)
		}
	}
	if _, err := New(Config{Servers: []string{"a:1"}, Services: []ServiceSpec{good, {"dns-only", "/d", 0}, {"dns-only2", "/e", 0}}}, table, nil); err != nil {
		t.Errorf("valid config: %v", err)
	}
}

func TestSourceMembers(t *testing.T) {
	t.Parallel()
	srv := zktest.Start(t)
	c := srv.Conn(t)

	t.Run("added and removed", func(t *testing.T) {
		zktest.EnsurePath(t, c, "/svc/web")
		table := discovery.NewTable()
		src := runSource(t, Config{Servers: srv.Servers(), Services: []ServiceSpec{{"web", "/svc/web", 18080}}}, table)
		waitTable(t, table, "an empty web service", func(s *discovery.Snapshot) bool { return s.App("zk:web") != nil })
		st := src.Status()
		if !st.Synced || !st.Connected || st.Name != SourceName {
			t.Fatalf("status after the first read: %+v", st)
		}

		a := create(t, c, "/svc/web/member_", nerve("10.0.0.1", 31000), zk.FlagEphemeralSequential)
		b := create(t, c, "/svc/web/member_", serverset("10.0.0.2", 31001, "ALIVE"), zk.FlagEphemeralSequential)
		an, bn := a[len("/svc/web/"):], b[len("/svc/web/"):]
		want := []string{an + "=10.0.0.1:31000", bn + "=10.0.0.2:31001"}
		snap := waitTable(t, table, "two backends", func(s *discovery.Snapshot) bool { return reflect.DeepEqual(backends(s, "zk:web"), want) })

		// What the TCP proxy (by port) and DNS (by name, under zk.) read.
		svc := snap.Service(18080)
		if svc == nil || svc.Key.App != "zk:web" || svc.Name != "web" || svc.Mode != discovery.ModeTCP {
			t.Fatalf("service on port 18080: %+v", svc)
		}
		if named := snap.ServicesNamed("web"); len(named) != 1 || snap.App(named[0].Key.App).Source != SourceName {
			t.Fatalf("ServicesNamed(web) = %+v", named)
		}
		app := snap.App("zk:web")
		if len(app.Tasks) != 2 || !app.Tasks[0].Routable || app.Tasks[0].State != StatusAlive || app.Tasks[0].Ports[0] != 31000 {
			t.Fatalf("tasks %+v", app.Tasks)
		}

		// The health overlay applies to ZooKeeper members as to Marathon tasks.
		table.SetEjected(map[netip.AddrPort]string{netip.MustParseAddrPort("10.0.0.1:31000"): "probe failed"})
		if got := backends(table.Snapshot(), "zk:web"); !reflect.DeepEqual(got, want[1:]) {
			t.Fatalf("with member one ejected: %v", got)
		}
		table.SetEjected(nil)

		remove(t, c, a)
		waitTable(t, table, "one backend", func(s *discovery.Snapshot) bool {
			return reflect.DeepEqual(backends(s, "zk:web"), []string{bn + "=10.0.0.2:31001"})
		})
		// A member's data changing (serverset status) is seen through its
		// data watch.
		if _, err := c.Set(b, serverset("10.0.0.2", 31001, "STOPPING"), -1); err != nil {
			t.Fatal(err)
		}
		snap = waitTable(t, table, "the stopping member out", func(s *discovery.Snapshot) bool {
			return len(backends(s, "zk:web")) == 0 && len(s.App("zk:web").Tasks) == 1
		})
		if ts := snap.App("zk:web").Tasks[0]; ts.Routable || ts.Reason != "serverset status STOPPING" {
			t.Fatalf("stopping member: %+v", ts)
		}
	})

	t.Run("path created later", func(t *testing.T) {
		table := discovery.NewTable()
		runSource(t, Config{Servers: srv.Servers(), Services: []ServiceSpec{{"late", "/late/svc", 0}}}, table)
		waitTable(t, table, "an empty late service", func(s *discovery.Snapshot) bool { return s.App("zk:late") != nil })
		zktest.EnsurePath(t, c, "/late/svc")
		create(t, c, "/late/svc/m1", nerve("10.0.0.3", 1), 0)
		waitTable(t, table, "the member under the new path", func(s *discovery.Snapshot) bool {
			return reflect.DeepEqual(backends(s, "zk:late"), []string{"m1=10.0.0.3:1"})
		})
		remove(t, c, "/late/svc/m1")
		remove(t, c, "/late/svc")
		waitTable(t, table, "no members once the path is gone", func(s *discovery.Snapshot) bool {
			a := s.App("zk:late")
			return a != nil && len(a.Tasks) == 0
		})
	})

	t.Run("garbage in one member disturbs nothing else", func(t *testing.T) {
		zktest.EnsurePath(t, c, "/g")
		create(t, c, "/g/a", nerve("10.0.1.1", 80), 0)
		create(t, c, "/g/b", []byte("\x00\xffnot json at all"), 0)
		create(t, c, "/g/c", []byte(`{"host":"10.0.1.3"}`), 0)
		create(t, c, "/g/d", serverset("10.0.1.4", 80, "ALIVE"), 0)
		create(t, c, "/g/e", serverset("10.0.1.5", 80, "DEAD"), 0)
		create(t, c, "/g/f", nerve("10.0.1.1", 80), 0) // same address as a
		if _, err := c.Create("/g/z", nerve("10.0.1.6", 80), 0, zk.DigestACL(zk.PermAll, "someone", "else")); err != nil {
			t.Fatal(err)
		}
		table := discovery.NewTable()
		// A second service beside the broken one is untouched.
		create(t, c, "/g2", nil, 0)
		create(t, c, "/g2/x", nerve("10.0.2.1", 90), 0)
		src := runSource(t, Config{Servers: srv.Servers(), Services: []ServiceSpec{{"g", "/g", 0}, {"g2", "/g2", 0}}}, table)
		snap := waitTable(t, table, "both services", func(s *discovery.Snapshot) bool {
			return reflect.DeepEqual(backends(s, "zk:g"), []string{"a=10.0.1.1:80", "d=10.0.1.4:80"}) &&
				reflect.DeepEqual(backends(s, "zk:g2"), []string{"x=10.0.2.1:90"})
		})
		reasons := map[string]string{}
		for _, ts := range snap.App("zk:g").Tasks {
			reasons[ts.ID] = ts.State + ": " + ts.Reason
		}
		for id, want := range map[string]string{
			"a": "ALIVE: ",
			"b": "MALFORMED: malformed member data: node data is not a JSON object",
			"c": "MALFORMED: malformed member data: no port",
			"e": "DEAD: serverset status DEAD",
			"f": "ALIVE: same address as member a",
			"z": "UNREADABLE: unreadable member node: zk: not authenticated",
		} {
			if reasons[id] != want {
				t.Errorf("member %s: %q, want %q", id, reasons[id], want)
			}
		}
		if st := src.Status(); st.DecodeErrors != 2 {
			t.Errorf("DecodeErrors = %d, want 2", st.DecodeErrors)
		}
		// Fixing the node's data makes it routable.
		if _, err := c.Set("/g/b", nerve("10.0.1.2", 80), -1); err != nil {
			t.Fatal(err)
		}
		waitTable(t, table, "the repaired member", func(s *discovery.Snapshot) bool {
			return reflect.DeepEqual(backends(s, "zk:g"), []string{"a=10.0.1.1:80", "b=10.0.1.2:80", "d=10.0.1.4:80"})
		})
	})

	t.Run("host names resolved", func(t *testing.T) {
		zktest.EnsurePath(t, c, "/h")
		create(t, c, "/h/ok", nerve("localhost", 80), 0)
		create(t, c, "/h/bad", nerve("no-such-host.invalid", 80), 0)
		table := discovery.NewTable()
		runSource(t, Config{Servers: srv.Servers(), Services: []ServiceSpec{{"h", "/h", 0}}}, table)
		snap := waitTable(t, table, "the resolved member", func(s *discovery.Snapshot) bool { return s.App("zk:h") != nil })
		if got := backends(snap, "zk:h"); !reflect.DeepEqual(got, []string{"ok=127.0.0.1:80"}) {
			t.Fatalf("backends %v", got)
		}
		for _, ts := range snap.App("zk:h").Tasks {
			if ts.ID == "bad" && (ts.Routable || !strings.HasPrefix(ts.Reason, "resolving no-such-host.invalid")) {
				t.Fatalf("unresolvable member: %+v", ts)
			}
		}
	})

	// A member that flaps (its node created and deleted as fast as the
	// client can) is applied at once for the first CoalesceBurst changes
	// and then at most once per Coalesce, and the table ends right.
	t.Run("flapping member coalesced", func(t *testing.T) {
		zktest.EnsurePath(t, c, "/flap")
		create(t, c, "/flap/stable", nerve("10.0.3.1", 1), 0)
		table := discovery.NewTable()
		const coalesce, burst = 200 * time.Millisecond, 3
		runSource(t, Config{Servers: srv.Servers(), Services: []ServiceSpec{{"flap", "/flap", 0}}, Coalesce: coalesce, CoalesceBurst: burst}, table)
		first := waitTable(t, table, "the stable member", func(s *discovery.Snapshot) bool { return len(backends(s, "zk:flap")) == 1 })

		start := time.Now()
		const flaps = 200
		for range flaps {
			p := create(t, c, "/flap/x", nerve("10.0.3.2", 1), 0)
			remove(t, c, p)
		}
		create(t, c, "/flap/last", nerve("10.0.3.3", 1), 0)
		last := waitTable(t, table, "the flapping to settle", func(s *discovery.Snapshot) bool {
			return reflect.DeepEqual(backends(s, "zk:flap"), []string{"last=10.0.3.3:1", "stable=10.0.3.1:1"})
		})
		elapsed := time.Since(start)
		applies := last.Version() - first.Version()
		limit := uint64(burst) + uint64(elapsed/coalesce) + 2
		t.Logf("%d node changes in %v became %d table versions (limit %d)", 2*flaps+1, elapsed.Round(time.Millisecond), applies, limit)
		if applies > limit {
			t.Fatalf("%d table versions for %d changes in %v; the bucket allows %d", applies, 2*flaps+1, elapsed, limit)
		}
	})
}

// A ZooKeeper restart leaves the table as it was while the server is down,
// shows as stale in Status, and converges once it is back.
// A member whose host does not resolve (a DNS outage as it registered) is
// shown with the reason, and routed once the host resolves again: nerve
// does not rewrite a healthy member's node, so no watch would bring it.
func TestUnresolvedMemberIsResolvedAgain(t *testing.T) {
	t.Parallel()
	srv := zktest.Start(t)
	c := srv.Conn(t)
	zktest.EnsurePath(t, c, "/svc/flaky")
	var outage atomic.Bool
	outage.Store(true)
	resolve := func(_ context.Context, host string) (netip.Addr, error) {
		if outage.Load() {
			return netip.Addr{}, errors.New("server misbehaving")
		}
		return netip.MustParseAddr("10.0.0.9"), nil
	}
	table := discovery.NewTable()
	runSource(t, Config{Servers: srv.Servers(), Services: []ServiceSpec{{"flaky", "/svc/flaky", 18090}}, Resolve: resolve}, table)
	n := create(t, c, "/svc/flaky/member_", nerve("kafka1.internal", 9092), zk.FlagEphemeralSequential)
	name := n[len("/svc/flaky/"):]
	waitTable(t, table, "the member shown, unroutable, with the reason", func(s *discovery.Snapshot) bool {
		a := s.App("zk:flaky")
		return a != nil && len(a.Tasks) == 1 && !a.Tasks[0].Routable && strings.Contains(a.Tasks[0].Reason, "server misbehaving")
	})
	outage.Store(false)
	want := []string{name + "=10.0.0.9:9092"}
	waitTable(t, table, "the member routed once its host resolves", func(s *discovery.Snapshot) bool {
		return reflect.DeepEqual(backends(s, "zk:flaky"), want)
	})
}

func TestSourceSurvivesRestart(t *testing.T) {
	t.Parallel()
	srv := zktest.Start(t)
	c := srv.Conn(t)
	zktest.EnsurePath(t, c, "/r")
	create(t, c, "/r/a", nerve("10.0.0.1", 1), 0)
	create(t, c, "/r/b", nerve("10.0.0.2", 1), 0)
	table := discovery.NewTable()
	src := runSource(t, Config{Servers: srv.Servers(), Services: []ServiceSpec{{"r", "/r", 18081}}, SessionTimeout: 2 * time.Second}, table)
	before := waitTable(t, table, "both members", func(s *discovery.Snapshot) bool { return len(backends(s, "zk:r")) == 2 })

	srv.Stop()
	eventually(t, "the source to notice ZooKeeper is down", func() bool { return !src.Status().Connected })
	st := src.Status()
	if !st.Synced || st.LastSync.IsZero() {
		t.Fatalf("status while down: %+v", st)
	}
	if now := table.Snapshot(); now.Version() != before.Version() || !reflect.DeepEqual(backends(now, "zk:r"), backends(before, "zk:r")) {
		t.Fatalf("table changed while ZooKeeper was down: %s", describe(now))
	}

	srv.Restart()
	eventually(t, "the source to reconnect", func() bool { return src.Status().Connected })
	c2 := srv.Conn(t)
	remove(t, c2, "/r/a")
	create(t, c2, "/r/c", nerve("10.0.0.3", 1), 0)
	waitTable(t, table, "the change made after the restart", func(s *discovery.Snapshot) bool {
		return reflect.DeepEqual(backends(s, "zk:r"), []string{"b=10.0.0.2:1", "c=10.0.0.3:1"})
	})
	if st := src.Status(); st.Reconnects < 1 {
		t.Errorf("Reconnects = %d after a restart", st.Reconnects)
	}
}

// A network partition longer than the session timeout expires the
// source's session (and the announcer's) on a running server; changes made
// meanwhile are picked up after the partition heals, watches work again, and
// the announcer's node is back.
func TestSessionExpiry(t *testing.T) {
	t.Parallel()
	srv := zktest.Start(t)
	proxy := zktest.NewProxy(t, srv.Addr())
	c := srv.Conn(t)
	zktest.EnsurePath(t, c, "/x")
	create(t, c, "/x/a", nerve("10.0.0.1", 1), 0)
	create(t, c, "/x/b", nerve("10.0.0.2", 1), 0)
	table := discovery.NewTable()
	via := []string{proxy.Addr()}
	src := runSource(t, Config{Servers: via, Services: []ServiceSpec{{"x", "/x", 0}}, SessionTimeout: time.Second}, table)
	ann := runAnnouncer(t, AnnounceConfig{Servers: via, Path: "/pacer/lb", SessionTimeout: time.Second,
		Service: Endpoint{"10.9.9.9", 9090}, Additional: map[string]Endpoint{"dns": {"10.9.9.9", 8053}}})
	waitTable(t, table, "both members", func(s *discovery.Snapshot) bool { return len(backends(s, "zk:x")) == 2 })
	eventually(t, "the announcement", func() bool { return ann.Node() != "" })
	oldNode := ann.Node()
	resyncs := src.Status().Resyncs

	// Short partition, within the session timeout: the session survives and
	// a change made meanwhile fires the re-set watch.
	proxy.Cut()
	eventually(t, "the source to see the partition", func() bool { return !src.Status().Connected })
	create(t, c, "/x/short", nerve("10.0.0.9", 1), 0)
	proxy.Heal()
	waitTable(t, table, "the change made during a short partition", func(s *discovery.Snapshot) bool { return len(backends(s, "zk:x")) == 3 })
	remove(t, c, "/x/short")
	waitTable(t, table, "the short-lived member gone", func(s *discovery.Snapshot) bool { return len(backends(s, "zk:x")) == 2 })

	srcSession := src.sess.Load().conn.SessionID()
	proxy.Cut()
	remove(t, c, "/x/a")
	create(t, c, "/x/c", nerve("10.0.0.3", 1), 0)
	srv.WaitSessionGone(t, srcSession, waitTimeout)
	eventually(t, "the announcer's node to go with its session", func() bool {
		ok, _, err := c.Exists(oldNode)
		return err == nil && !ok
	})
	if got := backends(table.Snapshot(), "zk:x"); len(got) != 2 || !strings.HasPrefix(got[0], "a=") {
		t.Fatalf("the table changed during the partition: %v", got)
	}
	if st := src.Status(); st.Connected || !st.Synced {
		t.Fatalf("status during the partition: %+v", st)
	}

	proxy.Heal()
	waitTable(t, table, "the changes made while the session was lost", func(s *discovery.Snapshot) bool {
		return reflect.DeepEqual(backends(s, "zk:x"), []string{"b=10.0.0.2:1", "c=10.0.0.3:1"})
	})
	// Watches are armed again, on the directory and on the members.
	create(t, c, "/x/d", nerve("10.0.0.4", 1), 0)
	if _, err := c.Set("/x/b", []byte("broken"), -1); err != nil {
		t.Fatal(err)
	}
	waitTable(t, table, "changes after the expiry", func(s *discovery.Snapshot) bool {
		return reflect.DeepEqual(backends(s, "zk:x"), []string{"c=10.0.0.3:1", "d=10.0.0.4:1"})
	})
	if st := src.Status(); st.Resyncs <= resyncs || !st.Connected {
		t.Errorf("after the expiry: Resyncs %d (was %d), status %+v", st.Resyncs, resyncs, st)
	}

	eventually(t, "the announcer to register again", func() bool { return ann.Node() != "" && ann.Node() != oldNode })
	data, _, err := c.Get(ann.Node())
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseMember(data)
	if err != nil || m.Format != FormatServerset || m.Endpoint != (Endpoint{"10.9.9.9", 9090}) || m.Additional["dns"].Port != 8053 || !m.Alive() {
		t.Fatalf("announced %s: %+v, %v", data, m, err)
	}
	children, _, err := c.Children("/pacer/lb")
	if err != nil || len(children) != 1 {
		t.Fatalf("announcements under /pacer/lb: %v, %v; want exactly one", children, err)
	}
}

// Member change to route live: the time from a client's create or delete of
// a member node to the table publishing it, over 100 changes spaced by the
// default Coalesce so the token bucket never holds one back.
//
//	go test -race -count=1 -v -run TestMemberChangeLatency ./discovery/zookeeper/
func TestMemberChangeLatency(t *testing.T) {
	t.Parallel()
	srv := zktest.Start(t)
	c := srv.Conn(t)
	zktest.EnsurePath(t, c, "/lat")
	create(t, c, "/lat/base", nerve("10.0.0.1", 1), 0)
	table := discovery.NewTable()
	runSource(t, Config{Servers: srv.Servers(), Services: []ServiceSpec{{"lat", "/lat", 0}}}, table)
	waitTable(t, table, "the base member", func(s *discovery.Snapshot) bool { return len(backends(s, "zk:lat")) == 1 })

	const changes = 100
	var fromWrite, fromAck []time.Duration
	pace := time.NewTicker(DefaultCoalesce)
	defer pace.Stop()
	node := ""
	for i := range changes {
		<-pace.C // load generator pacing, not synchronisation
		start := time.Now()
		want := 2
		if node == "" {
			node = create(t, c, "/lat/m", nerve("10.0.0.2", 1000+i), zk.FlagEphemeralSequential)
		} else {
			remove(t, c, node)
			node, want = "", 1
		}
		acked := time.Now()
		waitTable(t, table, fmt.Sprintf("change %d", i), func(s *discovery.Snapshot) bool { return len(backends(s, "zk:lat")) == want })
		fromWrite = append(fromWrite, time.Since(start))
		fromAck = append(fromAck, time.Since(acked))
	}
	p := func(lat []time.Duration, q float64) time.Duration {
		slices.Sort(lat)
		return lat[int(q*float64(len(lat)-1))]
	}
	t.Logf("member change to route live, %d changes: from the write issued median %v p99 %v; from ZooKeeper's ack of the write median %v p99 %v",
		changes, p(fromWrite, 0.5), p(fromWrite, 0.99), p(fromAck, 0.5), p(fromAck, 0.99))
	if m := p(fromWrite, 0.5); m > time.Second {
		t.Errorf("median %v; something waits that should not", m)
	}
}

func TestAppShape(t *testing.T) {
	t.Parallel()
	// The App a service becomes, field by field, without a server.
	src, err := New(Config{Servers: []string{"a:1"}, Services: []ServiceSpec{{"kafka", "/k", 9092}}}, discovery.NewTable(), nil)
	if err != nil {
		t.Fatal(err)
	}
	sw := newServiceWatch(src, nil, src.cfg.Services[0], nil)
	for name, data := range map[string][]byte{"m2": nerve("10.0.0.2", 9092), "m1": nerve("10.0.0.1", 9092), "m0": []byte("{")} {
		m := &member{name: name, data: data}
		sw.decode(t.Context(), m)
		sw.members[name] = m
	}
	app := sw.app()
	addr := func(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
	want := &discovery.App{ID: "zk:kafka", Source: SourceName,
		Services: []*discovery.Service{{
			Key: discovery.ServiceKey{App: "zk:kafka"}, Name: "kafka", ServicePort: 9092,
			Backends: []discovery.Backend{
				{TaskID: "m1", Host: "10.0.0.1", Addr: addr("10.0.0.1:9092")},
				{TaskID: "m2", Host: "10.0.0.2", Addr: addr("10.0.0.2:9092")},
			},
		}},
		Tasks: []discovery.TaskState{
			{ID: "m0", State: "MALFORMED", Reason: "malformed member data: decoding JSON: unexpected end of JSON input"},
			{ID: "m1", Host: "10.0.0.1", State: "ALIVE", Ports: []int{9092}, Routable: true},
			{ID: "m2", Host: "10.0.0.2", State: "ALIVE", Ports: []int{9092}, Routable: true},
		},
	}
	if !reflect.DeepEqual(app, want) {
		got, _ := json.Marshal(app)
		exp, _ := json.Marshal(want)
		t.Fatalf("app\n got %s\nwant %s", got, exp)
	}
	if !slices.IsSortedFunc(app.Tasks, func(a, b discovery.TaskState) int { return strings.Compare(a.ID, b.ID) }) {
		t.Fatal("tasks not sorted")
	}
}
