package churn

import (
	"context"
	"fmt"
	"time"
)

// Result is one scenario's run.
type Result struct {
	Name     string
	Duration time.Duration
	Counts
	KillStats
}

func (r Result) String() string {
	return fmt.Sprintf("%s: %v, %d kills (%d skipped, %d errors); %v", r.Name, r.Duration.Round(time.Millisecond), r.Kills, r.Skipped, r.KillStats.Errors, r.Counts)
}

// Run runs load and k together for d and returns what they saw. The load
// starts first and stops last, so every kill happens under load.
func Run(ctx context.Context, name string, load *Load, k *Killer, d time.Duration) Result {
	lctx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	counts := make(chan Counts, 1)
	go func() { counts <- load.Run(lctx) }()
	start := time.Now()
	kctx, stopKills := context.WithTimeout(ctx, d)
	defer stopKills()
	ks := k.Run(kctx)
	// A last moment of load after the last kill: what it broke shows up.
	settle := time.NewTimer(200 * time.Millisecond)
	select {
	case <-settle.C:
	case <-ctx.Done():
		settle.Stop()
	}
	stopLoad()
	return Result{Name: name, Duration: time.Since(start), Counts: <-counts, KillStats: ks}
}
