package gcfloor

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestPercentFor(t *testing.T) {
	for _, c := range []struct {
		floor, live, roots uint64
		want               int
	}{
		{32 << 20, 2 << 20, 0, 800},        // the heap minimum, 4 MB * 8, reaches 32 MB first
		{32 << 20, 2 << 20, 2 << 20, 750},  // 2 + 4 * 7.5 = 32 MB
		{32 << 20, 8 << 20, 8 << 20, 150},  // 8 + 16 * 1.5 = 32 MB
		{32 << 20, 16 << 20, 0, 100},       // twice the live heap reaches the floor
		{32 << 20, 12 << 20, 8 << 20, 100}, // and so does GOGC=100's goal with the roots
		{32 << 20, 64 << 20, 0, 100},       // a big heap is GOGC=100's
		{32 << 20, 0, 0, 800},              // an empty heap
		{8 << 20, 0, 0, 200},
		{1 << 20, 0, 0, 100}, // a floor under the runtime's own minimum changes nothing
	} {
		if got := percentFor(c.floor, c.live, c.roots); got != c.want {
			t.Errorf("percentFor(%d MB, %d MB, %d MB) = %d, want %d", c.floor>>20, c.live>>20, c.roots>>20, got, c.want)
		}
	}
}

var sink []byte

// cyclesWhileAllocating counts the GC cycles while the test makes total
// bytes of garbage with almost nothing live.
func cyclesWhileAllocating(total int) uint32 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.NumGC
	for n := 0; n < total; n += 64 << 10 {
		sink = make([]byte, 64<<10)
	}
	runtime.ReadMemStats(&ms)
	return ms.NumGC - before
}

// With a 64 MB floor, 512 MB of garbage on a small heap takes a handful
// of cycles where GOGC=100 takes one every 4 MB or so.
func TestFloorHoldsCollectionsOff(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	const total = 512 << 20
	plain := cyclesWhileAllocating(total)

	f := start(64 << 20)
	runtime.GC() // the floor takes effect from the first cycle it sees
	floored := cyclesWhileAllocating(total)
	f.Stop()
	after := cyclesWhileAllocating(total)

	t.Logf("GC cycles for %d MB of garbage: %d with GOGC=100, %d with the floor, %d after Stop", total>>20, plain, floored, after)
	if floored > 16 {
		t.Errorf("%d cycles with a 64 MB floor; want at most 16 (about one per 64 MB)", floored)
	}
	if plain < 4*floored || after < 4*floored {
		t.Errorf("the floor did not hold cycles off: %d with it, %d before and %d after", floored, plain, after)
	}
}
