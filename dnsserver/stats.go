package dnsserver

import (
	"sync/atomic"

	"github.com/miekg/dns"
)

// Stats are the server's counters since New, for metrics.
type Stats struct {
	// Queries counts queries by type: "A", "AAAA", "SRV", "SOA", "NS", "ANY"
	// and "other".
	Queries map[string]uint64
	// Responses counts responses by rcode name ("NOERROR", "NXDOMAIN",
	// "REFUSED", "FORMERR", "NOTIMP", "SERVFAIL", "BADVERS", ...).
	Responses map[string]uint64
	// Truncated counts responses cut short with TC set: over UDP, or over
	// TCP past 64 KB.
	Truncated uint64
	// Dropped counts packets that got no answer (too short, responses, or
	// queries longer than 4 KB).
	// Packets the kernel dropped for a full socket buffer are not seen.
	Dropped uint64
	// TCPRejected counts TCP connections closed unanswered because
	// maxTCPConns were open.
	TCPRejected uint64
	// CacheHits and CacheMisses count answers served from the packed-answer
	// cache and answers built for it.
	CacheHits, CacheMisses uint64
}

// qtypeSlots is how many query types are counted on their own, plus "other".
const qtypeSlots = 7

// qtypeSlot is where a query type is counted; qtypeName names the slot.
func qtypeSlot(t uint16) int {
	switch t {
	case dns.TypeA:
		return 0
	case dns.TypeAAAA:
		return 1
	case dns.TypeSRV:
		return 2
	case dns.TypeSOA:
		return 3
	case dns.TypeNS:
		return 4
	case dns.TypeANY:
		return 5
	}
	return qtypeSlots - 1
}

func qtypeName(slot int) string {
	return [qtypeSlots]string{"A", "AAAA", "SRV", "SOA", "NS", "ANY", "other"}[slot]
}

// counters are one worker's counters (one per UDP socket, one for TCP), so
// sockets never share a cache line on the hot path.
type counters struct {
	qtypes      [qtypeSlots]atomic.Uint64
	rcodes      [17]atomic.Uint64 // 0-15, then 16 (BADVERS)
	truncated   atomic.Uint64
	dropped     atomic.Uint64
	tcpRejected atomic.Uint64
	hits        atomic.Uint64
	misses      atomic.Uint64
	_           [64]byte // keep the next worker's counters off this cache line
}

func (c *counters) query(qtype uint16) { c.qtypes[qtypeSlot(qtype)].Add(1) }

func (c *counters) rcode(rcode int) {
	if rcode >= 0 && rcode < len(c.rcodes) {
		c.rcodes[rcode].Add(1)
	}
}

// rcodeName names an rcode for Stats. 16 is BADVERS here, the only rcode
// 16 pacer answers; miekg/dns names it BADSIG (TSIG's, pacer never signs).
func rcodeName(rcode int) string {
	if rcode == dns.RcodeBadVers {
		return "BADVERS"
	}
	return dns.RcodeToString[rcode]
}

// add sums c into st.
func (c *counters) add(st *Stats) {
	for i := range c.qtypes {
		if v := c.qtypes[i].Load(); v > 0 {
			st.Queries[qtypeName(i)] += v
		}
	}
	for i := range c.rcodes {
		if v := c.rcodes[i].Load(); v > 0 {
			st.Responses[rcodeName(i)] += v
		}
	}
	st.Truncated += c.truncated.Load()
	st.Dropped += c.dropped.Load()
	st.TCPRejected += c.tcpRejected.Load()
	st.CacheHits += c.hits.Load()
	st.CacheMisses += c.misses.Load()
}

// Stats returns the counters summed over every socket.
func (s *Server) Stats() Stats {
	st := Stats{Queries: map[string]uint64{}, Responses: map[string]uint64{}}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.counters {
		c.add(&st)
	}
	return st
}
