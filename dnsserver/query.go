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
	do       bool // the OPT's DNSSEC OK bit, which the answer's OPT echoes
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
		q.do = pkt[off+7]&0x80 != 0
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
		// Additional records that do not fit are left out, without TC
		// (RFC 2181 9); those that fit save the client a query each.
		switch {
		case base+len(e.ans) <= maxPointer+1:
			// Every pointer into the answer section reaches.
			end, nAdd := e.additionalFitting(limit - opt - p)
			addAt := p
			p += copy(out[p:], e.add[:end])
			ar = nAdd
			for _, pt := range e.patches {
				if int(pt.at) >= end {
					break
				}
				binary.BigEndian.PutUint16(out[addAt+int(pt.at):], 0xC000|uint16(base+int(e.rotated(pt.ref, start))))
			}
		default:
			p, ar = farAdditional(out, p, limit-opt, base, e, k, start)
		}
	default:
		// Whole records of the rotated answer while they fit, and TC. Over
		// UDP, TC tells the client to ask again over TCP (RFC 2181 9). Over
		// TCP, where the answer section alone passes 64 KB, there is nowhere
		// else to ask: TC tells the client the answer is partial. glibc's and
		// Go's resolvers use the records they got (Go before go.dev/issue/64896
		// failed the lookup instead); the rotation gives every query another
		// part.
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
		p = putOPT(out, p, 0, q.do)
		ar++
	}
	putHeader(out, q.id, flags, an, ns, ar)
	st.rcode(e.rcode)
	return p
}

// maxPointer is the largest offset a compression pointer holds (14 bits,
// RFC 1035 4.1.4).
const maxPointer = 0x3FFF

// rotated returns where offset off of e.ans lands once the answer section is
// rotated to begin at offset start, relative to the section's beginning.
func (e *entry) rotated(off, start int32) int32 {
	if off < start {
		return off + int32(len(e.ans)) - start
	}
	return off - start
}

// farAdditional writes e's Additional section at p when the answer section
// (at base, rotated to begin with record k, at offset start of e.ans) ends
// beyond what compression pointers reach. An owner whose name in the answer
// section lies within reach is a pointer to it, as assemble writes; any
// other is written as that name is in e.ans (labels, then a pointer into the
// question, so it is valid anywhere), its longest suffix that the first
// answer record's target shares, which lies within reach, replaced by a
// pointer to it: "big-k3x7q" and a pointer to "marathon.slave.mesos". It
// writes the records that fit before end and returns the end of the section
// and its record count. It never allocates.
func farAdditional(out []byte, p, end, base int, e *entry, k int, start int32) (int, int) {
	// ref is the first record's target name, at offset refAt of the message.
	var ref []byte
	refAt := 0
	if t := targetOf(e.ans, int(e.ansOff[k])); t >= 0 {
		ref = e.ans[t : t+nameLen(e.ans[t:])]
		refAt = base + t - int(start)
	}
	patches := e.patches
	count := 0
	for off := 0; off < len(e.add); {
		// Every owner in e.add takes 2 bytes: a pointer into the question,
		// or a placeholder for a patch. Type, class, TTL, RDLENGTH and
		// RDATA follow.
		rest := off + 2
		next := rest + 10 + int(binary.BigEndian.Uint16(e.add[rest+8:]))
		owner := e.add[off:rest]
		ptr := -1
		if len(patches) > 0 && int(patches[0].at) == off {
			at := base + int(e.rotated(patches[0].ref, start))
			if at <= maxPointer {
				owner, ptr = nil, at
			} else {
				name := e.ans[patches[0].ref:]
				name = name[:nameLen(name)]
				owner, ptr = shareSuffix(name, ref, refAt)
			}
			patches = patches[1:]
		}
		n := len(owner) + next - rest
		if ptr >= 0 {
			n += 2
		}
		if p+n > end {
			return p, count
		}
		p += copy(out[p:], owner)
		if ptr >= 0 {
			binary.BigEndian.PutUint16(out[p:], 0xC000|uint16(ptr))
			p += 2
		}
		p += copy(out[p:], e.add[rest:next])
		off = next
		count++
	}
	return p, count
}

// shareSuffix returns how to write the wire name name at an offset that
// pointers cannot reach: the labels to write, then, unless ptr is -1, a
// pointer to ptr, the longest suffix of name that ref, at offset refAt of
// the message, also ends with. Both names are as packed in e.ans.
func shareSuffix(name, ref []byte, refAt int) (labels []byte, ptr int) {
	for i := 0; name[i] != 0 && name[i]&0xC0 == 0; i += 1 + int(name[i]) {
		j := len(ref) - (len(name) - i)
		if j < 0 || refAt+j > maxPointer {
			continue
		}
		if string(ref[j:]) == string(name[i:]) && labelAt(ref, j) {
			return name[:i], refAt + j
		}
	}
	return name, -1
}

// labelAt reports whether a label of the wire name name begins at offset i.
func labelAt(name []byte, i int) bool {
	at := 0
	for at < i && name[at] != 0 && name[at]&0xC0 == 0 {
		at += 1 + int(name[at])
	}
	return at == i
}

// nameLen returns the length of the wire name at the start of b: labels
// ended by the root label or by a pointer.
func nameLen(b []byte) int {
	i := 0
	for b[i] != 0 && b[i]&0xC0 == 0 {
		i += 1 + int(b[i])
	}
	if b[i] == 0 {
		return i + 1
	}
	return i + 2
}

// targetOf returns the offset in ans of the target name of the SRV or NS
// record at offset off, or -1 for other records and at the end of ans.
func targetOf(ans []byte, off int) int {
	if off >= len(ans) {
		return -1
	}
	off += nameLen(ans[off:])
	switch binary.BigEndian.Uint16(ans[off:]) {
	case dns.TypeSRV:
		return off + 10 + 6 // type, class, TTL, RDLENGTH; priority, weight, port
	case dns.TypeNS:
		return off + 10
	}
	return -1
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
// bits given, version 0, no options, and no flags but the DO bit when do is
// set: a server copies the query's DO bit into its answer (RFC 3225 3),
// though it signs nothing.
func putOPT(out []byte, p int, extRcode uint8, do bool) int {
	out[p] = 0
	binary.BigEndian.PutUint16(out[p+1:], dns.TypeOPT)
	binary.BigEndian.PutUint16(out[p+3:], advertisedUDPSize)
	var flags byte
	if do {
		flags = 0x80
	}
	out[p+5], out[p+6], out[p+7], out[p+8] = extRcode, 0, flags, 0
	binary.BigEndian.PutUint16(out[p+9:], 0)
	return p + optLen
}

// bare writes a response with the question echoed and no records, for
// REFUSED and the like. It never allocates.
func bare(out []byte, q *query, rcode int, st *counters) int {
	p := headerLen + copy(out[headerLen:], q.question)
	ar := 0
	if q.edns {
		p = putOPT(out, p, 0, q.do)
		ar = 1
	}
	putHeader(out, q.id, flagQR|q.flags&(flagRD|flagCD)|uint16(rcode), 0, 0, ar)
	st.rcode(rcode)
	return p
}
