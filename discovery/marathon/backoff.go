package marathon

import (
	"math/rand/v2"
	"time"
)

// backoff is a jittered exponential backoff: attempt n waits a random time
// in [d/2, d] with d = min·2ⁿ capped at max. The jitter keeps a fleet of
// pacers from reconnecting to a recovering Marathon in lockstep; the cap
// (5 s by default) keeps convergence within seconds of its recovery.
type backoff struct {
	min, max time.Duration
	n        int
}

func (b *backoff) next() time.Duration {
	d := b.max
	if b.n < 32 {
		if e := b.min << b.n; e > 0 && e < b.max {
			d = e
		}
	}
	b.n++
	half := d / 2
	return half + rand.N(d-half+1)
}

func (b *backoff) reset() { b.n = 0 }
