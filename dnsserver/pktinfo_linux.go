package dnsserver

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// Control messages (cmsg(3)) as Linux lays them out: a header of the
// length (a size_t), the level and the type (an int each), then the data,
// each aligned to a size_t.
const (
	cmsgLenSize = unix.SizeofCmsghdr - 8
	cmsgHdrLen  = unix.SizeofCmsghdr
)

func cmsgAlign(n int) int { return (n + unix.SizeofPtr - 1) &^ (unix.SizeofPtr - 1) }

// replyControl reads the control data in received with a query over UDP
// and writes to out the control message that sends the answer from the
// address the query was sent to; it returns that message's length, 0 when
// in holds no IP_PKTINFO or IPV6_PKTINFO (out is then unused).
//
// A socket on a wildcard address (--dns :8053) otherwise answers from the
// address the route back to the client prefers: a query to an agent's
// second address, or from a container on a Docker bridge to the agent's
// address, got its answer from another address, which resolvers drop as
// not from the server they asked. The interface index is cleared, so the
// answer takes the route any packet to the client takes. Out must hold
// udpControlLen bytes. It never allocates.
func replyControl(in, out []byte) int {
	for off := 0; off+cmsgHdrLen <= len(in); {
		h := in[off:]
		n := int(lenOf(h))
		if n < cmsgHdrLen || n > len(h) {
			return 0
		}
		level := int32(binary.NativeEndian.Uint32(h[cmsgLenSize:]))
		typ := int32(binary.NativeEndian.Uint32(h[cmsgLenSize+4:]))
		switch {
		case level == unix.IPPROTO_IP && typ == unix.IP_PKTINFO && n >= cmsgHdrLen+unix.SizeofInet4Pktinfo:
			// struct in_pktinfo: ifindex, the local address (which
			// answers a broadcast query from a unicast one), the
			// header's destination. On sending, the kernel takes the
			// second as the source.
			m := putCmsg(out, h[:n])
			clear(out[cmsgHdrLen : cmsgHdrLen+4])
			return m
		case level == unix.IPPROTO_IPV6 && typ == unix.IPV6_PKTINFO && n >= cmsgHdrLen+unix.SizeofInet6Pktinfo:
			// struct in6_pktinfo: the destination (IPv4-mapped for an
			// IPv4 query on a dual-stack socket), ifindex.
			if h[cmsgHdrLen] == 0xFF {
				return 0 // multicast: no source to answer from
			}
			m := putCmsg(out, h[:n])
			clear(out[cmsgHdrLen+16 : cmsgHdrLen+20])
			return m
		}
		off += cmsgAlign(n)
	}
	return 0
}

// lenOf reads the length field of the control message header at the start of h.
func lenOf(h []byte) uint64 {
	if cmsgLenSize == 8 {
		return binary.NativeEndian.Uint64(h)
	}
	return uint64(binary.NativeEndian.Uint32(h))
}

// putCmsg copies the control message msg to out, padded, and returns the
// length it takes.
func putCmsg(out, msg []byte) int {
	n := copy(out, msg)
	end := cmsgAlign(n)
	clear(out[n:end])
	return end
}
