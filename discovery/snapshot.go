package discovery

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
)

// Snapshot is an internally consistent, immutable view of every app and
// service at one version. Readers share it freely and never lock; the Table
// replaces it rather than changing it.
type Snapshot struct {
	version uint64
	apps    shardedMap[string, *App]
	// raw holds every app as its source gave it, before the health overlay.
	raw shardedMap[string, *App]
	// claims holds, per service port, every service claiming it, winner first.
	claims shardedMap[int, []*Service]
	byName shardedMap[string, []*Service]
	// portless holds, by DNS label, the apps that offer no service (no
	// ports): DNS still answers their tasks' addresses, as mesos-dns does.
	portless shardedMap[string, []*App]
	// ejected is the health overlay this snapshot was built with.
	ejected map[netip.AddrPort]string
	// changed is closed when a newer snapshot replaces this one.
	changed chan struct{}
}

// Version identifies the snapshot; a newer snapshot has a larger version.
func (s *Snapshot) Version() uint64 {
	if s == nil {
		return 0
	}
	return s.version
}

// Changed returns a channel that is closed once a newer snapshot is published,
// so a reader can wait for a change without polling.
func (s *Snapshot) Changed() <-chan struct{} { return s.changed }

// Service returns the service that owns the service port, or nil.
func (s *Snapshot) Service(port int) *Service {
	if c := s.claims.get(port); len(c) > 0 {
		return c[0]
	}
	return nil
}

// Claimants returns the services claiming port, the winner first.
func (s *Snapshot) Claimants(port int) []*Service { return s.claims.get(port) }

// Ports returns every claimed service port in ascending order.
func (s *Snapshot) Ports() []int {
	ports := make([]int, 0, s.claims.len())
	s.claims.each(func(p int, _ []*Service) { ports = append(ports, p) })
	slices.Sort(ports)
	return ports
}

// ServicesNamed returns the services of every app whose DNS label is name
// (several apps may share a label, as in mesos-dns), the DNS-only services of
// apps with a Problem among them (App.DNSOnly): what DNS answers, not what
// the proxies route.
func (s *Snapshot) ServicesNamed(name string) []*Service { return s.byName.get(name) }

// PortlessAppsNamed returns the apps without services (not even DNS-only
// ones) whose DNS label is name.
func (s *Snapshot) PortlessAppsNamed(name string) []*App { return s.portless.get(name) }

// App returns the app with the given id, or nil.
func (s *Snapshot) App(id string) *App { return s.apps.get(id) }

// Apps returns every app sorted by id.
func (s *Snapshot) Apps() []*App {
	apps := make([]*App, 0, s.apps.len())
	s.apps.each(func(_ string, a *App) { apps = append(apps, a) })
	slices.SortFunc(apps, func(a, b *App) int { return cmp.Compare(a.ID, b.ID) })
	return apps
}

// RawApps returns every app as its source gave it, before the health
// overlay, sorted by id: services list their ejected backends too. The health
// checker reads it, since it must keep watching the backends it ejected;
// routing reads Apps and Service.
func (s *Snapshot) RawApps() []*App {
	apps := make([]*App, 0, s.raw.len())
	s.raw.each(func(_ string, a *App) { apps = append(apps, a) })
	slices.SortFunc(apps, func(a, b *App) int { return cmp.Compare(a.ID, b.ID) })
	return apps
}

// Ejected reports whether the health overlay has taken the backend at addr
// out of rotation, and why. A backend can be ejected and still be listed in a
// service's Backends when the panic threshold kept it in.
func (s *Snapshot) Ejected(addr netip.AddrPort) (reason string, ok bool) {
	reason, ok = s.ejected[addr]
	return reason, ok
}

// EjectedKept counts svc's backends that the health overlay ejected but
// that stay in rotation because more than PanicThreshold of them were
// ejected: more than zero means the service is in panic mode.
func (s *Snapshot) EjectedKept(svc *Service) int {
	n := 0
	if len(s.ejected) == 0 {
		return 0
	}
	for _, b := range svc.Backends {
		if _, ok := s.ejected[b.Addr]; ok {
			n++
		}
	}
	return n
}

// SameEjections reports whether s and o carry the same health overlay.
func (s *Snapshot) SameEjections(o *Snapshot) bool { return maps.Equal(s.ejected, o.ejected) }

// Conflicts returns every service port claimed by more than one service.
func (s *Snapshot) Conflicts() []Conflict {
	var out []Conflict
	for _, p := range s.Ports() {
		c := s.claims.get(p)
		if len(c) < 2 {
			continue
		}
		cf := Conflict{Port: p, Winner: c[0].Key}
		for _, l := range c[1:] {
			cf.Losers = append(cf.Losers, l.Key)
		}
		out = append(out, cf)
	}
	return out
}

// compareKeys orders services for port conflicts: the lowest app id, then the
// lowest port index, wins. The rule depends only on what is claimed, never on
// arrival order, so a winner does not flap between resyncs or restarts.
func compareKeys(a, b *Service) int {
	if c := cmp.Compare(a.Key.App, b.Key.App); c != 0 {
		return c
	}
	return cmp.Compare(a.Key.PortIndex, b.Key.PortIndex)
}
