package admin

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/discovery"
)

// maxChanges is how many recent routing changes the status page shows.
const maxChanges = 50

// change is one thing operators see move in the table.
type change struct {
	Time    time.Time `json:"time"`
	Version uint64    `json:"table_version"`
	App     string    `json:"app"`
	What    string    `json:"what"`
}

// changeLog keeps the most recent changes, newest first.
type changeLog struct {
	mu      sync.Mutex
	entries []change
}

func (l *changeLog) add(c change) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = append([]change{c}, l.entries...)
	if len(l.entries) > maxChanges {
		l.entries = l.entries[:maxChanges]
	}
}

func (l *changeLog) list() []change {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]change{}, l.entries...)
}

// FollowChanges records what each new snapshot changed, app by app, until
// ctx ends, and logs the changes an operator must hear of (see alarms).
// Apps a snapshot did not touch share their pointer with the previous one,
// so a change costs a pointer comparison per app, and the alarms look only
// at what changed.
func (s *Server) FollowChanges(ctx context.Context) {
	prev := s.deps.Table.Snapshot()
	al := newAlarms(s.log, s.emptyGrace)
	for _, a := range prev.Apps() {
		al.app(prev, nil, a)
	}
	al.conflicts(prev, prev.Ports())
	due := time.NewTimer(time.Hour)
	due.Stop()
	defer due.Stop()
	for {
		if next, ok := al.nextDue(); ok {
			due.Reset(time.Until(next))
		}
		select {
		case <-ctx.Done():
			return
		case now := <-due.C:
			al.warnEmpty(now)
			continue
		case <-prev.Changed():
		}
		due.Stop()
		cur := s.deps.Table.Snapshot()
		now := time.Now()
		seen := map[string]bool{}
		var ports []int // the service ports of the apps that changed
		// A new overlay may put any app in or out of panic mode without
		// changing its pointer (all of a service's backends ejected leaves
		// the app as its source gave it).
		overlay := !cur.SameEjections(prev)
		for _, a := range cur.Apps() {
			seen[a.ID] = true
			old := prev.App(a.ID)
			if old == a {
				if overlay {
					al.app(cur, old, a)
				}
				continue
			}
			s.changes.add(change{Time: now, Version: cur.Version(), App: a.ID, What: describeChange(old, a)})
			al.app(cur, old, a)
			ports = appendPorts(appendPorts(ports, old), a)
		}
		for _, a := range prev.Apps() {
			if !seen[a.ID] {
				s.changes.add(change{Time: now, Version: cur.Version(), App: a.ID, What: "removed"})
				al.removed(a)
				ports = appendPorts(ports, a)
			}
		}
		al.conflicts(cur, ports)
		prev = cur
	}
}

// appendPorts appends the service ports of a's services (a may be nil).
func appendPorts(ports []int, a *discovery.App) []int {
	if a == nil {
		return ports
	}
	for _, svc := range a.Services {
		if svc.ServicePort > 0 {
			ports = append(ports, svc.ServicePort)
		}
	}
	return ports
}

// alarms logs, once per change of state, what needs an operator: a service
// left with no routable backend, one in panic mode (its health checks fail
// on most backends, so all stay in rotation), and service ports claimed by
// several apps. Each line says what ended it too.
type alarms struct {
	log      *zap.Logger
	panic    map[discovery.ServiceKey]bool
	conflict map[int]string // port -> who claims it, as logged
	// empty holds the services left with no routable backend, warned of
	// only once that lasts grace: a single task replaced, or one that
	// serves a connection and exits as the demo's does, leaves its service
	// empty for a moment many times a day, and a TCP client waits for the
	// next task meanwhile. Deleting an app, whose tasks are killed first,
	// warns of nothing.
	empty map[discovery.ServiceKey]*emptyService
	grace time.Duration
}

// emptyService is a service with no routable backend since since; said is
// set once it was warned of.
type emptyService struct {
	since  time.Time
	fields []zap.Field
	said   bool
}

// emptyGrace is how long a service may have no routable backend before it
// is warned of.
const emptyGrace = 2 * time.Second

func newAlarms(log *zap.Logger, grace time.Duration) *alarms {
	return &alarms{log: log, panic: map[discovery.ServiceKey]bool{}, conflict: map[int]string{},
		empty: map[discovery.ServiceKey]*emptyService{}, grace: grace}
}

// nextDue returns when the next empty service is to be warned of.
func (al *alarms) nextDue() (time.Time, bool) {
	var next time.Time
	for _, e := range al.empty {
		if !e.said && (next.IsZero() || e.since.Before(next)) {
			next = e.since
		}
	}
	return next.Add(al.grace), !next.IsZero()
}

// warnEmpty warns of the services empty for grace by now.
func (al *alarms) warnEmpty(now time.Time) {
	for _, e := range al.empty {
		if !e.said && now.Sub(e.since) >= al.grace {
			e.said = true
			al.log.Warn("service has no routable backend: clients get 503 (HTTP) or wait, then are closed (TCP)",
				append(e.fields, zap.Duration("for", now.Sub(e.since).Round(time.Millisecond)))...)
		}
	}
}

func serviceFields(svc *discovery.Service) []zap.Field {
	return []zap.Field{zap.String("app", svc.Key.App), zap.Int("port_index", svc.Key.PortIndex), zap.Int("service_port", svc.ServicePort)}
}

// app compares an app's services in snap with old's (nil: new, or the first
// look at the table).
func (al *alarms) app(snap *discovery.Snapshot, old, cur *discovery.App) {
	for i, svc := range cur.Services {
		n := len(svc.Backends)
		if old != nil && i < len(old.Services) && old.Services[i].Key == svc.Key {
			switch was := len(old.Services[i].Backends); {
			case was > 0 && n == 0:
				al.empty[svc.Key] = &emptyService{since: time.Now(), fields: serviceFields(svc)}
			case was == 0 && n > 0:
				e := al.empty[svc.Key]
				delete(al.empty, svc.Key)
				if e == nil || !e.said {
					break // not warned of: a moment without a backend
				}
				al.log.Info("service has routable backends again",
					append(serviceFields(svc), zap.Int("backends", n), zap.Duration("after", time.Since(e.since).Round(time.Millisecond)))...)
			}
		}
		kept := snap.EjectedKept(svc)
		switch {
		case kept > 0 && !al.panic[svc.Key]:
			al.panic[svc.Key] = true
			al.log.Warn("most backends fail pacer's health checks; all kept in rotation (panic threshold)",
				append(serviceFields(svc), zap.Int("failing", kept), zap.Int("backends", n))...)
		case kept == 0 && al.panic[svc.Key]:
			delete(al.panic, svc.Key)
			al.log.Info("service out of panic mode: failing backends are out of rotation again", serviceFields(svc)...)
		}
	}
	if old != nil && len(cur.Services) < len(old.Services) {
		for _, svc := range old.Services[len(cur.Services):] {
			delete(al.panic, svc.Key)
			delete(al.empty, svc.Key)
		}
	}
}

func (al *alarms) removed(a *discovery.App) {
	for _, svc := range a.Services {
		delete(al.panic, svc.Key)
		delete(al.empty, svc.Key)
	}
}

// conflicts looks at ports in snap (those of the apps that changed) and
// logs those that came to be claimed by several apps, or changed
// claimants, and those no longer contested.
func (al *alarms) conflicts(snap *discovery.Snapshot, ports []int) {
	for _, port := range ports {
		claims := snap.Claimants(port)
		if len(claims) < 2 {
			if _, was := al.conflict[port]; was {
				delete(al.conflict, port)
				al.log.Info("service port no longer contested", zap.Int("service_port", port))
			}
			continue
		}
		losers := make([]string, len(claims)-1)
		for i, l := range claims[1:] {
			losers[i] = keyString(l.Key)
		}
		who := keyString(claims[0].Key) + " over " + strings.Join(losers, ", ")
		if al.conflict[port] != who {
			al.conflict[port] = who
			al.log.Warn("service port claimed by several apps; the lowest app id serves it, the others are not served there",
				zap.Int("service_port", port), zap.String("winner", keyString(claims[0].Key)), zap.Strings("losers", losers))
		}
	}
}

func backendCount(a *discovery.App) int {
	n := 0
	for _, s := range a.Services {
		n += len(s.Backends)
	}
	return n
}

func describeChange(old, cur *discovery.App) string {
	switch {
	case old == nil:
		return fmt.Sprintf("added with %d routable backends", backendCount(cur))
	case cur.Problem != "" && old.Problem == "":
		return "no longer understood: " + cur.Problem
	case cur.Problem == "" && old.Problem != "":
		return "understood again"
	}
	o, n := backendCount(old), backendCount(cur)
	if o != n {
		return fmt.Sprintf("routable backends %d → %d", o, n)
	}
	return "backends replaced or settings changed"
}

func (s *Server) changesHandler(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.changes.list())
}
