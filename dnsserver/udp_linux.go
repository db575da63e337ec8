package dnsserver

import (
	"errors"
	"net"
	"syscall"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Batched UDP I/O with recvmmsg(2) and sendmmsg(2): under load one system
// call reads every queued query (up to udpBatch) and one sends every answer,
// as NSD does, instead of two calls per query.
const (
	batchSupported = true
	udpBatch       = 32
	// udpSlot is the buffer for one query and one answer: queries larger
	// than that are cut (MSG_TRUNC) and dropped, answers over UDP are at most
	// advertisedUDPSize.
	udpSlot = 4096
)

// mmsghdr is struct mmsghdr from <sys/socket.h>; Go pads it as C does.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// udpBatchIO holds the buffers of one socket's batches; it is used by one
// goroutine only.
type udpBatchIO struct {
	in, out       [udpBatch]mmsghdr
	inIov, outIov [udpBatch]unix.Iovec
	names         [udpBatch]unix.RawSockaddrInet6 // large enough for IPv4 too
	inCtl, outCtl [udpBatch][udpControlLen]byte   // the address asked (replyControl)
	inBuf         [udpBatch][udpSlot]byte
	outBuf        [udpBatch][2 + udpSlot]byte // 2 bytes the worker keeps for TCP

	// State of the current system call, and the calls themselves, made once
	// so that a batch allocates nothing.
	n, sent, m      int
	err             error
	readFn, writeFn func(fd uintptr) bool
}

// serveUDPBatch reads and answers datagrams on one socket until it is
// closed. It is the only goroutine using w and c's read side.
func (w *worker) serveUDPBatch(c *net.UDPConn) {
	defer w.s.wg.Done()
	rc, err := c.SyscallConn()
	if err != nil {
		w.s.log.Error("udp socket", zap.Error(err))
		return
	}
	b := &udpBatchIO{}
	b.readFn, b.writeFn = b.doRecv, b.doSend
	for i := range udpBatch {
		b.inIov[i].Base = &b.inBuf[i][0]
		b.inIov[i].SetLen(udpSlot)
		b.in[i].hdr.Iov = &b.inIov[i]
		b.in[i].hdr.SetIovlen(1)
		b.in[i].hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		b.in[i].hdr.Control = &b.inCtl[i][0]
		b.out[i].hdr.Iov = &b.outIov[i]
		b.out[i].hdr.SetIovlen(1)
	}
	keep := w.out
	defer func() { w.out = keep }()
	for {
		n, err := b.recv(rc)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				w.s.log.Error("udp read", zap.Error(err))
			}
			return
		}
		m := 0
		for i := range n {
			msg := &b.in[i]
			if msg.hdr.Flags&unix.MSG_TRUNC != 0 {
				w.st.dropped.Add(1)
				continue
			}
			w.out = b.outBuf[m][:]
			resp := w.handle(b.inBuf[i][:msg.n], false)
			if resp == nil {
				continue
			}
			b.outIov[m].Base = &resp[0]
			b.outIov[m].SetLen(len(resp))
			b.out[m].hdr.Name = msg.hdr.Name
			b.out[m].hdr.Namelen = msg.hdr.Namelen
			b.setReplyControl(m, i)
			m++
		}
		if err := b.send(rc, m); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			w.s.log.Debug("udp write", zap.Error(err))
		}
	}
}

// recv waits for at least one datagram and reads as many as are queued.
func (b *udpBatchIO) recv(rc syscall.RawConn) (int, error) {
	for i := range udpBatch {
		b.in[i].hdr.Namelen = uint32(unsafe.Sizeof(b.names[i]))
		b.in[i].hdr.SetControllen(udpControlLen)
		b.in[i].hdr.Flags = 0
		b.in[i].n = 0
	}
	b.n, b.err = 0, nil
	if err := rc.Read(b.readFn); err != nil {
		return 0, err
	}
	// An error such as ECONNREFUSED (left by an earlier ICMP message) means
	// nothing was read; the next call reads on.
	return b.n, nil
}

// setReplyControl makes answer m leave from the address query i was sent
// to, when the kernel said which it was.
func (b *udpBatchIO) setReplyControl(m, i int) {
	in := b.inCtl[i][:min(int(b.in[i].hdr.Controllen), udpControlLen)]
	if n := replyControl(in, b.outCtl[m][:]); n > 0 {
		b.out[m].hdr.Control = &b.outCtl[m][0]
		b.out[m].hdr.SetControllen(n)
		return
	}
	b.out[m].hdr.Control = nil
	b.out[m].hdr.SetControllen(0)
}

// doRecv is the recvmmsg call for rc.Read; it returns false to wait until
// the socket is readable.
func (b *udpBatchIO) doRecv(fd uintptr) bool {
	for {
		r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.in[0])), udpBatch, 0, 0, 0)
		switch e {
		case 0:
			b.n = int(r)
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			b.err = e
		}
		return true
	}
}

// send writes the first m answers, skipping any that the kernel refuses.
func (b *udpBatchIO) send(rc syscall.RawConn, m int) error {
	b.sent, b.m, b.err = 0, m, nil
	for b.sent < b.m {
		if err := rc.Write(b.writeFn); err != nil {
			return err
		}
	}
	return b.err
}

// doSend is the sendmmsg call for rc.Write; it returns false to wait for
// room in the send buffer.
func (b *udpBatchIO) doSend(fd uintptr) bool {
	for {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.out[b.sent])), uintptr(b.m-b.sent), 0, 0, 0)
		switch e {
		case 0:
			b.sent += int(r)
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			b.err = e
			b.sent++ // the first message failed: drop it, go on with the rest
		}
		return true
	}
}
