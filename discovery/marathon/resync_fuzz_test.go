package marathon

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// Events are hints, fetches are truth (DESIGN.md): whatever events and
// single-app fetches reached the state before a full resync was issued, the
// resync's answer alone decides the table. The one memory events may leave
// on purpose is the terminated-task cache (Marathon ignores every update of
// a task after its end, and so does pacer), so the reference state starts
// with the same cache.

// resyncFixtures are the snapshots the fuzz picks from; events and fetches
// name their apps and tasks, so they hit real entries and miss others.
var resyncFixtures = []string{
	"marathon-lb-zdd_apps.json",                 // two apps, 1.0-era task ids, one HTTP check each
	"marathon-lb-zdd_app_blue_marathon1.5.json", // instance ids, a check, health results
	"marathon-lb-marathon15_apps.json",          // no check
}

// resyncWorld is what the fuzz draws names and answers from.
type resyncWorld struct {
	raw   [][]byte
	apps  []string
	tasks []*task // a copy of every fixture task, for hosts and ports
}

func newResyncWorld(t testing.TB) *resyncWorld {
	w := &resyncWorld{}
	for _, name := range resyncFixtures {
		b := readTestdata(t, name)
		w.raw = append(w.raw, b)
		apps, _, err := decodeApps(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, a := range apps {
			if !slices.Contains(w.apps, a.ID) {
				w.apps = append(w.apps, a.ID)
			}
			w.tasks = append(w.tasks, a.Def.Tasks...)
		}
	}
	w.apps = append(w.apps, "/ghost")
	w.tasks = append(w.tasks, &task{ID: "ghost.1", AppID: "/ghost", Host: "10.9.9.9", Ports: []int{31999}})
	return w
}

// snapshot decodes fixture i afresh: the state keeps pointers into it.
func (w *resyncWorld) snapshot(t testing.TB, i int) []decodedApp {
	apps, _, err := decodeApps(w.raw[i%len(w.raw)])
	if err != nil {
		t.Fatal(err)
	}
	return apps
}

// appAnswer is GET /v2/apps/{id} as fixture i answers it; gone for 404.
func (w *resyncWorld) appAnswer(t testing.TB, i int, id string) (d decodedApp, gone bool) {
	for _, a := range w.snapshot(t, i) {
		if a.ID == id {
			return a, false
		}
	}
	return decodedApp{}, true
}

var resyncStates = []string{stateRunning, stateStaging, stateStarting, stateKilling, stateUnreachable, stateLost, stateKilled, stateFinished, stateFailed, stateGone}

// pendingFetch is a single-app fetch issued but not yet answered.
type pendingFetch struct {
	seq  uint64
	id   string
	d    decodedApp
	gone bool
}

// resyncScript turns fuzz bytes into events and fetches applied to s, and
// returns a log of them and the fetches still in flight.
func (w *resyncWorld) play(t testing.TB, s *state, ops []byte) (log []string, pending []pendingFetch) {
	b := func(i int) int {
		if i < len(ops) {
			return int(ops[i])
		}
		return 0
	}
	for i := 0; i < len(ops); i += 5 {
		op, x, y, z, v := b(i), b(i+1), b(i+2), b(i+3), b(i+4)
		app := w.apps[x%len(w.apps)]
		tk := w.tasks[y%len(w.tasks)]
		switch op % 6 {
		case 0, 1: // a status update, about a real task or a neighbour
			ev := &event{EventType: evStatusUpdate, AppID: app, TaskID: tk.ID, TaskStatus: resyncStates[z%len(resyncStates)], Version: tk.Version}
			if v&1 != 0 {
				ev.Host, ev.Ports = tk.Host, tk.Ports
			}
			if v&2 != 0 {
				ev.Host, ev.Ports = fmt.Sprintf("10.0.%d.%d", v>>2&3, z), []int{31000 + v}
			}
			if v&64 != 0 {
				ev.Version = "2099-01-01T00:00:00.000Z" // newer than every definition
			}
			s.applyStatus(ev, s.next())
			log = append(log, fmt.Sprintf("status %s %s %s host %q ports %v", app, tk.ID, ev.TaskStatus, ev.Host, ev.Ports))
		case 2: // a health event of each kind and verdict
			types := []string{evHealthStatusChanged, evInstanceHealthChanged, evFailedHealthCheck, evUnhealthyInstanceKill, evUnhealthyTaskKill}
			ev := &event{EventType: types[z%len(types)], AppID: app}
			if v&1 != 0 {
				ev.AppID, ev.RunSpecID = "", app
			}
			if v&2 != 0 {
				ev.InstanceID = instanceOf(tk.ID)
			} else {
				ev.TaskID = tk.ID
			}
			alive := v&4 != 0
			if v&8 == 0 {
				ev.Alive, ev.Healthy = &alive, &alive
			}
			s.applyHealth(ev, s.next())
			log = append(log, fmt.Sprintf("health %s %s %s alive %v (set %v)", ev.EventType, app, tk.ID, alive, v&8 == 0))
		case 3: // a single-app fetch is issued now, answered by fixture z
			d, gone := w.appAnswer(t, z, app)
			pending = append(pending, pendingFetch{seq: s.next(), id: app, d: d, gone: gone})
			log = append(log, fmt.Sprintf("fetch %s issued (fixture %d, gone %v)", app, z%len(w.raw), gone))
		case 4: // the oldest-but-v fetch in flight lands
			if len(pending) == 0 {
				continue
			}
			j := v % len(pending)
			p := pending[j]
			pending = slices.Delete(pending, j, j+1)
			if p.gone {
				s.removeFetched(p.id, p.seq)
			} else {
				s.mergeFetched(p.d, p.seq)
			}
			log = append(log, fmt.Sprintf("fetch %s (seq %d) lands", p.id, p.seq))
		case 5: // an intermediate full resync
			s.applyFull(w.snapshot(t, z), s.next())
			log = append(log, fmt.Sprintf("full resync, fixture %d", z%len(w.raw)))
		}
	}
	return log, pending
}

// routedTable renders what the state routes, app by app, with a fresh builder
// (its health memory is not the state's to reconcile).
func routedTable(t testing.TB, s *state) map[string]string {
	out := map[string]string{}
	b := testBuilder(true)
	for id, a := range s.apps {
		if a.def == nil {
			out[id] = "no definition; problem " + a.problem
			continue
		}
		var tasks []*task
		for _, e := range a.tasks {
			tasks = append(tasks, e.t)
		}
		slices.SortFunc(tasks, func(x, y *task) int { return strings.Compare(x.ID, y.ID) })
		j, err := json.Marshal(b.build(a.def, tasks))
		if err != nil {
			t.Fatal(err)
		}
		out[id] = string(j)
	}
	return out
}

func diffTables(got, want map[string]string) string {
	var d []string
	for id, g := range got {
		if w, ok := want[id]; !ok {
			d = append(d, fmt.Sprintf("%s: only after the events: %s", id, g))
		} else if g != w {
			d = append(d, fmt.Sprintf("%s:\n  after events+resync %s\n  resync alone        %s", id, g, w))
		}
	}
	for id, w := range want {
		if _, ok := got[id]; !ok {
			d = append(d, fmt.Sprintf("%s: only in the resync alone: %s", id, w))
		}
	}
	slices.Sort(d)
	return strings.Join(d, "\n")
}

// FuzzEventsThenResync: a starting snapshot, any sequence of events and
// single-app fetches (issued and answered in any order, some landing only
// after it), then a full resync issued after them: the table is the
// resync's, as if nothing came before it but the ends of tasks.
func FuzzEventsThenResync(f *testing.F) {
	f.Add(byte(0), byte(0), []byte{})
	f.Add(byte(0), byte(1), []byte{0, 0, 0, 0, 1, 2, 1, 1, 4, 1})
	f.Add(byte(1), byte(0), []byte{3, 0, 0, 2, 0, 0, 0, 1, 3, 3, 4, 0, 0, 0, 0, 2, 0, 3, 0, 6})
	f.Add(byte(0), byte(2), []byte{1, 1, 3, 3, 3, 5, 0, 0, 1, 0, 2, 0, 3, 0, 6, 0, 4, 0, 0, 65})
	f.Add(byte(2), byte(0), []byte{3, 2, 0, 0, 0, 0, 3, 9, 0, 2, 4, 0, 0, 0, 0, 1, 3, 0, 7, 1})
	w := newResyncWorld(f)
	f.Fuzz(func(t *testing.T, start, final byte, ops []byte) {
		if len(ops) > 200 {
			return // 40 steps find what 400 would
		}
		s := newState()
		s.applyFull(w.snapshot(t, int(start)), s.next())
		log, pending := w.play(t, s, ops)
		// Fetches issued before the resync land before it or after it
		// (fetches land in any order): which, the inputs choose.
		land := func(p pendingFetch) {
			if p.gone {
				s.removeFetched(p.id, p.seq)
			} else {
				s.mergeFetched(p.d, p.seq)
			}
		}
		var late []pendingFetch
		for i, p := range pending {
			if (i+int(final))%3 == 2 {
				late = append(late, p)
				log = append(log, fmt.Sprintf("fetch %s (seq %d) lands after the resync", p.id, p.seq))
				continue
			}
			land(p)
		}
		s.applyFull(w.snapshot(t, int(final)), s.next())
		for _, p := range late {
			land(p)
		}

		ref := newState()
		for _, id := range s.terminated.Keys() {
			st, _ := s.terminated.Peek(id)
			ref.terminated.Add(id, st)
		}
		ref.applyFull(w.snapshot(t, int(final)), ref.next())

		if d := diffTables(routedTable(t, s), routedTable(t, ref)); d != "" {
			t.Fatalf("start fixture %d, then:\n  %s\nthen a full resync (fixture %d):\n%s",
				int(start)%len(w.raw), strings.Join(log, "\n  "), int(final)%len(w.raw), d)
		}
	})
}
