package zookeeper

import (
	"context"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// hostLookupTimeout bounds the lookup of one server name.
const hostLookupTimeout = 3 * time.Second

// lazyHosts is the zk.HostProvider pacer gives the client instead of
// go-zookeeper's DNSHostProvider, which resolves every server name once, in
// Connect, and fails Connect when any one of them does not resolve: one
// retired name in --zk, or DNS not up yet when the agent boots, would stop
// pacer at start. lazyHosts resolves the names again at the start of each
// round through the list, so a name that does not resolve is only tried
// again later (its own dial fails and the client moves on), a name that
// comes to resolve is picked up, and an ensemble whose addresses change is
// followed. Like DNSHostProvider, it tries each address of a name on its
// own, so one unreachable address does not eat every connect timeout.
type lazyHosts struct {
	lookup func(ctx context.Context, host string) ([]string, error)

	mu      sync.Mutex
	servers []string // host:port as configured
	addrs   []string // this round's addresses
	curr    int      // index in addrs of the server last handed out
	// tried counts the addresses handed out since the last connection (-1
	// after Init, so that the first round is a whole one, as in
	// DNSHostProvider). It is a count, not an index into addrs: each round
	// resolves and shuffles anew, so a list that shrank could otherwise
	// never lead back to "every address tried", and the client's connect
	// loop, which sleeps a second only then, would spin.
	tried int
}

func newLazyHosts() *lazyHosts {
	var r net.Resolver
	return &lazyHosts{lookup: r.LookupHost}
}

// Init records the servers; it resolves nothing, so it never fails.
func (h *lazyHosts) Init(servers []string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.servers = append([]string(nil), servers...)
	h.addrs = nil
	h.curr, h.tried = -1, -1
	return nil
}

// Len returns the number of addresses of this round (at least one per
// server once a round started).
func (h *lazyHosts) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.addrs) == 0 {
		return len(h.servers)
	}
	return len(h.addrs)
}

// Next returns the address to dial next; retryStart is true once every
// address of the list was tried since the last connection.
func (h *lazyHosts) Next() (server string, retryStart bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.curr++
	if h.curr >= len(h.addrs) {
		h.addrs = h.resolve()
		h.curr = 0
	}
	h.tried++
	if h.tried >= len(h.addrs) {
		retryStart, h.tried = true, 0
	}
	return h.addrs[h.curr], retryStart
}

// Connected records that the last address handed out worked.
func (h *lazyHosts) Connected() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.tried = 0
}

// resolve expands each server to its addresses, in random order (as
// DNSHostProvider, so a fleet of clients spreads over the ensemble). A
// name that does not resolve stays as it is: dialing it fails with the
// resolver's reason, which the client logs, and moves on.
func (h *lazyHosts) resolve() []string {
	var out []string
	for _, s := range h.servers {
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			out = append(out, s)
			continue
		}
		if net.ParseIP(host) != nil {
			out = append(out, s)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), hostLookupTimeout)
		addrs, err := h.lookup(ctx, host)
		cancel()
		if err != nil || len(addrs) == 0 {
			out = append(out, s)
			continue
		}
		for _, a := range addrs {
			out = append(out, net.JoinHostPort(a, port))
		}
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}
