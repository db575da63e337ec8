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
	al := newAlarms(s.log)
	for _, a := range prev.Apps() {
		al.app(prev, nil, a)
	}
	al.conflicts(prev, prev.Ports())
	for {
		select {
		case <-ctx.Done():
			return
		case <-prev.Changed():
		}
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
}

func newAlarms(log *zap.Logger) *alarms {
	return &alarms{log: log, panic: map[discovery.ServiceKey]bool{}, conflict: map[int]string{}}
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
				al.log.Warn("service has no routable backend: clients get 503 (HTTP) or wait, then are closed (TCP)", serviceFields(svc)...)
			case was == 0 && n > 0:
				al.log.Info("service has routable backends again", append(serviceFields(svc), zap.Int("backends", n))...)
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
		}
	}
}

func (al *alarms) removed(a *discovery.App) {
	for _, svc := range a.Services {
		delete(al.panic, svc.Key)
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
