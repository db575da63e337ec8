// Package gcfloor keeps the garbage collector from running on a small heap
// as often as its default would.
//
// With GOGC=100 the runtime collects whenever the heap has grown to twice
// what the last cycle left live, and never later than at 4 MB. A proxy's
// live heap is small (a few MB for a few hundred apps) while every new
// connection allocates a little (fastconn's Conn and pollFD, fasthttp's
// per-connection state): at 39k one-request connections a second through
// the HTTP plane, that was a collection every 70 ms, each about 0.7 ms of
// marking on the one P the proxy had. Requests that met a cycle waited for
// it: p99 1.2-1.5x HAProxy's, and 1.0-1.05x with the collector held off
// (bench/RESULTS.md).
//
// So after every cycle the GC percentage is set so that the next one comes
// no sooner than when the heap reaches the floor, and at GOGC=100's point
// once twice the live heap is above it: memory stays bounded by the floor,
// or by what GOGC=100 would allow, whichever is larger. The floor is
// memory the process may hold as garbage between cycles, so it is meant to
// be modest (tens of MB). A GOGC set in the environment is the operator's
// choice, and turns the floor off.
package gcfloor

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// DefaultFloor is the floor lb uses: tens of MB are few for a proxy's
// host, and at 30 MB/s of per-connection garbage (39k one-request
// connections a second) it spaced collections 0.8 s apart (gctrace).
const DefaultFloor = 32 << 20

// Floor holds the heap's next collection off until the heap reaches bytes.
type Floor struct {
	bytes   uint64
	stopped atomic.Bool
	sample  []metrics.Sample
}

// Start begins holding collections off until the heap reaches bytes, unless
// GOGC is set in the environment (then it returns nil). Stop ends it.
func Start(bytes uint64) *Floor {
	if _, set := os.LookupEnv("GOGC"); set || bytes == 0 {
		return nil
	}
	return start(bytes)
}

func start(bytes uint64) *Floor {
	f := &Floor{bytes: bytes, sample: []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/scan/globals:bytes"},
		{Name: "/gc/scan/stack:bytes"},
	}}
	f.adjust()
	f.watch()
	return f
}

// Stop ends the floor and gives the collector GOGC=100 back.
func (f *Floor) Stop() {
	if f == nil || f.stopped.Swap(true) {
		return
	}
	debug.SetGCPercent(100)
}

// sentinel is an object whose finalizer runs once per GC cycle: it is
// unreachable as soon as it is made, and each finalizer makes the next one.
// It holds a pointer so that it is not a tiny allocation, which may share
// its block with others and so outlive a cycle.
type sentinel struct{ f *Floor }

// watch arms the sentinel for the next cycle.
func (f *Floor) watch() {
	runtime.SetFinalizer(&sentinel{f: f}, func(s *sentinel) {
		if s.f.stopped.Load() {
			return
		}
		s.f.adjust()
		s.f.watch()
	})
}

// adjust sets the GC percentage from what the last cycle left live.
func (f *Floor) adjust() {
	metrics.Read(f.sample)
	var v [3]uint64
	for i, s := range f.sample {
		if s.Value.Kind() == metrics.KindUint64 {
			v[i] = s.Value.Uint64()
		}
	}
	debug.SetGCPercent(percentFor(f.bytes, v[0], v[1]+v[2]))
}

// heapMinimum is the runtime's smallest heap goal at GOGC=100; it scales
// with the percentage.
const heapMinimum = 4 << 20

// percentFor is the GC percentage that puts the next collection at the
// floor, for a heap with live bytes live and roots bytes of globals and
// stacks to scan, and never below GOGC=100's. The runtime's goal is the
// larger of live + (live + roots) * percent / 100 and heapMinimum *
// percent / 100, so the percentage is the smaller of the two that reach
// the floor.
func percentFor(floor, live, roots uint64) int {
	scan := max(live+roots, 1)
	if live+scan >= floor {
		return 100
	}
	return int(max(min((floor-live)*100/scan, floor*100/heapMinimum), 100))
}
