package zktest_test

import (
	"errors"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/pacer-lb/pacer/internal/zktest"
)

// One server through its whole life: serve, keep data across a restart, stop.
func TestServerLifecycle(t *testing.T) {
	t.Parallel()
	s := zktest.Start(t)
	c := s.Conn(t)
	zktest.EnsurePath(t, c, "/a/b")
	if _, err := c.Create("/a/b/n", []byte("x"), 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}

	addr := s.Addr()
	s.Restart()
	if s.Addr() != addr {
		t.Fatalf("restart moved the server from %s to %s", addr, s.Addr())
	}
	c2 := s.Conn(t)
	got, _, err := c2.Get("/a/b/n")
	if err != nil || string(got) != "x" {
		t.Fatalf("after restart: Get = %q, %v; want \"x\"", got, err)
	}

	s.Stop()
	if s.Running() {
		t.Fatal("Running after Stop")
	}
	if _, _, err := c2.Get("/a/b/n"); err == nil {
		t.Fatal("Get succeeded with the server stopped")
	}
}

// Cutting a proxy for longer than the session timeout makes the running
// server expire the session; the client learns it when the network heals.
func TestProxyCutExpiresSession(t *testing.T) {
	t.Parallel()
	s := zktest.Start(t)
	p := zktest.NewProxy(t, s.Addr())
	states := make(chan zk.State, 64)
	c, _, err := zk.Connect([]string{p.Addr()}, 500*time.Millisecond,
		zk.WithLogInfo(false), zk.WithLogger(nopLogger{}),
		zk.WithEventCallback(func(e zk.Event) {
			if e.Type == zk.EventSession {
				select {
				case states <- e.State:
				default:
				}
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Create("/e", nil, zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	sid := c.SessionID()
	ids, err := s.Sessions()
	if err != nil || !contains(ids, sid) {
		t.Fatalf("Sessions() = %x, %v; want it to list 0x%x", ids, err, sid)
	}

	p.Cut()
	s.WaitSessionGone(t, sid, 10*time.Second)
	p.Heal()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case st := <-states:
			if st == zk.StateExpired {
				if ok, _, err := s.Conn(t).Exists("/e"); ok || err != nil {
					t.Fatalf("ephemeral node of the expired session: exists=%v err=%v", ok, err)
				}
				return
			}
		case <-deadline:
			t.Fatal("client never saw StateExpired")
		}
	}
}

// A missing path component is created; an existing one is fine.
func TestEnsurePath(t *testing.T) {
	t.Parallel()
	s := zktest.Start(t)
	c := s.Conn(t)
	zktest.EnsurePath(t, c, "/x/y/z")
	zktest.EnsurePath(t, c, "/x/y/z")
	if ok, _, err := c.Exists("/x/y/z"); !ok || err != nil {
		t.Fatalf("Exists = %v, %v", ok, err)
	}
	if _, err := c.Create("/x/y/z", nil, 0, zk.WorldACL(zk.PermAll)); !errors.Is(err, zk.ErrNodeExists) {
		t.Fatalf("second Create: %v", err)
	}
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}

func contains(ids []int64, id int64) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}
