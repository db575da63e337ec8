package fastconn

import "time"

// The data path's clock. time.Now reads two clocks, wall and monotonic,
// each a vDSO call; deadlines, idle times and pool ages need only the
// monotonic one. With one request per connection the vDSO's clock was
// 1.5% of the TCP plane's CPU and 2.3-2.7% of the HTTP plane's (perf;
// HAProxy 0.2%), most of it from time.Now (bench/RESULTS.md). So fastconn's
// deadlines, and the proxies' bookkeeping, use one monotonic clock: the
// time since monoBase, one reading per call.

// monoBase anchors the clock.
var monoBase = time.Now()

// Mono is the monotonic clock: the time since the process started, read
// once.
func Mono() time.Duration { return time.Since(monoBase) }

// MonoOf is t on Mono's clock. For a time from time.Now it reads no clock
// (t carries a monotonic reading).
func MonoOf(t time.Time) time.Duration { return t.Sub(monoBase) }

// DeadlineIn is the time d from now, as time.Now().Add(d) with one clock
// reading: for the deadlines a copy loop sets on every window.
func DeadlineIn(d time.Duration) time.Time { return monoBase.Add(Mono() + d) }
