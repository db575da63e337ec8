package zookeeper

import (
	"context"
	"testing"
)

// After a connection to the third of three addresses, the name comes to
// resolve to one: every round through the list must still end in a retry
// start, the only point where the client's connect loop sleeps. Counting
// by index into the old, longer list, none came, and the loop dialled and
// resolved without pause.
func TestLazyHostsRetryStartAfterTheListShrinks(t *testing.T) {
	t.Parallel()
	addrs := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"}
	lookups := 0
	h := &lazyHosts{lookup: func(context.Context, string) ([]string, error) {
		lookups++
		return addrs, nil
	}}
	if err := h.Init([]string{"master.mesos:2181"}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		h.Next()
	}
	h.Connected() // to the third address handed out
	addrs = addrs[:1]
	retries := 0
	const calls = 100
	for range calls {
		if _, retry := h.Next(); retry {
			retries++
		}
	}
	// One address a round: every call is a new round, and a retry start,
	// as go-zookeeper's own provider gives with one server.
	if retries < calls-1 {
		t.Fatalf("%d retry starts in %d calls over a one-address list, want about one a call (%d lookups)", retries, calls, lookups)
	}
}
