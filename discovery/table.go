package discovery

import (
	"maps"
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
// writers call Apply, which builds the next snapshot beside the current one and
// swaps it in.
type Table struct {
	cur atomic.Pointer[Snapshot]
	mu  sync.Mutex // serialises writers
}

// NewTable returns a Table holding an empty snapshot at version 0.
func NewTable() *Table {
	t := &Table{}
	t.cur.Store(&Snapshot{
		apps:    map[string]*App{},
		claims:  map[int][]*Service{},
		byName:  map[string][]*Service{},
		changed: make(chan struct{}),
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
	old := t.cur.Load()

	// Work out which apps really change; a no-op update publishes nothing.
	changes := make(map[string]*App) // id -> new app, nil for removal
	for _, a := range u.Apps {
		if a == nil {
			continue
		}
		if a.Source == "" {
			a.Source = u.Source
		}
		if prev := old.apps[a.ID]; prev == nil || !reflect.DeepEqual(prev, a) {
			changes[a.ID] = a
		} else {
			delete(changes, a.ID)
		}
	}
	for _, id := range u.Removed {
		if _, ok := old.apps[id]; ok {
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
		for id, a := range old.apps {
			if a.Source == u.Source && !keep[id] {
				changes[id] = nil
			}
		}
	}
	if len(changes) == 0 {
		return old
	}

	next := &Snapshot{
		version: old.version + 1,
		apps:    maps.Clone(old.apps),
		claims:  maps.Clone(old.claims),
		byName:  maps.Clone(old.byName),
		changed: make(chan struct{}),
	}
	for id, a := range changes {
		if prev := old.apps[id]; prev != nil {
			for _, s := range prev.Services {
				next.unindex(s)
			}
		}
		if a == nil {
			delete(next.apps, id)
			continue
		}
		next.apps[id] = a
		for _, s := range a.Services {
			next.index(s)
		}
	}
	t.cur.Store(next)
	close(old.changed)
	return next
}

// index adds s to the port and name indexes, copying only the slices it touches.
func (s *Snapshot) index(svc *Service) {
	if svc.ServicePort > 0 {
		c := append(slices.Clip(s.claims[svc.ServicePort]), svc)
		slices.SortFunc(c, compareKeys)
		s.claims[svc.ServicePort] = c
	}
	if svc.Name != "" {
		s.byName[svc.Name] = append(slices.Clip(s.byName[svc.Name]), svc)
	}
}

// unindex removes svc from the port and name indexes, copying only the
// slices it touches.
func (s *Snapshot) unindex(svc *Service) {
	remove := func(list []*Service) []*Service {
		out := make([]*Service, 0, len(list))
		for _, x := range list {
			if x != svc {
				out = append(out, x)
			}
		}
		return out
	}
	if svc.ServicePort > 0 {
		if c := remove(s.claims[svc.ServicePort]); len(c) > 0 {
			s.claims[svc.ServicePort] = c
		} else {
			delete(s.claims, svc.ServicePort)
		}
	}
	if svc.Name != "" {
		if c := remove(s.byName[svc.Name]); len(c) > 0 {
			s.byName[svc.Name] = c
		} else {
			delete(s.byName, svc.Name)
		}
	}
}
