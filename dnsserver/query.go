package dnsserver

import (
	"encoding/binary"

	"github.com/miekg/dns"
)

// Sizes of DNS messages.
const (
	// minUDPSize is the UDP payload every client accepts (RFC 1035 4.2.1).
	minUDPSize = 512
	// advertisedUDPSize is the EDNS0 payload size we offer and the most we
	// send over UDP, whatever the client offers (DNS Flag Day 2020).
	advertisedUDPSize = 1232
	// maxTCPSize is the largest message a TCP length prefix allows.
	maxTCPSize = 65535
	optLen     = 11 // an OPT record without options
)

// Header flag bits (RFC 1035 4.1.1, RFC 4035 3.2.2 for CD).
const (
	flagQR = 1 << 15
	flagAA = 1 << 10
	flagTC = 1 << 9
	flagRD = 1 << 8
	flagCD = 1 << 4
)

// query is what the quick parser takes from a packet.
type query struct {
	id       uint16
	flags    uint16 // the query's header flags
	question []byte // QNAME, QTYPE and QCLASS as received
	qtype    uint16
	qclass   uint16
	edns     bool
	udpSize  uint16
}

type parseResult uint8

const (
	parsed   parseResult = iota
	slowPath             // valid perhaps, but not for the quick parser
	drop                 // no answer at all: too short, or a response
)

// parseQuery reads the header, the question and an optional OPT record of
// pkt into q, and appends the cache key (lower-cased wire name, type, class)
// to key. It never allocates.
func parseQuery(pkt []byte, q *query, key []byte) (parseResult, []byte) {
	if len(pkt) < headerLen {
		return drop, key
	}
	q.id = binary.BigEndian.Uint16(pkt)
	q.flags = binary.BigEndian.Uint16(pkt[2:])
	if q.flags&flagQR != 0 {
		return drop, key // never answer a response: no loops between servers
	}
	if q.flags>>11&0xF != dns.OpcodeQuery {
		return slowPath, key
	}
	qd, an := binary.BigEndian.Uint16(pkt[4:]), binary.BigEndian.Uint16(pkt[6:])
	ns, ar := binary.BigEndian.Uint16(pkt[8:]), binary.BigEndian.Uint16(pkt[10:])
	if qd != 1 || an != 0 || ns != 0 || ar > 1 {
		return slowPath, key
	}
	off := headerLen
	for {
		if off >= len(pkt) {
			return slowPath, key
		}
		l := int(pkt[off])
		if l == 0 {
			key = append(key, 0)
			off++
			break
		}
		if l&0xC0 != 0 || off+1+l > len(pkt) || len(key)+1+l > 254 {
			return slowPath, key // compression, extended labels, too long
		}
		key = append(key, byte(l))
		for _, c := range pkt[off+1 : off+1+l] {
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			key = append(key, c)
		}
		off += 1 + l
	}
	if off+4 > len(pkt) {
		return slowPath, key
	}
	q.qtype = binary.BigEndian.Uint16(pkt[off:])
	q.qclass = binary.BigEndian.Uint16(pkt[off+2:])
	q.question = pkt[headerLen : off+4]
	key = append(key, pkt[off:off+4]...)
	off += 4
	q.edns = false
	if ar == 1 {
		// Only an OPT record (RFC 6891 6.1.2): root owner, type 41, version 0.
		if off+optLen > len(pkt) || pkt[off] != 0 ||
			binary.BigEndian.Uint16(pkt[off+1:]) != dns.TypeOPT || pkt[off+6] != 0 ||
			off+optLen+int(binary.BigEndian.Uint16(pkt[off+9:])) > len(pkt) {
			return slowPath, key
		}
		q.edns = true
		q.udpSize = binary.BigEndian.Uint16(pkt[off+3:])
	}
	return parsed, key
}

// limit is the largest response q may get.
func (q *query) limit(tcp bool) int {
	switch {
	case tcp:
		return maxTCPSize
	case !q.edns:
		return minUDPSize
	}
	return min(max(int(q.udpSize), minUDPSize), advertisedUDPSize)
}

// assemble writes the response to q from e into out, which must hold
// maxTCPSize bytes, and returns its length. It never allocates.
func assemble(out []byte, q *query, e *entry, limit int, st *counters) int {
	base := headerLen + copy(out[headerLen:], q.question)
	opt := 0
	if q.edns {
		opt = optLen
	}
	flags := uint16(flagQR) | q.flags&(flagRD|flagCD) | uint16(e.rcode&0xF)
	if e.aa {
		flags |= flagAA
	}
	n := len(e.ansOff) - 1
	k, start := 0, int32(0)
	if e.rotate && n > 1 {
		k = int(e.rot.Add(1) % uint32(n))
		start = e.ansOff[k]
	}
	p, an, ns, ar := base, n, 0, 0
	fits := base + len(e.ans) + len(e.auth) + opt
	switch {
	case fits <= limit:
		p += copy(out[p:], e.ans[start:])
		p += copy(out[p:], e.ans[:start])
		p += copy(out[p:], e.auth)
		ns = e.nAuth
		// Pointers reach 14 bits only (RFC 1035 4.1.4).
		if p+len(e.add)+opt <= limit && base+len(e.ans) < 0x3FFF {
			addAt := p
			p += copy(out[p:], e.add)
			ar = e.nAdd
			for _, pt := range e.patches {
				rel := pt.ref - start
				if pt.ref < start {
					rel = pt.ref + int32(len(e.ans)) - start
				}
				binary.BigEndian.PutUint16(out[addAt+int(pt.at):], 0xC000|uint16(base+int(rel)))
			}
		}
	default:
		// Whole records of the rotated answer while they fit; TC tells the
		// client to ask again over TCP (RFC 2181 9).
		flags |= flagTC
		st.truncated.Add(1)
		an = 0
		for j := range n {
			i := (k + j) % n
			rec := e.ans[e.ansOff[i]:e.ansOff[i+1]]
			if p+len(rec)+opt > limit {
				break
			}
			p += copy(out[p:], rec)
			an++
		}
	}
	if q.edns {
		p = putOPT(out, p, 0)
		ar++
	}
	putHeader(out, q.id, flags, an, ns, ar)
	st.rcode(e.rcode)
	return p
}

// putHeader writes a header with one question.
func putHeader(out []byte, id, flags uint16, an, ns, ar int) {
	binary.BigEndian.PutUint16(out, id)
	binary.BigEndian.PutUint16(out[2:], flags)
	binary.BigEndian.PutUint16(out[4:], 1)
	binary.BigEndian.PutUint16(out[6:], uint16(an))
	binary.BigEndian.PutUint16(out[8:], uint16(ns))
	binary.BigEndian.PutUint16(out[10:], uint16(ar))
}

// putOPT writes our OPT record at p: payload size 1232, the extended rcode
// bits given, version 0, no flags, no options.
func putOPT(out []byte, p int, extRcode uint8) int {
	out[p] = 0
	binary.BigEndian.PutUint16(out[p+1:], dns.TypeOPT)
	binary.BigEndian.PutUint16(out[p+3:], advertisedUDPSize)
	out[p+5], out[p+6], out[p+7], out[p+8] = extRcode, 0, 0, 0
	binary.BigEndian.PutUint16(out[p+9:], 0)
	return p + optLen
}

// bare writes a response with the question echoed and no records, for
// REFUSED and the like. It never allocates.
func bare(out []byte, q *query, rcode int, st *counters) int {
	p := headerLen + copy(out[headerLen:], q.question)
	ar := 0
	if q.edns {
		p = putOPT(out, p, 0)
		ar = 1
	}
	putHeader(out, q.id, flagQR|q.flags&(flagRD|flagCD)|uint16(rcode), 0, 0, ar)
	st.rcode(rcode)
	return p
}
