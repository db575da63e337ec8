package httpproxy

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/discovery"
)

// route is one service as the request path sees it in one route index.
type route struct {
	svc *discovery.Service
	// backends is parallel to svc.Backends: the pool of each.
	backends []*backend
	// st survives snapshots: the balancer's cursor and the metrics.
	st *svcState
	// label names the service in pacer's own error answers.
	label string
}

// pathRoute is one PATH prefix of a route, in a host's list.
type pathRoute struct {
	prefix string // "" matches every path; lower case when fold is set
	fold   bool   // compare in any case (marathon-lb's "-i")
	r      *route
}

// routeIndex is everything the request path looks up, built once per
// snapshot version and never modified after it is published.
type routeIndex struct {
	version uint64
	byPort  map[int]*route
	// exact and wild map a lower-case host (wild: a suffix starting with
	// ".", from "*.example.com") to its routes' PATH prefixes, longest
	// first.
	exact map[string][]pathRoute
	wild  map[string][]pathRoute
	// routed holds the address of every backend a route has: those a
	// tunnel may keep (sweepTunnels).
	routed map[netip.AddrPort]bool
}

// maxHost bounds a Host we look up; a DNS name has at most 253 characters.
const maxHost = 255

// lookupHost finds the route for host (as sent: any case, maybe a port, maybe
// a trailing dot) and path (the request target up to "?"). ok is false if no
// service has the host; r is nil if one has it but no PATH prefix matches.
func (idx *routeIndex) lookupHost(host, path []byte) (r *route, ok bool) {
	var buf [maxHost]byte
	h, valid := normalizeHost(buf[:0], host)
	if !valid {
		return nil, false
	}
	if rs, found := idx.exact[string(h)]; found {
		return matchPath(rs, path), true
	}
	if len(idx.wild) > 0 {
		// The longest suffix first: "a.b.example.com" tries ".b.example.com",
		// then ".example.com", then ".com".
		for i := 0; i < len(h); i++ {
			if h[i] != '.' {
				continue
			}
			if rs, found := idx.wild[string(h[i:])]; found {
				if r := matchPath(rs, path); r != nil {
					return r, true
				}
				ok = true
			}
		}
	}
	return nil, ok
}

// matchPath returns the route of the first (longest) PATH prefix of path, or
// nil.
func matchPath(ps []pathRoute, path []byte) *route {
	for _, p := range ps {
		if len(path) < len(p.prefix) {
			continue
		}
		if head := path[:len(p.prefix)]; string(head) == p.prefix || p.fold && eqFold(head, p.prefix) {
			return p.r
		}
	}
	return nil
}

// normalizeHost appends host to dst lower-cased, without a port and without a
// trailing dot. It reports false for a host too long or malformed to route.
func normalizeHost(dst, host []byte) ([]byte, bool) {
	if len(host) > 0 && host[0] == '[' { // IPv6 literal
		end := -1
		for i, c := range host {
			if c == ']' {
				end = i
				break
			}
		}
		if end < 0 {
			return dst, false
		}
		host = host[:end+1]
	} else {
		for i := len(host) - 1; i >= 0; i-- {
			if host[i] == ':' {
				host = host[:i]
				break
			}
			if host[i] < '0' || host[i] > '9' {
				break
			}
		}
	}
	if n := len(host); n > 0 && host[n-1] == '.' {
		host = host[:n-1]
	}
	if len(host) == 0 || len(host)+len(dst) > cap(dst) {
		return dst, false
	}
	for _, c := range host {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst, true
}

// routes returns the route index for the table's current snapshot, building
// it if this is the first request since a change.
func (p *Proxy) routes() *routeIndex {
	snap := p.table.Snapshot()
	if idx := p.idx.Load(); idx != nil && idx.version >= snap.Version() {
		return idx
	}
	return p.rebuild(snap)
}

// rebuild builds and publishes the route index for snap, creates pools for new
// backends and closes those of backends no service routes to any more.
// Builders serialise on p.mu; the request path never waits for it unless the
// index it needs is not built yet.
func (p *Proxy) rebuild(snap *discovery.Snapshot) *routeIndex {
	p.mu.Lock()
	defer p.mu.Unlock()
	if idx := p.idx.Load(); idx != nil && idx.version >= snap.Version() {
		return idx
	}
	idx := &routeIndex{
		version: snap.Version(),
		byPort:  map[int]*route{},
		exact:   map[string][]pathRoute{},
		wild:    map[string][]pathRoute{},
	}
	usedB := map[netip.AddrPort]bool{}
	usedS := map[discovery.ServiceKey]bool{}
	made := map[*discovery.Service]*route{}
	mk := func(svc *discovery.Service) *route {
		if r := made[svc]; r != nil {
			return r
		}
		st := p.states[svc.Key]
		if st == nil {
			st = &svcState{key: svc.Key}
			p.states[svc.Key] = st
		}
		st.port.Store(int64(svc.ServicePort))
		st.name = svc.Name
		usedS[svc.Key] = true
		r := &route{svc: svc, st: st, backends: make([]*backend, len(svc.Backends))}
		r.label = svc.Key.App
		if svc.ServicePort > 0 {
			r.label += " (service port " + strconv.Itoa(svc.ServicePort) + ")"
		}
		for i, b := range svc.Backends {
			be := p.backends[b.Addr]
			if be == nil {
				be = newBackend(p, b.Addr)
				p.backends[b.Addr] = be
			}
			usedB[b.Addr] = true
			r.backends[i] = be
		}
		made[svc] = r
		return r
	}
	for _, port := range snap.Ports() {
		if svc := snap.Service(port); svc != nil && p.cfg.Carries(svc) {
			idx.byPort[port] = mk(svc)
		}
	}
	for _, app := range snap.Apps() {
		for _, svc := range app.Services {
			if len(svc.VHosts) == 0 || !p.cfg.Carries(svc) {
				continue
			}
			r := mk(svc)
			paths := []pathRoute{{r: r}}
			if len(svc.Paths) > 0 {
				paths = make([]pathRoute, len(svc.Paths))
				for i, p := range svc.Paths {
					if svc.PathsFold {
						p = lowerASCII(p) // as eqFold compares
					}
					paths[i] = pathRoute{prefix: p, fold: svc.PathsFold, r: r}
				}
			}
			for _, vh := range svc.VHosts {
				var buf [maxHost]byte
				h, ok := normalizeHost(buf[:0], []byte(strings.TrimSpace(vh)))
				if !ok {
					p.log.Info("virtual host not routable; ignored", zap.String("app", svc.Key.App), zap.String("vhost", vh))
					continue
				}
				if len(h) > 2 && h[0] == '*' && h[1] == '.' {
					idx.wild[string(h[1:])] = append(idx.wild[string(h[1:])], paths...)
				} else {
					idx.exact[string(h)] = append(idx.exact[string(h)], paths...)
				}
			}
		}
	}
	// Longest PATH first; among equal paths the lowest app id, then port
	// index, wins, as for service ports: the rule never depends on order.
	order := func(a, b pathRoute) int {
		if c := cmp.Compare(len(b.prefix), len(a.prefix)); c != 0 {
			return c
		}
		if c := cmp.Compare(a.r.svc.Key.App, b.r.svc.Key.App); c != 0 {
			return c
		}
		if c := cmp.Compare(a.r.svc.Key.PortIndex, b.r.svc.Key.PortIndex); c != 0 {
			return c
		}
		return cmp.Compare(a.prefix, b.prefix)
	}
	for _, m := range []map[string][]pathRoute{idx.exact, idx.wild} {
		for h, ps := range m {
			slices.SortFunc(ps, order)
			m[h] = slices.Compact(ps)
		}
	}
	for addr, be := range p.backends {
		if !usedB[addr] {
			delete(p.backends, addr)
			be.leave()
			if be.busy() {
				p.left[addr] = append(p.left[addr], be)
			}
		}
	}
	// Answers streaming from a backend that left, or that start to (a
	// request still waiting for its answer), are bounded by DrainTimeout
	// from when it left, unless its address is routed again first; it is
	// followed while busy, since the address may leave again.
	for addr, bes := range p.left {
		keep := bes[:0]
		for _, be := range bes {
			if usedB[addr] {
				be.back()
			} else {
				be.leave()
			}
			if be.busy() {
				keep = append(keep, be)
			}
		}
		clear(bes[len(keep):])
		if len(keep) == 0 {
			delete(p.left, addr)
		} else {
			p.left[addr] = keep
		}
	}
	for key := range p.states {
		if !usedS[key] {
			delete(p.states, key)
		}
	}
	idx.routed = usedB
	p.idx.Store(idx)
	p.sweepTunnels(usedB)
	return idx
}

// lowerASCII lower-cases the ASCII letters of s and leaves every other byte.
func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
