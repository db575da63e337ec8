package admin

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

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
// ctx ends. Apps a snapshot did not touch share their pointer with the
// previous one, so a change costs a pointer comparison per app.
func (s *Server) FollowChanges(ctx context.Context) {
	prev := s.deps.Table.Snapshot()
	for {
		select {
		case <-ctx.Done():
			return
		case <-prev.Changed():
		}
		cur := s.deps.Table.Snapshot()
		now := time.Now()
		seen := map[string]bool{}
		for _, a := range cur.Apps() {
			seen[a.ID] = true
			old := prev.App(a.ID)
			if old == a {
				continue
			}
			s.changes.add(change{Time: now, Version: cur.Version(), App: a.ID, What: describeChange(old, a)})
		}
		for _, a := range prev.Apps() {
			if !seen[a.ID] {
				s.changes.add(change{Time: now, Version: cur.Version(), App: a.ID, What: "removed"})
			}
		}
		prev = cur
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
