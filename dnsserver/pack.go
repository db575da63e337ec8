package dnsserver

import (
	"encoding/binary"
	"strings"
	"sync/atomic"

	"github.com/miekg/dns"
)

// SOA timers, as mesos-dns's defaults (SOARefresh, SOARetry, SOAExpire).
const (
	soaRefresh = 60
	soaRetry   = 600
	soaExpire  = 86400
	// soaRName is the SOA's mailbox, under the zone (mesos-dns: root.ns1.mesos).
	soaRName = "root." + labelNS
	// srvWeight is every SRV record's weight, as mesos-dns's srvRecordDefaultWeight.
	srvWeight = 1
	// maxPackedAnswer bounds the answer records an entry keeps (about
	// 23,000 SRV records). An entry keeps more than one message holds, so
	// that the rotation spreads the answers cut with TC over every task.
	maxPackedAnswer = 1 << 20
	// headerLen is the DNS header's length.
	headerLen = 12
)

// entry is one packed answer for one (name, type, class) at one table version.
// The question is not part of it: serving copies the query's own question in
// front, so the answer echoes the name as asked. Names in the answer and
// authority sections compress only against the question, so the answer
// records can be rotated by moving bytes and are valid at any offset; names
// in the Additional section may point into the answer section, at offsets
// listed in patches (farAdditional writes those that a pointer cannot
// reach). ans may hold more than one message can: assemble then sends
// whole records of it, with TC.
type entry struct {
	key     string // lower-case wire name, type and class, as cacheKey builds it
	version uint64 // the table version the answer was built from
	// withdrawn is whether it was built after Withdraw.
	withdrawn bool
	rcode     int
	aa        bool

	ans     []byte
	ansOff  []int32 // start of each answer record in ans, then len(ans)
	rotate  bool
	auth    []byte
	nAuth   int
	add     []byte
	nAdd    int
	patches []patch

	rot atomic.Uint32 // rotation counter: the next query starts one record later
}

// patch is a compression pointer in add that refers to offset ref of ans; it
// moves when the answer records rotate.
type patch struct{ at, ref int32 }

// packer builds an entry. Offsets in dict are absolute (the question starts
// at offset 12), names are lower case without the trailing dot.
type packer struct {
	dict map[string]int // suffixes of the question name -> offset
	ttl  uint32
	// targets maps a name written in an answer record to its offset in ans.
	targets map[string]int32
}

func newPacker(qname []byte, ttl uint32) *packer {
	p := &packer{dict: map[string]int{}, ttl: ttl, targets: map[string]int32{}}
	var offs []int
	for off := 0; off < len(qname) && qname[off] != 0; off += int(qname[off]) + 1 {
		offs = append(offs, off)
	}
	// Suffixes from the right; a label holding a dot ends the list, since its
	// dotted form would stand for a different wire name.
	for i := len(offs) - 1; i >= 0; i-- {
		off := offs[i]
		if strings.IndexByte(string(qname[off+1:min(off+1+int(qname[off]), len(qname))]), '.') >= 0 {
			break
		}
		p.dict[wireToDotted(qname[off:])] = headerLen + off
	}
	return p
}

// wireToDotted turns an uncompressed wire name into dotted form, without
// escaping (the result is only compared with names we generate).
func wireToDotted(w []byte) string {
	var b strings.Builder
	for off := 0; off < len(w) && w[off] != 0; off += int(w[off]) + 1 {
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		end := min(off+1+int(w[off]), len(w))
		b.Write(w[off+1 : end])
	}
	return b.String()
}

// name appends name, compressed against the question only.
func (p *packer) name(dst []byte, name string) []byte {
	rest := name
	for rest != "" {
		if off, ok := p.dict[rest]; ok {
			return binary.BigEndian.AppendUint16(dst, 0xC000|uint16(off))
		}
		label, tail, _ := strings.Cut(rest, ".")
		dst = append(dst, byte(len(label)))
		dst = append(dst, label...)
		rest = tail
	}
	return append(dst, 0)
}

// rrHeader appends an owner (a compression pointer), type, class IN and TTL;
// the caller appends RDLENGTH and RDATA.
func (p *packer) rrHeader(dst []byte, owner uint16, typ uint16) []byte {
	dst = binary.BigEndian.AppendUint16(dst, owner)
	dst = binary.BigEndian.AppendUint16(dst, typ)
	dst = binary.BigEndian.AppendUint16(dst, dns.ClassINET)
	return binary.BigEndian.AppendUint32(dst, p.ttl)
}

// rdata appends the RDATA written by fill, preceded by its length.
func rdata(dst []byte, fill func([]byte) []byte) []byte {
	at := len(dst)
	dst = append(dst, 0, 0)
	dst = fill(dst)
	binary.BigEndian.PutUint16(dst[at:], uint16(len(dst)-at-2))
	return dst
}

// record appends r with the question name as owner. Target names are
// remembered for the Additional section.
func (p *packer) record(dst []byte, r record, z *zone, serial uint32, owner uint16) []byte {
	dst = p.rrHeader(dst, owner, r.typ)
	return rdata(dst, func(b []byte) []byte {
		switch r.typ {
		case dns.TypeA, dns.TypeAAAA:
			return append(b, r.addr.AsSlice()...)
		case dns.TypeSRV:
			b = binary.BigEndian.AppendUint16(b, 0) // priority
			b = binary.BigEndian.AppendUint16(b, srvWeight)
			b = binary.BigEndian.AppendUint16(b, r.port)
			fallthrough
		case dns.TypeNS:
			if _, ok := p.targets[r.target]; !ok {
				p.targets[r.target] = int32(len(b))
			}
			return p.name(b, r.target)
		case dns.TypeSOA:
			b = p.name(b, labelNS+"."+z.domain)
			b = p.name(b, soaRName+"."+z.domain)
			b = binary.BigEndian.AppendUint32(b, serial)
			b = binary.BigEndian.AppendUint32(b, soaRefresh)
			b = binary.BigEndian.AppendUint32(b, soaRetry)
			b = binary.BigEndian.AppendUint32(b, soaExpire)
			return binary.BigEndian.AppendUint32(b, p.ttl) // negative-caching TTL (RFC 2308)
		}
		return b
	})
}

// pack turns a result into an entry for the question name qname (lower-case
// wire form). serial is the SOA serial of the table version.
func (p *packer) pack(res result, z *zone, serial uint32) *entry {
	e := &entry{rcode: res.rcode, aa: true, rotate: res.rotate}
	for _, r := range res.answer {
		before := len(e.ans)
		// Targets are recorded relative to ans, as rdata offsets are.
		next := p.record(e.ans, r, z, serial, 0xC000|headerLen)
		if len(next) > maxPackedAnswer {
			e.ans = next[:before]
			break
		}
		e.ansOff = append(e.ansOff, int32(before))
		e.ans = next
	}
	e.ansOff = append(e.ansOff, int32(len(e.ans)))
	if res.soa {
		owner := uint16(0xC000 | p.dict[z.domain])
		e.auth = p.record(nil, record{typ: dns.TypeSOA}, z, serial, owner)
		e.nAuth = 1
	}
	for _, x := range res.extra {
		typ := uint16(dns.TypeA)
		if x.addr.Is6() {
			typ = dns.TypeAAAA
		}
		var owner uint16
		if off, ok := p.dict[x.name]; ok {
			owner = 0xC000 | uint16(off)
		} else if ref, ok := p.targets[x.name]; ok && ref < int32(len(e.ans)) {
			e.patches = append(e.patches, patch{at: int32(len(e.add)), ref: ref})
		} else {
			continue // the answer record naming it did not fit
		}
		e.add = p.record(e.add, record{typ: typ, addr: x.addr}, z, serial, owner)
		e.nAdd++
	}
	// Additional records that fit in no message beside the answer (a
	// question takes 5 bytes at least) are not kept; assemble sends, of the
	// others, those that fit each message.
	e.keepAdditional(maxTCPSize - (headerLen + 5 + len(e.ans) + len(e.auth)))
	return e
}

// additionalFitting returns the end in e.add and the number of the leading
// Additional records that take at most room bytes as e.add holds them
// (every owner in 2 bytes). It never allocates.
func (e *entry) additionalFitting(room int) (end, n int) {
	if len(e.add) <= room {
		return len(e.add), e.nAdd
	}
	for end < len(e.add) {
		// Owner, type, class and TTL take 10 bytes, RDLENGTH 2, then RDATA.
		next := end + 12 + int(binary.BigEndian.Uint16(e.add[end+10:]))
		if next > room {
			break
		}
		end, n = next, n+1
	}
	return end, n
}

// keepAdditional drops the Additional records past the first room bytes.
func (e *entry) keepAdditional(room int) {
	end, n := e.additionalFitting(room)
	e.add, e.nAdd = e.add[:end], n
	for i, pt := range e.patches {
		if int(pt.at) >= end {
			e.patches = e.patches[:i]
			break
		}
	}
}
