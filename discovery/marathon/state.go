package marathon

import (
	lru "github.com/hashicorp/golang-lru/v2"
)

// terminatedCacheSize bounds the memory of task ids seen killing or
// terminal. Marathon ignores every update for a terminal task; pacer does the
// same, and a late or repeated TASK_RUNNING must not bring such a task back.
const terminatedCacheSize = 1 << 16

// healthyCacheSize bounds the memory of per-task health verdicts.
const healthyCacheSize = 1 << 16

// state is the source's private view of Marathon: per app, the definition
// from the last fetch and the tasks as fetches and events left them. It is
// owned by the state goroutine (Source.Run) and never shared.
//
// Events are hints applied at once; fetches are truth as of the moment they
// were issued. Every event and every fetch takes a sequence number from one
// counter, so a fetch answer that arrives after newer events neither undoes
// them nor is undone by older ones.
type state struct {
	apps map[string]*appState
	// tombs remembers, per app, the sequence of the fetch that found it gone,
	// so an older full snapshot still in flight does not bring it back.
	tombs map[string]uint64
	// fullSeq is the sequence of the newest full snapshot applied: an app
	// it did not list is gone to every fetch issued before it.
	fullSeq    uint64
	seq        uint64
	terminated *lru.Cache[string, string] // task id -> TASK_KILLING or a terminal state
}

type appState struct {
	def     *appDef // nil while known only from events (a fetch is pending)
	problem string  // why the app's JSON could not be understood
	defSeq  uint64  // sequence of the fetch that produced def (or problem)
	tasks   map[string]*taskEntry
}

type taskEntry struct {
	t   *task
	seq uint64 // sequence of the last event that changed the task; 0: fetched
	// healthSeq is the sequence of the last health event applied to the
	// task's results; 0: they come from a fetch.
	healthSeq uint64
}

func newState() *state {
	term, _ := lru.New[string, string](terminatedCacheSize)
	return &state{apps: map[string]*appState{}, tombs: map[string]uint64{}, terminated: term}
}

// next returns a new sequence number.
func (s *state) next() uint64 {
	s.seq++
	return s.seq
}

// newerEvents reports whether an event after sequence f touched the app.
func (a *appState) newerEvents(f uint64) bool {
	for _, e := range a.tasks {
		if e.seq > f {
			return true
		}
	}
	return false
}

// mergeFetched applies one app from a fetch issued at sequence f. It returns
// false when the answer is older than what the state already holds.
func (s *state) mergeFetched(d decodedApp, f uint64) bool {
	if tomb, ok := s.tombs[d.ID]; ok {
		if tomb > f {
			return false // removed after this fetch was issued
		}
		delete(s.tombs, d.ID)
	}
	a := s.apps[d.ID]
	if a != nil && a.defSeq > f {
		return false
	}
	if a == nil && f < s.fullSeq {
		// A full snapshot issued after this fetch did not list the app
		// (or it left since), and nothing newer vouches for it: the fetch,
		// landing late (fetches land in any order), must not bring it
		// back, whether the state knew the app before or not.
		return false
	}
	if a == nil {
		a = &appState{tasks: map[string]*taskEntry{}}
		s.apps[d.ID] = a
	}
	a.defSeq = f
	old := a.tasks
	a.tasks = make(map[string]*taskEntry, len(old))
	if d.Def == nil {
		a.def, a.problem = nil, d.Problem
	} else {
		a.def, a.problem = d.Def, ""
		for _, t := range d.Def.Tasks {
			if st, ok := s.terminated.Peek(t.ID); ok {
				if terminal(st) {
					continue // the snapshot predates the end of this task
				}
				t.State = st // TASK_KILLING
			}
			e := &taskEntry{t: t}
			if o := old[t.ID]; o != nil && o.healthSeq > f {
				// A health event after the fetch was issued is newer than
				// the fetched results.
				t.HealthCheckResults = o.t.HealthCheckResults
				e.healthSeq = o.healthSeq
			}
			if o := old[t.ID]; o != nil && o.seq > f {
				// An event after the fetch was issued is newer on state and
				// address; the fetch still brings the health results.
				e.seq = o.seq
				t.State = o.t.State
				if o.t.Host != "" {
					t.Host = o.t.Host
				}
				if o.t.Ports != nil {
					t.Ports = o.t.Ports
				}
				if o.t.IPAddresses != nil {
					t.IPAddresses = o.t.IPAddresses
				}
			}
			a.tasks[t.ID] = e
		}
		d.Def.Tasks = nil // the tasks live in a.tasks from now on
	}
	// Tasks that events added after the fetch was issued are newer than it.
	for id, o := range old {
		if o.seq > f && a.tasks[id] == nil {
			a.tasks[id] = o
		}
	}
	return true
}

// removeFetched applies a 404 from a fetch issued at sequence f.
func (s *state) removeFetched(id string, f uint64) bool {
	if a := s.apps[id]; a != nil && a.defSeq > f {
		return false
	}
	if tomb, ok := s.tombs[id]; ok && tomb > f {
		return false
	}
	delete(s.apps, id)
	s.tombs[id] = f
	return true
}

// applyFull applies a full snapshot issued at sequence f: every app in it
// is merged, and every app not in it is dropped unless something newer than
// the snapshot (a later fetch, or events) vouches for it.
func (s *state) applyFull(apps []decodedApp, f uint64) {
	seen := make(map[string]bool, len(apps))
	for _, d := range apps {
		if seen[d.ID] {
			continue // a group tree listing an app twice: first wins
		}
		seen[d.ID] = true
		s.mergeFetched(d, f)
	}
	for id, a := range s.apps {
		if !seen[id] && a.defSeq <= f && !a.newerEvents(f) {
			delete(s.apps, id)
		}
	}
	for id, tomb := range s.tombs {
		if tomb <= f {
			delete(s.tombs, id)
		}
	}
	s.fullSeq = max(s.fullSeq, f)
}

// applyStatus applies a status_update_event as a delta, at sequence e. It
// returns the app id, whether the app's state changed, and whether the app
// needs a fetch (unknown app, health checks to wait for, newer version).
func (s *state) applyStatus(ev *event, e uint64) (id string, changed, fetch bool) {
	id = normalizeID(ev.AppID)
	if id == "" || ev.TaskID == "" {
		return id, false, false
	}
	status := ev.TaskStatus
	if prev, ok := s.terminated.Peek(ev.TaskID); ok {
		// Marathon ignores every update after a terminal one; after KILLING
		// only the end of the task is news.
		if terminal(prev) || !terminal(status) {
			return id, false, false
		}
	}
	a := s.apps[id]
	if terminal(status) || status == stateKilling {
		s.terminated.Add(ev.TaskID, status)
		if a == nil || a.tasks[ev.TaskID] == nil {
			return id, false, false
		}
		if status == stateKilling {
			t := *a.tasks[ev.TaskID].t
			t.State = stateKilling
			a.tasks[ev.TaskID] = &taskEntry{t: &t, seq: e}
		} else {
			delete(a.tasks, ev.TaskID)
		}
		return id, a.def != nil, false
	}

	if a == nil {
		a = &appState{tasks: map[string]*taskEntry{}}
		s.apps[id] = a
	}
	var t task
	var healthSeq uint64
	if o := a.tasks[ev.TaskID]; o != nil {
		t = *o.t // keep health results and anything the event lacks
		healthSeq = o.healthSeq
		if regresses(t.State, ev.TaskStatus) {
			// Events come out of order: a task seen running never goes
			// back to staging or starting.
			return id, false, false
		}
	} else {
		t = task{ID: ev.TaskID, AppID: id}
	}
	t.State = status
	if ev.Host != "" {
		t.Host = ev.Host
	}
	if ev.Ports != nil {
		t.Ports = ev.Ports
	}
	if ev.IPAddresses != nil {
		t.IPAddresses = ev.IPAddresses
	}
	if ev.Version != "" {
		t.Version = ev.Version
	}
	a.tasks[ev.TaskID] = &taskEntry{t: &t, seq: e, healthSeq: healthSeq}

	switch {
	case a.def == nil:
		// Unknown app: its definition is needed to route. An app whose JSON
		// could not be understood waits for the next resync instead.
		fetch = a.problem == ""
	case status == stateRunning && len(a.def.HealthChecks) > 0:
		fetch = true // a new task is routed once Marathon has health results
	case ev.Version != "" && a.def.Version != "" && ev.Version > a.def.Version:
		// Marathon's versions are fixed-width ISO 8601 UTC timestamps: a
		// task of a newer version means the definition changed.
		fetch = true
	}
	return id, a.def != nil, fetch
}

// regresses reports whether moving from state from to state to goes
// backwards in Mesos' task life (staging, starting, running): only an
// out-of-order event does that.
func regresses(from, to string) bool {
	rank := func(s string) int {
		switch s {
		case stateStaging:
			return 0
		case stateStarting:
			return 1
		case "":
			return -1
		}
		return 2 // running, unreachable, lost
	}
	return rank(to) >= 0 && rank(from) > rank(to)
}
