package proxy

import (
	"net"
	"os"
	"syscall"
)

// TuneListener sets two options of a listening socket for HTTP (forHTTP),
// both for what HTTP is: the client speaks first, and the proxy answers at
// once; or puts them back to the kernel's defaults, for a socket the TCP
// plane takes over from the HTTP plane (Handoff). Accepted sockets inherit
// both.
//
//   - TCP_DEFER_ACCEPT (nginx's "deferred", HAProxy's "defer-accept"): the
//     kernel holds each new connection until its first bytes arrive, so the
//     accept and the request's first read become one wakeup instead of two,
//     and the read never has to wait in the poller: one request per
//     connection, 52 -> 42.5 µs of CPU per connection (bench/RESULTS.md).
//     A connection that stays silent holds no descriptor and no slot of
//     the connection cap; after a second the kernel hands it over anyway,
//     and ReadHeaderTimeout deals with it.
//   - TCP_QUICKACK off (HAProxy's tcp-smart-accept, on by default in its
//     HTTP mode): a new connection acknowledges each segment at once for
//     its first few, so the request got an ACK of its own a few
//     microseconds before the answer that acknowledges it anyway. Delayed,
//     the ACK rides on the answer: one segment per connection less
//     (tcpdump: 9.2 -> 8.3 per one-request connection, HAProxy 8.4), which
//     the client no longer has to take in.
//
// Only HTTP listeners do this: in TCP mode the server may be the one to
// speak first, and a client's bytes need not be answered at once.
func TuneListener(ln *net.TCPListener, forHTTP bool) error {
	deferAccept, quickAck := 0, 1
	if forHTTP {
		deferAccept, quickAck = 1, 0
	}
	rc, err := ln.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT, deferAccept)
		if serr == nil {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, quickAck)
		}
	}); err != nil {
		return err
	}
	return os.NewSyscallError("setsockopt", serr)
}
