package dnsserver

import (
	"encoding/binary"
	"hash/maphash"

	"github.com/miekg/dns"
)

// worker serves queries for one UDP socket or one TCP connection. Its
// buffers are reused for every query, so a worker is never shared between
// goroutines.
type worker struct {
	s   *Server
	st  *counters
	out []byte // 2-byte TCP length prefix, then the response
	key []byte
}

func (s *Server) newWorker(st *counters) *worker {
	return &worker{s: s, st: st, out: make([]byte, 2+maxTCPSize), key: make([]byte, 0, 260)}
}

// handle answers one query packet and returns the response (which aliases
// the worker's buffer, after a 2-byte gap for the TCP length prefix), or nil
// when the packet gets no answer. A cached answer allocates nothing.
func (w *worker) handle(pkt []byte, tcp bool) []byte {
	var q query
	res, key := parseQuery(pkt, &q, w.key[:0])
	w.key = key
	switch res {
	case drop:
		w.st.dropped.Add(1)
		return nil
	case slowPath:
		return w.slow(pkt, tcp)
	}
	return w.answer(&q, tcp)
}

// answer serves a parsed query whose cache key is in w.key.
func (w *worker) answer(q *query, tcp bool) []byte {
	s, out := w.s, w.out[2:]
	w.st.query(q.qtype)
	qname := w.key[:len(w.key)-4]
	switch {
	case q.qclass != dns.ClassINET || !s.inZone(qname):
		return out[:bare(out, q, dns.RcodeRefused, w.st)] // never recurse
	case q.qtype == dns.TypeAXFR || q.qtype == dns.TypeIXFR:
		return out[:bare(out, q, dns.RcodeRefused, w.st)] // no zone transfers
	case q.qtype == dns.TypeOPT:
		return out[:bare(out, q, dns.RcodeFormatError, w.st)] // RFC 6891 6.1.1
	}
	snap := s.table.Snapshot()
	h := maphash.Bytes(s.seed, w.key)
	e, ok := s.cache.Get(h)
	if !ok || e.version != snap.Version() || e.key != string(w.key) || e.withdrawn != s.withdrawn.Load() {
		w.st.misses.Add(1)
		e = s.build(snap, w.key)
		s.cache.Add(h, e)
	} else {
		w.st.hits.Add(1)
	}
	return out[:assemble(out, q, e, q.limit(tcp), w.st)]
}

// slow serves what the quick parser declined, through miekg/dns's unpacker.
func (w *worker) slow(pkt []byte, tcp bool) []byte {
	out := w.out[2:]
	m := new(dns.Msg)
	if err := m.Unpack(pkt); err != nil {
		return w.headerOnly(pkt, dns.RcodeFormatError, false)
	}
	opts := 0
	for _, rr := range m.Extra {
		if rr.Header().Rrtype == dns.TypeOPT {
			opts++
		}
	}
	if opts > 1 {
		return w.headerOnly(pkt, dns.RcodeFormatError, false) // RFC 6891 6.1.1
	}
	// An error to an EDNS query carries an OPT too (RFC 6891 6.1.1).
	edns := opts == 1
	if m.Opcode != dns.OpcodeQuery {
		return w.headerOnly(pkt, dns.RcodeNotImplemented, edns)
	}
	if len(m.Question) != 1 {
		return w.headerOnly(pkt, dns.RcodeFormatError, edns)
	}
	qn := m.Question[0]
	q := query{id: m.Id, flags: binary.BigEndian.Uint16(pkt[2:]), qtype: qn.Qtype, qclass: qn.Qclass}
	qbuf := make([]byte, 256+4)
	n, err := dns.PackDomainName(dns.Fqdn(qn.Name), qbuf, 0, nil, false)
	if err != nil {
		return w.headerOnly(pkt, dns.RcodeFormatError, edns)
	}
	qbuf = binary.BigEndian.AppendUint16(qbuf[:n], qn.Qtype)
	q.question = binary.BigEndian.AppendUint16(qbuf, qn.Qclass)
	if opt := m.IsEdns0(); opt != nil {
		q.edns, q.udpSize, q.do = true, opt.UDPSize(), opt.Do()
		if opt.Version() != 0 {
			// RFC 6891 6.1.3: BADVERS is 16, its upper bits ride in the OPT.
			w.st.query(q.qtype)
			p := putOPT(out, headerLen+copy(out[headerLen:], q.question), dns.RcodeBadVers>>4, q.do)
			putHeader(out, q.id, flagQR|q.flags&(flagRD|flagCD), 0, 0, 1)
			w.st.rcode(dns.RcodeBadVers)
			return out[:p]
		}
	}
	w.key = w.key[:0]
	for i, c := range q.question {
		if i < n && c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		w.key = append(w.key, c)
	}
	return w.answer(&q, tcp)
}

// headerOnly answers with the query's header and rcode, and nothing else
// but our OPT record when opt is set (the query carried one).
func (w *worker) headerOnly(pkt []byte, rcode int, opt bool) []byte {
	out := w.out[2:]
	flags := binary.BigEndian.Uint16(pkt[2:])
	binary.BigEndian.PutUint16(out, binary.BigEndian.Uint16(pkt))
	binary.BigEndian.PutUint16(out[2:], flagQR|flags&(0xF<<11|flagRD|flagCD)|uint16(rcode))
	clear(out[4:headerLen])
	w.st.rcode(rcode)
	if !opt {
		return out[:headerLen]
	}
	binary.BigEndian.PutUint16(out[10:], 1) // ARCOUNT
	return out[:putOPT(out, headerLen, 0, false)]
}
