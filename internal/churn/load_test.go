package churn

import (
	"context"
	"testing"
	"time"

	"github.com/pacer-lb/pacer/internal/testnet"
)

// A load whose connects are refused pauses after each one instead of
// spinning: every failed connect is followed by connectBackoff (or the end
// of the run), so a worker makes at most elapsed/connectBackoff + 1 of them.
// The bound is one-sided: a slow machine only makes fewer.
func TestRefusedConnectsBackOff(t *testing.T) {
	addr := testnet.RefusedAddr(t).String()
	for _, mode := range []Mode{HTTP, TCP} {
		t.Run(mode.String(), func(t *testing.T) {
			const workers = 2
			load := &Load{Addr: addr, Mode: mode, Workers: workers}
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			c := load.Run(ctx)
			elapsed := time.Since(start)
			failed := c.Failures()
			limit := uint64(workers * (int(elapsed/connectBackoff) + 1))
			if failed == 0 {
				t.Fatalf("no failed connect to %s in %v: %v", addr, elapsed, c)
			}
			if c.Requests != 0 {
				t.Fatalf("%d requests succeeded against a refused address", c.Requests)
			}
			if failed > limit {
				t.Errorf("%d failed connects in %v by %d workers, want at most %d (%v apart): the load spins; %v",
					failed, elapsed.Round(time.Millisecond), workers, limit, connectBackoff, c)
			}
		})
	}
}
