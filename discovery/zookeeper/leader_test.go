package zookeeper

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/pacer-lb/pacer/discovery/marathonsim"
	"github.com/pacer-lb/pacer/internal/testnet"
	"github.com/pacer-lb/pacer/internal/zktest"
)

// runLeader starts a LeaderWatcher on root and stops it when the test ends.
func runLeader(t *testing.T, servers []string, root string) *LeaderWatcher {
	t.Helper()
	w, err := NewLeaderWatcher(LeaderConfig{Servers: servers, Path: root, SessionTimeout: 2 * time.Second}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("LeaderWatcher.Run: %v", err)
		}
	})
	return w
}

// waitLeader waits on the watcher's change channel until the leader URL is want.
func waitLeader(t *testing.T, w *LeaderWatcher, want string) {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		got, changed := w.Watch()
		if got == want {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("leader is %q, want %q (status %+v)", got, want, w.Status())
		}
	}
}

// latch registers a Marathon in a Curator LeaderLatch directory the way
// Curator does (withProtection: "_c_<uuid>-latch-<seq>"), with the given
// uuid so the name order can be chosen independently of the sequence.
func latch(t *testing.T, c *zk.Conn, root, uuid, hostport string) string {
	t.Helper()
	return create(t, c, root+"/leader-curator/_c_"+uuid+"-latch-", []byte(hostport), zk.FlagEphemeralSequential)
}

func TestLeaderWatcher(t *testing.T) {
	t.Parallel()
	srv := zktest.Start(t)
	c := srv.Conn(t)

	// Sequence order differs from name order: the first latch node gets
	// the lowest sequence but the highest name.
	t.Run("curator lowest sequence leads", func(t *testing.T) {
		root := "/m1"
		zktest.EnsurePath(t, c, root+"/leader-curator")
		first := latch(t, c, root, "ffffffff-0000", "m1.example:8080")
		latch(t, c, root, "00000000-0000", "m2.example:8080")
		latch(t, c, root, "77777777-0000", "m3.example:8080")
		w := runLeader(t, srv.Servers(), root)
		waitLeader(t, w, "http://m1.example:8080")
		if w.Leader() != "m1.example:8080" || !w.Status().Synced {
			t.Fatalf("Leader() = %q, status %+v", w.Leader(), w.Status())
		}

		// Deleting the lowest latch node hands leadership to the next
		// sequence number, m2, not to the next name.
		remove(t, c, first)
		waitLeader(t, w, "http://m2.example:8080")
	})

	t.Run("legacy member nodes", func(t *testing.T) {
		root := "/m2"
		zktest.EnsurePath(t, c, root+"/leader")
		create(t, c, root+"/leader/member_", []byte("old1:8080"), zk.FlagEphemeralSequential)
		create(t, c, root+"/leader/member_", []byte("old2:8080"), zk.FlagEphemeralSequential)
		w := runLeader(t, srv.Servers(), root)
		waitLeader(t, w, "http://old1:8080")

		// A Curator latch appearing (an upgrade to 1.5) wins over the
		// legacy group; the curator directory did not exist before.
		zktest.EnsurePath(t, c, root+"/leader-curator")
		latch(t, c, root, "abc", "new:8080")
		waitLeader(t, w, "http://new:8080")
	})

	t.Run("bad data skipped, leader kept when none registered", func(t *testing.T) {
		root := "/m3"
		zktest.EnsurePath(t, c, root+"/leader-curator")
		bad := latch(t, c, root, "a", "no port here")
		good := latch(t, c, root, "b", "good:8080")
		w := runLeader(t, srv.Servers(), root)
		waitLeader(t, w, "http://good:8080")
		remove(t, c, bad)
		remove(t, c, good)
		eventually(t, "the watcher to see no leader registered", func() bool {
			return strings.Contains(w.Status().LastError, "no Marathon leader")
		})
		if w.Leader() != "good:8080" {
			t.Fatalf("during an election the leader became %q; want the last one kept", w.Leader())
		}
	})

	// The wiring the Marathon source uses: stream from Watch's URL until
	// the channel closes. Deleting the leader's latch node moves the stream
	// from one simulator to the other.
	t.Run("leader change moves the event stream", func(t *testing.T) {
		root := "/m4"
		zktest.EnsurePath(t, c, root+"/leader-curator")
		simA, simB := startSim(t), startSim(t)
		nodeA := latch(t, c, root, "zzzz", strings.TrimPrefix(simA.URL(), "http://"))
		latch(t, c, root, "aaaa", strings.TrimPrefix(simB.URL(), "http://"))
		w := runLeader(t, srv.Servers(), root)

		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); followLeader(ctx, w) }()
		t.Cleanup(func() { cancel(); <-done })

		wctx, wcancel := context.WithTimeout(context.Background(), waitTimeout)
		defer wcancel()
		if err := simA.WaitStreams(wctx, 1); err != nil {
			t.Fatal(err)
		}
		if n := simB.Streams(); n != 0 {
			t.Fatalf("standby has %d streams before the change", n)
		}
		remove(t, c, nodeA)
		if err := simB.WaitStreams(wctx, 1); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the old leader's stream to close", func() bool { return simA.Streams() == 0 })
	})

	t.Run("ZooKeeper down keeps the leader", func(t *testing.T) {
		own := zktest.Start(t)
		oc := own.Conn(t)
		zktest.EnsurePath(t, oc, "/m/leader-curator")
		latch(t, oc, "/m", "x", "kept:8080")
		w := runLeader(t, own.Servers(), "/m")
		waitLeader(t, w, "http://kept:8080")
		own.Stop()
		eventually(t, "the watcher to see ZooKeeper gone", func() bool { return !w.Status().Connected })
		if w.LeaderURL() != "http://kept:8080" || !w.Status().Synced {
			t.Fatalf("with ZooKeeper down: leader %q, status %+v", w.LeaderURL(), w.Status())
		}
		own.Restart()
		eventually(t, "the watcher to reconnect", func() bool { return w.Status().Connected })
		// The session survived the restart, and with it the latch node.
		latch(t, own.Conn(t), "/m", "0", "next:8080")
		remove(t, own.Conn(t), "/m/leader-curator/"+firstChild(t, own.Conn(t), "/m/leader-curator", "_c_x-"))
		waitLeader(t, w, "http://next:8080")
	})
}

func firstChild(t *testing.T, c *zk.Conn, dir, prefix string) string {
	t.Helper()
	children, _, err := c.Children(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range children {
		if strings.HasPrefix(ch, prefix) {
			return ch
		}
	}
	t.Fatalf("no child of %s starts with %s: %v", dir, prefix, children)
	return ""
}

func startSim(t *testing.T) *marathonsim.Server {
	t.Helper()
	s := marathonsim.New(marathonsim.Config{})
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// followLeader is the Marathon source's use of Watch, reduced to the
// stream: hold /v2/events open on the leader until it changes.
func followLeader(ctx context.Context, w *LeaderWatcher) {
	for {
		url, changed := w.Watch()
		sctx, cancel := context.WithCancel(ctx)
		streamDone := make(chan struct{})
		go func() {
			defer close(streamDone)
			if url == "" {
				return
			}
			req, _ := http.NewRequestWithContext(sctx, http.MethodGet, url+"/v2/events", nil)
			req.Header.Set("Accept", "text/event-stream")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
		select {
		case <-changed:
			cancel()
			<-streamDone
		case <-ctx.Done():
			cancel()
			<-streamDone
			return
		}
	}
}

// A ZooKeeper that never answers is named in the status (for /healthz and
// the status page) from the start; the client's own retries are quiet.
func TestLeaderWatcherUnreachableZooKeeperNamed(t *testing.T) {
	t.Parallel()
	addr := testnet.RefusedAddr(t).String()
	w := runLeader(t, []string{addr}, "/marathon")
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := w.Status()
		if strings.Contains(st.LastError, "no ZooKeeper session with "+addr) && !st.ErrorAt.IsZero() && !st.Connected && !st.Synced {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("status with ZooKeeper unreachable: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
