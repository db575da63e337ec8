package zookeeper

import (
	"context"
	"strings"
	"testing"

	"github.com/pacer-lb/pacer/internal/zktest"
)

func runAnnouncer(t *testing.T, cfg AnnounceConfig) *Announcer {
	t.Helper()
	a, err := NewAnnouncer(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Announcer.Run: %v", err)
		}
	})
	return a
}

func TestAnnouncer(t *testing.T) {
	t.Parallel()
	srv := zktest.Start(t)
	c := srv.Conn(t)
	a, err := NewAnnouncer(AnnounceConfig{Servers: srv.Servers(), Path: "/deep/pacer/instances",
		Service: Endpoint{"10.0.0.7", 9090}, Additional: map[string]Endpoint{"dns": {"10.0.0.7", 8053}}, Shard: 2}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	// The parents are created, and the node is a serverset member that
	// pacer's own parser (and Finagle's) reads.
	eventually(t, "the announcement", func() bool { return a.Node() != "" })
	node := a.Node()
	if !strings.HasPrefix(node, "/deep/pacer/instances/member_") {
		t.Fatalf("node %q", node)
	}
	data, st, err := c.Get(node)
	if err != nil || st.EphemeralOwner == 0 {
		t.Fatalf("Get(%s) = %s, %+v, %v; want an ephemeral node", node, data, st, err)
	}
	m, err := ParseMember(data)
	if err != nil || m.Endpoint != (Endpoint{"10.0.0.7", 9090}) || m.Additional["dns"] != (Endpoint{"10.0.0.7", 8053}) || *m.Shard != 2 || !m.Alive() {
		t.Fatalf("announced %s: %+v, %v", data, m, err)
	}

	// New endpoints are written in place.
	a.SetAdditional(map[string]Endpoint{"dns": {"10.0.0.7", 8053}, "tcp-8000": {"10.0.0.7", 8000}})
	eventually(t, "the updated endpoints", func() bool {
		data, _, err := c.Get(node)
		m, perr := ParseMember(data)
		return err == nil && perr == nil && m.Additional["tcp-8000"].Port == 8000
	})

	// Someone deletes the node: it comes back.
	remove(t, c, node)
	eventually(t, "the node to be registered again", func() bool { return a.Node() != "" && a.Node() != node })
	node = a.Node()

	// Stopping deletes it at once, not after the session timeout.
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil // for the deferred receive
	if ok, _, err := c.Exists(node); ok || err != nil {
		t.Fatalf("after Run returned, %s exists=%v err=%v", node, ok, err)
	}
}

func TestNewAnnouncerValidates(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg     AnnounceConfig
		wantErr string
	}{
		{AnnounceConfig{Path: "/a", Service: Endpoint{"h", 1}}, "needs --zk"},
		{AnnounceConfig{Servers: []string{"z:1"}, Path: "a", Service: Endpoint{"h", 1}}, "does not start with '/'"},
		{AnnounceConfig{Servers: []string{"z:1"}, Path: "/a", Service: Endpoint{"", 1}}, "no host"},
		{AnnounceConfig{Servers: []string{"z:1"}, Path: "/a", Service: Endpoint{"h", 0}}, "port 0"},
		{AnnounceConfig{Servers: []string{"z:1"}, Path: "/a", Service: Endpoint{"h", 1}, Additional: map[string]Endpoint{"dns": {"h h", 1}}}, `endpoint "dns"`},
	} {
		if _, err := NewAnnouncer(tc.cfg, nil); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("NewAnnouncer(%+v) error = %v, want it to contain %q", tc.cfg, err, tc.wantErr)
		}
	}
}
