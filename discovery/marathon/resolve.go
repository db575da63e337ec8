package marathon

import (
	"context"
	"net/netip"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/pacer-lb/pacer/discovery"
)

// Resolver cache policy. Agent host names change address rarely; a failed
// lookup is retried soon; an address that stops resolving is kept (stale)
// rather than dropping every backend on that agent because DNS hiccupped.
const (
	resolveTTL       = time.Minute
	resolveNegTTL    = 5 * time.Second
	resolveTimeout   = 2 * time.Second
	resolveCacheSize = 4096
	resolveParallel  = 16
)

type resolveEntry struct {
	addr    netip.Addr
	err     error
	expires time.Time
}

// resolver turns agent hosts into addresses. IP literals never reach the
// lookup function.
type resolver struct {
	lookup func(ctx context.Context, host string) (netip.Addr, error)
	cache  *lru.Cache[string, resolveEntry] // nil: no caching (a caller-supplied Resolve)
	now    func() time.Time

	mu         sync.Mutex
	refreshing map[string]bool   // hosts looked up again in the background
	refreshed  func(host string) // if set, called after each background lookup (tests)
}

func newResolver(custom func(ctx context.Context, host string) (netip.Addr, error)) *resolver {
	r := &resolver{lookup: custom, now: time.Now, refreshing: map[string]bool{}}
	if custom == nil {
		r.lookup = discovery.LookupHost
		r.cache, _ = lru.New[string, resolveEntry](resolveCacheSize)
	}
	return r
}

// Resolve returns the address of host.
func (r *resolver) Resolve(ctx context.Context, host string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap(), nil
	}
	if r.cache == nil {
		ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
		defer cancel()
		return r.lookup(ctx, host)
	}
	now := r.now()
	e, ok := r.cache.Get(host)
	if ok && now.Before(e.expires) {
		return e.addr, e.err
	}
	if ok && e.addr.IsValid() {
		// Expired, with a good address: serve it and look the host up again
		// in the background. Resolve runs on the state goroutine, which
		// applies Marathon's events; a slow DNS server must not hold them
		// up, once a minute per agent.
		r.refresh(host, e)
		return e.addr, nil
	}
	// First sight of the host, or only failures so far: wait for it.
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	a, err := r.lookup(ctx, host)
	switch {
	case err == nil:
		e = resolveEntry{addr: a, expires: now.Add(resolveTTL)}
	case ok && e.addr.IsValid():
		// Keep serving the last good address; try again after the short TTL.
		e.expires = now.Add(resolveNegTTL)
	default:
		e = resolveEntry{err: err, expires: now.Add(resolveNegTTL)}
	}
	r.cache.Add(host, e)
	return e.addr, e.err
}

// refresh looks host up again on a goroutine of its own, one at a time per
// host, and caches what it finds; e is the expired entry, whose address is
// kept if the lookup fails.
func (r *resolver) refresh(host string, e resolveEntry) {
	r.mu.Lock()
	if r.refreshing[host] {
		r.mu.Unlock()
		return
	}
	r.refreshing[host] = true
	r.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
		defer cancel()
		a, err := r.lookup(ctx, host)
		now := r.now()
		if err == nil {
			e = resolveEntry{addr: a, expires: now.Add(resolveTTL)}
		} else {
			e.expires = now.Add(resolveNegTTL)
		}
		r.cache.Add(host, e)
		r.mu.Lock()
		delete(r.refreshing, host)
		hook := r.refreshed
		r.mu.Unlock()
		if hook != nil {
			hook(host)
		}
	}()
}

// warm resolves many hosts concurrently so that building a snapshot on the
// state goroutine finds them cached.
func (r *resolver) warm(ctx context.Context, hosts map[string]struct{}) {
	if r.cache == nil || len(hosts) == 0 {
		return
	}
	sem := make(chan struct{}, resolveParallel)
	var wg sync.WaitGroup
	for h := range hosts {
		if _, err := netip.ParseAddr(h); err == nil {
			continue
		}
		if e, ok := r.cache.Peek(h); ok && r.now().Before(e.expires) {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			_, _ = r.Resolve(ctx, h)
		})
	}
	wg.Wait()
}
