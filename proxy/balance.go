package proxy

import (
	"net"
	"net/netip"

	"github.com/pacer-lb/pacer/discovery"
)

// pick returns the index in svc.Backends of the first backend to try; on a
// failed dial the caller walks on from there. svc has at least one backend.
//
//   - roundrobin (the default): one atomic add on the port's cursor. The
//     cursor is per port, not per backend list, so a change of backends
//     shifts the rotation but never resets it to the first backend.
//   - source: a hash of the client's IP, so a client keeps its backend while
//     the backend list is unchanged (HAProxy's "balance source").
//   - leastconn: the backend with the fewest tracked connections, read under
//     the port's tracker lock; ties rotate with the round-robin cursor.
//     Connections still dialling are not counted yet, so a burst of new
//     connections can land on one backend.
func (ps *tcpPort) pick(svc *discovery.Service, client net.Conn) int {
	n := uint64(len(svc.Backends))
	switch svc.Balance {
	case discovery.BalanceSource:
		if h, ok := SourceHash(client.RemoteAddr()); ok {
			return int(h % n)
		}
	case discovery.BalanceLeastConn:
		return ps.leastConn(svc.Backends, ps.rr.Add(1)-1)
	}
	return int((ps.rr.Add(1) - 1) % n)
}

// leastConn returns the index of the backend with the fewest open
// connections, looking from off onwards so ties take turns.
func (ps *tcpPort) leastConn(backends []discovery.Backend, off uint64) int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	n := uint64(len(backends))
	best, bestN := int(off%n), int(^uint(0)>>1)
	for i := range n {
		idx := int((off + i) % n)
		cnt := 0
		if bc := ps.backends[backends[idx].Addr]; bc != nil {
			cnt = bc.n
		}
		if cnt < bestN {
			best, bestN = idx, cnt
		}
	}
	return best
}

// SourceHash is the "source" balancing hash of a client: FNV-1a over its
// IP's 16-byte form (an IPv4-mapped address hashes as the IPv4 one), port
// ignored, so both data planes keep a client on the same backend index while
// the backend list is unchanged. ok is false when client is not a TCP
// address. It does not allocate.
func SourceHash(client net.Addr) (h uint64, ok bool) {
	a, ok := client.(*net.TCPAddr)
	if !ok {
		return 0, false
	}
	ip, _ := netip.AddrFromSlice(a.IP)
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h = offset
	for _, b := range ip.Unmap().As16() {
		h ^= uint64(b)
		h *= prime
	}
	return h, true
}

// pickAvoiding is pick for a client rerouted from avoid, a backend that
// broke its connection before a byte moved (see tcpConn.end): when the
// pick lands on avoid it moves on to the next backend. Leastconn would
// otherwise pick a backend that resets every connection again and again
// (it never holds one), and source balancing always picks the same one,
// so the client's reroutes all went to the backend that reset it.
func (ps *tcpPort) pickAvoiding(svc *discovery.Service, client net.Conn, avoid netip.AddrPort) int {
	i := ps.pick(svc, client)
	if n := len(svc.Backends); n > 1 && avoid.IsValid() && svc.Backends[i].Addr == avoid {
		i = (i + 1) % n
	}
	return i
}
