package zookeeper

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/pacer-lb/pacer/discovery"
)

// waitTimeout bounds every wait on ZooKeeper in these tests: session
// timeouts are 1-2s, JVM pauses on two busy cores add more.
const waitTimeout = 20 * time.Second

func testLogger(t testing.TB) *zap.Logger {
	return zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
}

// runSource starts a Source over table and stops it (waiting for Run to
// return) when the test ends.
func runSource(t testing.TB, cfg Config, table *discovery.Table) *Source {
	t.Helper()
	s, err := New(cfg, table, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Source.Run: %v", err)
		}
	})
	return s
}

// waitTable waits, on the snapshot's Changed channel and without polling,
// until cond holds for the current snapshot.
func waitTable(t testing.TB, table *discovery.Table, what string, cond func(*discovery.Snapshot) bool) *discovery.Snapshot {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		snap := table.Snapshot()
		if cond(snap) {
			return snap
		}
		select {
		case <-snap.Changed():
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s; table has %s", what, describe(snap))
		}
	}
}

// eventually polls cond until it holds, for state without a change
// notification (Status). It fails the test after waitTimeout.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // poll interval of a deadline-bound wait
	}
}

// backends returns "task=addr" for each backend of the service of app id.
func backends(snap *discovery.Snapshot, id string) []string {
	a := snap.App(id)
	if a == nil || len(a.Services) == 0 {
		return nil
	}
	out := []string{}
	for _, b := range a.Services[0].Backends {
		out = append(out, b.TaskID+"="+b.Addr.String())
	}
	return out
}

func describe(snap *discovery.Snapshot) string {
	s := fmt.Sprintf("version %d:", snap.Version())
	for _, a := range snap.Apps() {
		s += fmt.Sprintf(" %s%v", a.ID, backends(snap, a.ID))
		for _, ts := range a.Tasks {
			if !ts.Routable {
				s += fmt.Sprintf(" (%s: %s)", ts.ID, ts.Reason)
			}
		}
	}
	return s
}

func nerve(host string, port int) []byte {
	b, _ := json.Marshal(map[string]any{"host": host, "port": port, "name": "i-" + host, "weight": 1})
	return b
}

func serverset(host string, port int, status string) []byte {
	b, _ := json.Marshal(map[string]any{
		"serviceEndpoint":     map[string]any{"host": host, "port": port},
		"additionalEndpoints": map[string]any{"http": map[string]any{"host": host, "port": port + 1}},
		"status":              status, "shard": 0,
	})
	return b
}

// create makes a node, failing the test on error, and returns its path.
func create(t testing.TB, c *zk.Conn, path string, data []byte, flags int32) string {
	t.Helper()
	p, err := c.Create(path, data, flags, zk.WorldACL(zk.PermAll))
	if err != nil {
		t.Fatalf("creating %s: %v", path, err)
	}
	return p
}

func remove(t testing.TB, c *zk.Conn, path string) {
	t.Helper()
	if err := c.Delete(path, -1); err != nil {
		t.Fatalf("deleting %s: %v", path, err)
	}
}
