package httpproxy

import (
	"math/rand/v2"
	"net"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/proxy"
)

// p2cAbove: leastconn scans every backend's outstanding requests up to this
// many backends and samples two at random (power of two choices) above it,
// where a full scan costs more than it gains and where several pacer
// instances scanning the same counters would herd onto one backend.
// (discovery has no "p2c" balance value; leastconn gets it automatically.)
const p2cAbove = 8

// pick returns the index in r.backends of the first backend to try; a retry
// walks on from there. r has at least one backend.
//
//   - roundrobin (default): one atomic add on the service's cursor, which
//     survives snapshots, so a backend change shifts the rotation but does
//     not restart it at the first backend.
//   - source: a hash of the client's IP; a client keeps its backend while
//     the backend list is unchanged.
//   - leastconn: the fewest outstanding requests (sent, response not yet
//     finished), ties rotating; power of two choices above p2cAbove.
func (r *route) pick(client net.Addr) int {
	n := uint64(len(r.backends))
	if n == 1 {
		return 0
	}
	switch r.svc.Balance {
	case discovery.BalanceSource:
		if h, ok := proxy.SourceHash(client); ok {
			return int(h % n)
		}
	case discovery.BalanceLeastConn:
		if n > p2cAbove {
			i := rand.Uint64N(n)
			j := rand.Uint64N(n - 1)
			if j >= i {
				j++
			}
			if r.backends[j].inflight.Load() < r.backends[i].inflight.Load() {
				return int(j)
			}
			return int(i)
		}
		off := r.st.rr.Add(1) - 1
		best, bestN := int(off%n), int64(1<<62)
		for k := range n {
			idx := int((off + k) % n)
			if c := r.backends[idx].inflight.Load(); c < bestN {
				best, bestN = idx, c
			}
		}
		return best
	}
	return int((r.st.rr.Add(1) - 1) % n)
}
