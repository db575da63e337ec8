package discovery

import (
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
		apps:    newShardedMap[string, *App](),
		claims:  newShardedMap[int, []*Service](),
		byName:  newShardedMap[string, []*Service](),
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
		if prev := old.apps.get(a.ID); prev == nil || !reflect.DeepEqual(prev, a) {
			changes[a.ID] = a
		} else {
			delete(changes, a.ID)
		}
	}
	for _, id := range u.Removed {
		if old.apps.get(id) != nil {
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
		old.apps.each(func(id string, a *App) {
			if a.Source == u.Source && !keep[id] {
				changes[id] = nil
			}
		})
	}
	if len(changes) == 0 {
		return old
	}

	ed := indexEditor{apps: old.apps.edit(), claims: old.claims.edit(), byName: old.byName.edit()}
	for id, a := range changes {
		if prev := old.apps.get(id); prev != nil {
			for _, s := range prev.Services {
				ed.unindex(s)
			}
		}
		if a == nil {
			ed.apps.del(id)
			continue
		}
		ed.apps.set(id, a)
		for _, s := range a.Services {
			ed.index(s)
		}
	}
	next := &Snapshot{
		version: old.version + 1,
		apps:    ed.apps.done(),
		claims:  ed.claims.done(),
		byName:  ed.byName.done(),
		changed: make(chan struct{}),
	}
	t.cur.Store(next)
	close(old.changed)
	return next
}

// indexEditor builds the next snapshot's indexes beside the current ones.
type indexEditor struct {
	apps   *mapEditor[string, *App]
	claims *mapEditor[int, []*Service]
	byName *mapEditor[string, []*Service]
}

// index adds svc to the port and name indexes, copying only the slices it touches.
func (s *indexEditor) index(svc *Service) {
	if svc.ServicePort > 0 {
		c := append(slices.Clip(s.claims.get(svc.ServicePort)), svc)
		slices.SortFunc(c, compareKeys)
		s.claims.set(svc.ServicePort, c)
	}
	if svc.Name != "" {
		s.byName.set(svc.Name, append(slices.Clip(s.byName.get(svc.Name)), svc))
	}
}

// unindex removes svc from the port and name indexes, copying only the
// slices it touches.
func (s *indexEditor) unindex(svc *Service) {
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
		if c := remove(s.claims.get(svc.ServicePort)); len(c) > 0 {
			s.claims.set(svc.ServicePort, c)
		} else {
			s.claims.del(svc.ServicePort)
		}
	}
	if svc.Name != "" {
		if c := remove(s.byName.get(svc.Name)); len(c) > 0 {
			s.byName.set(svc.Name, c)
		} else {
			s.byName.del(svc.Name)
		}
	}
}
