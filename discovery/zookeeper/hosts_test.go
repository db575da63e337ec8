package zookeeper

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/internal/zktest"
)

// One server name in --zk that does not resolve (a retired member, or DNS
// not up yet at boot) must not stop the source: go-zookeeper's own host
// provider fails Connect for it, which ended Run at once.
func TestUnresolvableServerAtStart(t *testing.T) {
	t.Parallel()
	srv := zktest.Start(t)
	c := srv.Conn(t)
	zktest.EnsurePath(t, c, "/svc/web")
	create(t, c, "/svc/web/member_", nerve("10.0.0.1", 31000), 0)
	servers := append([]string{"zk-retired.invalid:2181"}, srv.Servers()...)
	table := discovery.NewTable()
	src := runSource(t, Config{Servers: servers, Services: []ServiceSpec{{"web", "/svc/web", 0}}}, table)
	waitTable(t, table, "the member", func(s *discovery.Snapshot) bool { return len(backends(s, "zk:web")) == 1 })
	if st := src.Status(); !st.Synced || !st.Connected {
		t.Errorf("status %+v", st)
	}
}

// lazyHosts expands names to their addresses each round, keeps a name that
// does not resolve (its dial fails on its own), and starts over at once.
func TestLazyHosts(t *testing.T) {
	t.Parallel()
	resolves := map[string][]string{"zk1": {"10.0.0.1", "10.0.0.2"}}
	h := &lazyHosts{lookup: func(_ context.Context, host string) ([]string, error) {
		if a, ok := resolves[host]; ok {
			return a, nil
		}
		return nil, errors.New("no such host")
	}}
	if err := h.Init([]string{"zk1:2181", "gone:2181", "10.0.0.9:2182"}); err != nil {
		t.Fatal(err)
	}
	round := func() (got []string, retries int) {
		for range 4 {
			s, retry := h.Next()
			got = append(got, s)
			if retry {
				retries++
			}
		}
		slices.Sort(got)
		return got, retries
	}
	want := []string{"10.0.0.1:2181", "10.0.0.2:2181", "10.0.0.9:2182", "gone:2181"}
	if got, retries := round(); !slices.Equal(got, want) || retries != 0 {
		t.Fatalf("first round %v (%d retry starts), want %v", got, retries, want)
	}
	// Back at the start without a connection: a retry start; and a name
	// that resolves now is used.
	resolves["gone"] = []string{"10.0.0.3"}
	want = []string{"10.0.0.1:2181", "10.0.0.2:2181", "10.0.0.3:2181", "10.0.0.9:2182"}
	if got, retries := round(); !slices.Equal(got, want) || retries != 1 {
		t.Fatalf("second round %v (%d retry starts), want %v", got, retries, want)
	}
}
