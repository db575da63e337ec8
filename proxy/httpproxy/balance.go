package httpproxy

import (
	"math/rand/v2"
	"net"
	"net/netip"

	"github.com/pacer-lb/pacer/discovery"
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
		if a, ok := client.(*net.TCPAddr); ok {
			ip, _ := netip.AddrFromSlice(a.IP)
			return int(hashAddr(ip.Unmap()) % n)
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

// hashAddr is FNV-1a over the address's 16-byte form; it does not allocate.
func hashAddr(a netip.Addr) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for _, b := range a.As16() {
		h ^= uint64(b)
		h *= prime
	}
	return h
}
