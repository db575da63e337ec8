package churn

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/pacer-lb/pacer/discovery/marathonsim"
)

// Killer kills one running task of App every Every.
type Killer struct {
	Sim   *marathonsim.Server
	App   string
	Every time.Duration // 0 means 500ms
	// Grace > 0 kills with TASK_KILLING first (Marathon's kill grace).
	Grace time.Duration
	// Abrupt kills with no event: the process and its connections vanish
	// and Marathon keeps listing the task. LearnAfter later (0 means
	// 700ms) Marathon learns (TASK_KILLED) and launches a replacement, as
	// when Mesos finally reports a lost agent's task.
	Abrupt     bool
	LearnAfter time.Duration
	// MinLive: a kill is skipped while fewer tasks than this would stay
	// alive (not killed, not dying); 0 means 2.
	MinLive int
	// AtLeast, if > 0, keeps Run killing after ctx ends until it has made
	// this many kills, for a minute more at most: on a loaded machine
	// replacements come up late and ticks are skipped for want of live
	// tasks, and a test that needs its kills should get them rather than
	// fail for the machine's speed.
	AtLeast int
	// Logf, if set, is told of each kill.
	Logf func(format string, args ...any)

	mu      sync.Mutex
	zombies map[string]bool
}

// KillStats are what Run did.
type KillStats struct {
	Kills   int
	Skipped int // ticks where too few tasks were alive to kill one
	Errors  int
}

// Run kills until ctx ends; abrupt deaths still waiting to be learned are
// reported before it returns, so the app heals.
func (k *Killer) Run(ctx context.Context) KillStats {
	every := k.Every
	if every <= 0 {
		every = 500 * time.Millisecond
	}
	learn := k.LearnAfter
	if learn <= 0 {
		learn = 700 * time.Millisecond
	}
	minLive := k.MinLive
	if minLive <= 0 {
		minLive = 2
	}
	k.mu.Lock()
	k.zombies = map[string]bool{}
	k.mu.Unlock()
	var st KillStats
	var wg sync.WaitGroup
	tick := time.NewTicker(every)
	defer tick.Stop()
	done := ctx.Done()
	var overtime <-chan time.Time // after ctx ended, while kills fall short of AtLeast
	for {
		select {
		case <-done:
			if st.Kills >= k.AtLeast {
				wg.Wait()
				return st
			}
			done = nil
			t := time.NewTimer(time.Minute)
			defer t.Stop()
			overtime = t.C
			continue
		case <-overtime:
			wg.Wait()
			return st
		case <-tick.C:
		}
		if done == nil && st.Kills >= k.AtLeast {
			wg.Wait()
			return st
		}
		var live []string
		k.mu.Lock()
		for _, t := range k.Sim.Tasks(k.App) {
			if t.State == "TASK_RUNNING" && !k.zombies[t.ID] {
				live = append(live, t.ID)
			}
		}
		k.mu.Unlock()
		if len(live) <= minLive {
			st.Skipped++
			continue
		}
		id := live[rand.IntN(len(live))]
		var err error
		if k.Abrupt {
			k.mu.Lock()
			k.zombies[id] = true
			k.mu.Unlock()
			err = k.Sim.KillTask(id, marathonsim.KillOptions{Abrupt: true})
			wg.Add(1)
			go func() {
				defer wg.Done()
				t := time.NewTimer(learn)
				defer t.Stop()
				select {
				case <-t.C:
				case <-ctx.Done():
				}
				_ = k.Sim.KillTask(id, marathonsim.KillOptions{})
				k.mu.Lock()
				delete(k.zombies, id)
				k.mu.Unlock()
			}()
		} else {
			err = k.Sim.KillTask(id, marathonsim.KillOptions{Grace: k.Grace})
		}
		if err != nil {
			st.Errors++
			continue
		}
		st.Kills++
		if k.Logf != nil {
			k.Logf("killed %s (abrupt %v, grace %v)", id, k.Abrupt, k.Grace)
		}
	}
}
