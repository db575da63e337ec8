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
}

func newResolver(custom func(ctx context.Context, host string) (netip.Addr, error)) *resolver {
	r := &resolver{lookup: custom, now: time.Now}
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
