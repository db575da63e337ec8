package discovery

import (
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
)

// Update is what a source hands the Table.
type Update struct {
	// Source names the source; a Full update replaces only this source's apps.
	Source string
	// Full says Apps is the source's complete set: every app of Source that
	// is not in Apps is removed.
	Full bool
	// Apps are new or changed apps.
	Apps []*App
	// Removed are ids of apps that are gone.
	Removed []string
}

// Table publishes Snapshots. Readers call Snapshot, which is one atomic load;
// writers call Apply (sources) and SetEjected (the health overlay), which
// build the next snapshot beside the current one and swap it in.
//
// The table keeps each app as its source gave it and publishes it with the
// health overlay applied: a backend the overlay ejected is left out of its
// services' Backends, so the proxies and DNS all read one verdict.
type Table struct {
	cur atomic.Pointer[Snapshot]

	mu sync.Mutex // serialises writers and guards the fields below
	// raw holds every app as its source gave it, before the overlay.
	raw shardedMap[string, *App]
	// ejected is the health overlay: backends out of rotation, with reasons.
	ejected map[netip.AddrPort]string
	// appsByAddr finds the apps with a backend at an address, so an
	// overlay change rebuilds only those apps.
	appsByAddr map[netip.AddrPort]map[string]struct{}
}

// PanicThreshold is the share of a service's backends the overlay may eject.
// Beyond it every backend stays in rotation: when most of a service looks
// dead the checks are more likely wrong than the service, and sending
// traffic to all beats sending it to none (Envoy's panic threshold).
const PanicThreshold = 0.5

// NewTable returns a Table holding an empty snapshot at version 0.
func NewTable() *Table {
	t := &Table{
		raw:        newShardedMap[string, *App](),
		ejected:    map[netip.AddrPort]string{},
		appsByAddr: map[netip.AddrPort]map[string]struct{}{},
	}
	t.cur.Store(&Snapshot{
		apps:     newShardedMap[string, *App](),
		raw:      t.raw,
		claims:   newShardedMap[int, []*Service](),
		byName:   newShardedMap[string, []*Service](),
		portless: newShardedMap[string, []*App](),
		ejected:  t.ejected,
		changed:  make(chan struct{}),
	})
	return t
}

// Snapshot returns the current snapshot. It never blocks and never allocates.
func (t *Table) Snapshot() *Snapshot { return t.cur.Load() }

// Apply merges u into the table and publishes a new snapshot if anything a
// reader can see changed. It returns the snapshot current after the call.
// Apps in u are taken over by the table and must not be modified afterwards.
func (t *Table) Apply(u Update) *Snapshot {
	t.mu.Lock()
	defer t.mu.Unlock()

	// Work out which apps really change; a no-op update publishes nothing.
	changes := make(map[string]*App) // id -> new app, nil for removal
	for _, a := range u.Apps {
		if a == nil {
			continue
		}
		if a.Source == "" {
			a.Source = u.Source
		}
		if prev := t.raw.get(a.ID); prev == nil || !reflect.DeepEqual(prev, a) {
			changes[a.ID] = a
		} else {
			delete(changes, a.ID)
		}
	}
	for _, id := range u.Removed {
		if t.raw.get(id) != nil {
			changes[id] = nil
		}
	}
	if u.Full {
		keep := make(map[string]bool, len(u.Apps))
		for _, a := range u.Apps {
			if a != nil {
				keep[a.ID] = true
			}
		}
		t.raw.each(func(id string, a *App) {
			if a.Source == u.Source && !keep[id] {
				changes[id] = nil
			}
		})
	}
	if len(changes) == 0 {
		return t.cur.Load()
	}
	raw := t.raw.edit()
	for id, a := range changes {
		if prev := raw.get(id); prev != nil {
			t.indexAddrs(prev, false)
		}
		if a == nil {
			raw.del(id)
			continue
		}
		raw.set(id, a)
		t.indexAddrs(a, true)
	}
	t.raw = raw.done()
	return t.publish(changes, t.ejected)
}

// SetEjected replaces the health overlay: the backends in ejected (address
// to reason) leave rotation, every other backend returns to it. Only apps
// with a backend whose verdict changed are rebuilt. The map is taken over by
// the table and must not be modified afterwards.
func (t *Table) SetEjected(ejected map[netip.AddrPort]string) *Snapshot {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ejected == nil {
		ejected = map[netip.AddrPort]string{}
	}
	changes := make(map[string]*App)
	touch := func(addr netip.AddrPort) {
		for id := range t.appsByAddr[addr] {
			changes[id] = t.raw.get(id)
		}
	}
	for addr, why := range ejected {
		if old, ok := t.ejected[addr]; !ok || old != why {
			touch(addr)
		}
	}
	for addr := range t.ejected {
		if _, ok := ejected[addr]; !ok {
			touch(addr)
		}
	}
	t.ejected = ejected
	if len(changes) == 0 {
		// No backend in the table changed verdict: nothing a reader sees.
		return t.cur.Load()
	}
	return t.publish(changes, ejected)
}

// indexAddrs adds (or removes) app's backends to the address index.
func (t *Table) indexAddrs(a *App, add bool) {
	for _, s := range a.Services {
		for _, b := range s.Backends {
			set := t.appsByAddr[b.Addr]
			if add {
				if set == nil {
					set = map[string]struct{}{}
					t.appsByAddr[b.Addr] = set
				}
				set[a.ID] = struct{}{}
			} else if set != nil {
				delete(set, a.ID)
				if len(set) == 0 {
					delete(t.appsByAddr, b.Addr)
				}
			}
		}
	}
}

// publish builds and stores the next snapshot from the current one, with the
// given apps (raw, nil for removed) replaced as the overlay shows them.
func (t *Table) publish(changes map[string]*App, ejected map[netip.AddrPort]string) *Snapshot {
	old := t.cur.Load()
	ed := indexEditor{apps: old.apps.edit(), claims: old.claims.edit(), byName: old.byName.edit(), portless: old.portless.edit()}
	for id, a := range changes {
		if prev := old.apps.get(id); prev != nil {
			for _, s := range prev.Services {
				ed.unindex(s)
			}
			for _, s := range prev.DNSOnly {
				ed.unindexName(s)
			}
			ed.unindexPortless(prev)
		}
		if a == nil {
			ed.apps.del(id)
			continue
		}
		a = withOverlay(a, ejected)
		ed.apps.set(id, a)
		for _, s := range a.Services {
			ed.index(s)
		}
		// DNS-only services are found by name only: they claim no port.
		for _, s := range a.DNSOnly {
			ed.indexName(s)
		}
		ed.indexPortless(a)
	}
	next := &Snapshot{
		version:  old.version + 1,
		apps:     ed.apps.done(),
		raw:      t.raw,
		claims:   ed.claims.done(),
		byName:   ed.byName.done(),
		portless: ed.portless.done(),
		ejected:  ejected,
		changed:  make(chan struct{}),
	}
	t.cur.Store(next)
	close(old.changed)
	return next
}

// withOverlay returns a as readers should see it: each service without its
// ejected backends, unless that would eject more than PanicThreshold of them.
// An app the overlay does not touch is returned as it is, not copied.
func withOverlay(a *App, ejected map[netip.AddrPort]string) *App {
	if len(ejected) == 0 {
		return a
	}
	var out *App
	for i, s := range a.Services {
		n := 0
		for _, b := range s.Backends {
			if _, ok := ejected[b.Addr]; ok {
				n++
			}
		}
		if n == 0 || float64(n) > PanicThreshold*float64(len(s.Backends)) {
			continue
		}
		if out == nil {
			cp := *a
			cp.Services = slices.Clone(a.Services)
			out = &cp
		}
		fs := *s
		fs.Backends = make([]Backend, 0, len(s.Backends)-n)
		for _, b := range s.Backends {
			if _, ok := ejected[b.Addr]; !ok {
				fs.Backends = append(fs.Backends, b)
			}
		}
		out.Services[i] = &fs
	}
	if out == nil {
		return a
	}
	return out
}

// indexEditor builds the next snapshot's indexes beside the current ones.
type indexEditor struct {
	apps   *mapEditor[string, *App]
	claims *mapEditor[int, []*Service]
	byName *mapEditor[string, []*Service]
	// portless indexes, by DNS label, apps without services.
	portless *mapEditor[string, []*App]
}

// portless reports whether a belongs in the portless index: it offers no
// service, not even to DNS alone. An app with a Problem is no exception: its
// name stays in DNS with what its tasks' Addr say (see TaskState.Addr).
// index and unindex both decide by it, on the app as it was indexed, so an
// app moving in or out of the index is never left behind.
func portless(a *App) bool { return len(a.Services) == 0 && len(a.DNSOnly) == 0 }

// indexPortless adds a to the portless index if it offers no service.
func (s *indexEditor) indexPortless(a *App) {
	if !portless(a) {
		return
	}
	name := AppName(a.ID)
	s.portless.set(name, append(slices.Clip(s.portless.get(name)), a))
}

// unindexPortless removes a from the portless index, if it is there.
func (s *indexEditor) unindexPortless(a *App) {
	if !portless(a) {
		return
	}
	name := AppName(a.ID)
	list := s.portless.get(name)
	out := make([]*App, 0, len(list))
	for _, x := range list {
		if x != a {
			out = append(out, x)
		}
	}
	if len(out) > 0 {
		s.portless.set(name, out)
	} else {
		s.portless.del(name)
	}
}

// index adds svc to the port and name indexes, copying only the slices it touches.
func (s *indexEditor) index(svc *Service) {
	if svc.ServicePort > 0 {
		c := append(slices.Clip(s.claims.get(svc.ServicePort)), svc)
		slices.SortFunc(c, compareKeys)
		s.claims.set(svc.ServicePort, c)
	}
	s.indexName(svc)
}

// indexName adds svc to the name index only.
func (s *indexEditor) indexName(svc *Service) {
	if svc.Name != "" {
		s.byName.set(svc.Name, append(slices.Clip(s.byName.get(svc.Name)), svc))
	}
}

// unindex removes svc from the port and name indexes, copying only the
// slices it touches.
func (s *indexEditor) unindex(svc *Service) {
	if svc.ServicePort > 0 {
		if c := without(s.claims.get(svc.ServicePort), svc); len(c) > 0 {
			s.claims.set(svc.ServicePort, c)
		} else {
			s.claims.del(svc.ServicePort)
		}
	}
	s.unindexName(svc)
}

// unindexName removes svc from the name index only.
func (s *indexEditor) unindexName(svc *Service) {
	if svc.Name != "" {
		if c := without(s.byName.get(svc.Name), svc); len(c) > 0 {
			s.byName.set(svc.Name, c)
		} else {
			s.byName.del(svc.Name)
		}
	}
}

// without returns a copy of list without svc.
func without(list []*Service, svc *Service) []*Service {
	out := make([]*Service, 0, len(list))
	for _, x := range list {
		if x != svc {
			out = append(out, x)
		}
	}
	return out
}
