package marathon

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/internal/fixtures"
)

// gen1000 turns the real 1,000-app group tree into a /v2/apps?embed=apps.tasks
// answer with 10 running tasks per app on 100 agents (IP literals, so no DNS).
func gen1000(tb testing.TB) []byte {
	tb.Helper()
	apps, err := fixtures.Cluster(filepath.Join("testdata", "marathon-bench-real-groups-1000.json"), 10)
	if err != nil {
		tb.Fatal(err)
	}
	return fixtures.AppsJSON(apps)
}

// benchLoop is a state goroutine without Run: no network, no goroutines.
func benchLoop(tb testing.TB, table *discovery.Table) *loop {
	s, err := New(Config{URLs: []string{"http://127.0.0.1:1"}}, table, zap.NewNop())
	if err != nil {
		tb.Fatal(err)
	}
	return newLoop(s, context.Background(), &sync.WaitGroup{})
}

func applySnapshot(tb testing.TB, l *loop, body []byte) []*discovery.App {
	apps, _, err := decodeApps(body)
	if err != nil {
		tb.Fatal(err)
	}
	l.st.applyFull(apps, l.st.next())
	return l.publishAll()
}

func TestGen1000(t *testing.T) {
	t.Parallel()
	l := benchLoop(t, discovery.NewTable())
	apps := applySnapshot(t, l, gen1000(t))
	tasks, backends := 0, 0
	for _, a := range apps {
		tasks += len(a.Tasks)
		for _, s := range a.Services {
			backends += len(s.Backends)
		}
	}
	if len(apps) != 1000 || tasks != 10000 || backends < 10000 {
		t.Fatalf("apps %d, tasks %d, backends %d", len(apps), tasks, backends)
	}
}

// BenchmarkDecodeApply1000 is a full resync of 1,000 apps / 10,000 tasks:
// decode, build every app, Table.Apply. "cold" is the first sync into an
// empty table; "steady" re-applies an unchanged snapshot (the periodic case).
func BenchmarkDecodeApply1000(b *testing.B) {
	body := gen1000(b)
	b.Run("cold", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			applySnapshot(b, benchLoop(b, discovery.NewTable()), body)
		}
	})
	b.Run("steady", func(b *testing.B) {
		l := benchLoop(b, discovery.NewTable())
		applySnapshot(b, l, body)
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			applySnapshot(b, l, body)
		}
	})
}

// BenchmarkStatusUpdateDelta applies one status_update_event (decode, state
// delta, build the app, Table.Apply) with 1,000 apps / 10,000 tasks loaded.
// Iterations alternate TASK_RUNNING of a new task and its TASK_KILLED.
func BenchmarkStatusUpdateDelta(b *testing.B) {
	table := discovery.NewTable()
	l := benchLoop(b, table)
	applySnapshot(b, l, gen1000(b))
	const app = "/cudcos/mactest1"
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		state := stateRunning
		if i%2 == 1 {
			state = stateKilled
		}
		data := fmt.Appendf(nil, `{"slaveId":"S3","taskId":"cudcos_mactest1.bench-%d","taskStatus":%q,"message":"","appId":%q,"host":"10.0.3.21","ipAddresses":[],"ports":[31874],"version":"2020-03-05T10:14:50.512Z","eventType":"status_update_event","timestamp":"2020-03-05T10:15:07.331Z"}`, i/2, state, app)
		l.handleEvent(data)
		i++
	}
	b.StopTimer()
	if n := len(table.Snapshot().App(app).Tasks); n != 10 && n != 11 {
		b.Fatalf("%d tasks", n)
	}
}

// FuzzDecodeApps checks that no answer Marathon (or anything in its place)
// sends crashes decoding or building, and that built apps keep the model's
// invariants.
func FuzzDecodeApps(f *testing.F) {
	for _, name := range []string{
		"marathon-docs-app_list.json", "marathon-lb-marathon15_apps.json", "marathon-lb-zdd_apps.json",
		"marathon-lb-zdd_app_blue.json", "marathon-lb-zdd_app_blue_marathon1.5.json",
	} {
		f.Add(readTestdata(f, name))
	}
	f.Add([]byte(`{"apps":[` + string(readTestdata(f, "marathon-docs-app.json")) + `]}`))
	f.Add([]byte(`{"apps":[{"id":"/ipt","ipAddress":{"discovery":{"ports":[{"number":80}]}},"tasks":[{"id":"t","state":"TASK_RUNNING","ipAddresses":[{"ipAddress":"::ffff:1.2.3.4"}]}]}]}`))
	f.Add([]byte(`{"apps":[],"groups":[{"apps":[{"id":"/g/a","ports":[1]}],"groups":[]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		apps, _, err := decodeApps(data)
		if err != nil {
			return
		}
		b := testBuilder(true)
		for _, d := range apps {
			if d.ID == "" || d.ID[0] != '/' {
				t.Fatalf("bad id %q", d.ID)
			}
			if d.Def == nil {
				continue
			}
			a := b.build(d.Def, d.Def.Tasks)
			if a.Problem != "" && len(a.Services) > 0 {
				t.Fatal("app with a problem has services")
			}
			if len(a.Tasks) != len(d.Def.Tasks) {
				t.Fatalf("%d task states for %d tasks", len(a.Tasks), len(d.Def.Tasks))
			}
			for _, s := range a.Services {
				for i := 1; i < len(s.Backends); i++ {
					if s.Backends[i-1].TaskID > s.Backends[i].TaskID {
						t.Fatal("backends not sorted")
					}
				}
				for _, be := range s.Backends {
					if !be.Addr.IsValid() || be.Addr.Port() == 0 {
						t.Fatalf("bad backend %+v", be)
					}
				}
			}
		}
	})
}
