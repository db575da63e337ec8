package fastconn

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// Batching the poller's system calls through io_uring.
//
// On the kernel the benchmarks run on, a system call's entry and exit cost
// more than most of what the call does: the CPU has no PCID, so with
// page-table isolation each entry and each exit switches page tables and
// flushes the TLB. A raw getpid takes 1.1 µs there, and 8 sends and 8
// receives of 100 bytes over loopback sockets took 50-53 µs as 16 system
// calls and 24-25 µs as two io_uring_enter calls (go test -run XXX -bench
// 'Getpid|Batch' ./internal/fastconn/). A proxy's event loop makes four
// such calls per keep-alive request, as HAProxy's does.
//
// So each poller keeps a ring and, for the sockets one epoll_pwait reported
// ready, makes its reads as one io_uring_enter and then the writes that
// forward what they read as another (dispatch, batch.go). The ring is
// used synchronously, as a way to make many system calls at once, never as
// a queue: every operation carries MSG_DONTWAIT, which makes io_uring fail
// it with EAGAIN as the plain call would, where it would otherwise wait
// for readiness in the kernel, so each one completes inside the
// io_uring_enter that submits it, with the buffer it names back in the
// caller's hands. A probe at start checks just that (ring.probe); a kernel
// where it fails, or where io_uring is unavailable (kernel.io_uring_disabled,
// a seccomp filter such as Docker's default), or UseRing(false) (lb
// --io-uring=false), leaves the poller with plain system calls.

// Opcodes and flags of the io_uring ABI (include/uapi/linux/io_uring.h).
const (
	sysIoUringSetup = 425
	sysIoUringEnter = 426

	opSend = 26 // IORING_OP_SEND
	opRecv = 27 // IORING_OP_RECV

	setupSubmitAll   = 1 << 7 // IORING_SETUP_SUBMIT_ALL: a failing entry does not stop the rest
	setupCoopTaskrun = 1 << 8 // IORING_SETUP_COOP_TASKRUN: no interrupt for completions

	enterGetEvents = 1 // IORING_ENTER_GETEVENTS

	offSQRing = 0
	offSQEs   = 0x10000000

	featSingleMmap = 1 << 0 // IORING_FEAT_SINGLE_MMAP

	// ringEntries is a ring's submission queue: an epoll_pwait's events
	// (poller.events) fit in one batch.
	ringEntries = 128
)

type sqRingOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqRingOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type ringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqRingOffsets
	cqOff                                                                  cqRingOffsets
}

// sqe is a submission queue entry, struct io_uring_sqe (64 bytes), with
// the fields a send or a receive leaves zero blank.
type sqe struct {
	opcode   uint8
	_        uint8  // flags
	_        uint16 // ioprio
	fd       int32
	_        uint64 // off
	addr     uint64
	len      uint32
	msgFlags uint32
	userData uint64
	_        [3]uint64 // buf_index, personality, splice_fd_in; addr3; pad
}

// cqe is a completion queue entry, struct io_uring_cqe.
type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}

// ring is one io_uring instance, used by one goroutine at a time (its
// poller's).
type ring struct {
	fd     int
	sqTail *uint32 // the kernel reads it; only we write it
	cqHead *uint32 // only we write it
	cqTail *uint32 // the kernel writes it
	sqMask uint32
	cqMask uint32
	sqes   *[ringEntries]sqe
	cqes   unsafe.Pointer
	queued uint32 // entries filled since the last enter
	// res holds each operation's result by its user value: a count, or a
	// negated errno.
	res [ringEntries]int32
	mem [][]byte
	// probeBuf is probe's receive buffer, on the heap, where a receive
	// that did not complete at once could still write.
	probeBuf [8]byte
}

// ringEnv turns the ring off when set to off, 0 or false, as UseRing(false)
// does: lb's --io-uring flag reads the same variable; tests of the plain
// path set it.
const ringEnv = "PACER_IO_URING"

var ringOff atomic.Bool

// UseRing says whether the pollers batch through io_uring where the kernel
// allows it (the default): read when they start, with the first socket
// that needs one, for the life of the process.
func UseRing(on bool) { ringOff.Store(!on) }

// RingStatus reports whether the pollers batch through io_uring: nil if
// they do, or why not. It starts the pollers if none runs yet.
func RingStatus() error {
	p, err := getPoller(0)
	if err != nil {
		return err
	}
	return p.ringErr
}

// newRing sets up a ring and probes it, unless PACER_IO_URING is off.
func newRing() (*ring, error) {
	switch os.Getenv(ringEnv) {
	case "off", "0", "false":
		return nil, errors.New(ringEnv + " is off")
	}
	if ringOff.Load() {
		return nil, errors.New("turned off")
	}
	return setupRing()
}

// setupRing sets up a ring and probes it.
func setupRing() (*ring, error) {
	p := ringParams{flags: setupSubmitAll | setupCoopTaskrun}
	fd, _, errno := syscall.RawSyscall(sysIoUringSetup, ringEntries, uintptr(unsafe.Pointer(&p)), 0)
	if errno == syscall.EINVAL {
		// Kernels before 5.19 know neither flag; the ring works without
		// them (submit carries on after an entry that stopped a
		// submission, and nothing here completes by task work), and the
		// probe still decides.
		p = ringParams{}
		fd, _, errno = syscall.RawSyscall(sysIoUringSetup, ringEntries, uintptr(unsafe.Pointer(&p)), 0)
	}
	if errno != 0 {
		return nil, os.NewSyscallError("io_uring_setup", errno)
	}
	r := &ring{fd: int(fd)}
	if err := r.mmap(&p); err != nil {
		r.close()
		return nil, err
	}
	if err := r.probe(); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

func (r *ring) mmap(p *ringParams) error {
	if p.features&featSingleMmap == 0 || p.sqEntries != ringEntries {
		return errors.New("io_uring: kernel too old (no IORING_FEAT_SINGLE_MMAP)")
	}
	size := max(p.sqOff.array+p.sqEntries*4, p.cqOff.cqes+p.cqEntries*uint32(unsafe.Sizeof(cqe{})))
	rings, err := syscall.Mmap(r.fd, offSQRing, int(size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE)
	if err != nil {
		return os.NewSyscallError("mmap", err)
	}
	r.mem = append(r.mem, rings)
	sqes, err := syscall.Mmap(r.fd, offSQEs, ringEntries*int(unsafe.Sizeof(sqe{})), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED|syscall.MAP_POPULATE)
	if err != nil {
		return os.NewSyscallError("mmap", err)
	}
	r.mem = append(r.mem, sqes)
	base := unsafe.Pointer(&rings[0])
	r.sqTail = (*uint32)(unsafe.Add(base, p.sqOff.tail))
	r.cqHead = (*uint32)(unsafe.Add(base, p.cqOff.head))
	r.cqTail = (*uint32)(unsafe.Add(base, p.cqOff.tail))
	r.sqMask = *(*uint32)(unsafe.Add(base, p.sqOff.ringMask))
	r.cqMask = *(*uint32)(unsafe.Add(base, p.cqOff.ringMask))
	r.cqes = unsafe.Add(base, p.cqOff.cqes)
	r.sqes = (*[ringEntries]sqe)(unsafe.Pointer(&sqes[0]))
	// Entry i of the submission queue is always SQE i: the indirection
	// array is the identity, written once.
	array := unsafe.Slice((*uint32)(unsafe.Add(base, p.sqOff.array)), p.sqEntries)
	for i := range array {
		array[i] = uint32(i)
	}
	return nil
}

func (r *ring) close() {
	for _, m := range r.mem {
		syscall.Munmap(m)
	}
	syscall.Close(r.fd)
}

// probe checks that a receive with nothing to read fails at once with
// EAGAIN, and that a send completes inside the enter that submits it: the
// two things the synchronous use of the ring rests on.
func (r *ring) probe() error {
	sp, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socketpair", err)
	}
	defer syscall.Close(sp[0])
	defer syscall.Close(sp[1])
	msg := []byte("probe")
	r.add(opRecv, sp[0], r.probeBuf[:], 0, 0)
	r.add(opSend, sp[1], msg, 0, 1)
	r.res[0], r.res[1] = 1, 0
	// A receive that waited in the kernel would never complete: nothing
	// else is sent. submit would wait for it forever; this checks what
	// the enter that submits them left, first.
	atomic.StoreUint32(r.sqTail, atomic.LoadUint32(r.sqTail)+r.queued)
	_, _, errno := syscall.RawSyscall6(sysIoUringEnter, uintptr(r.fd), uintptr(r.queued), 0, 0, 0, 0)
	r.queued = 0
	if errno != 0 {
		return os.NewSyscallError("io_uring_enter", errno)
	}
	if n := r.reap(); n != 2 || r.res[0] != -int32(syscall.EAGAIN) || r.res[1] != int32(len(msg)) {
		return fmt.Errorf("io_uring: operations did not complete at once (%d of 2; recv %d, send %d)", n, r.res[0], r.res[1])
	}
	return nil
}

// add queues an operation on fd over p: a send or a receive, with flags
// besides MSG_DONTWAIT, its completion reported under user. p must stay
// where it is until submit returns (heap memory, or kept alive).
func (r *ring) add(op uint8, fd int, p []byte, flags int, user uint64) {
	s := &r.sqes[(atomic.LoadUint32(r.sqTail)+r.queued)&r.sqMask]
	*s = sqe{opcode: op, fd: int32(fd), addr: uint64(uintptr(unsafe.Pointer(unsafe.SliceData(p)))),
		len: uint32(len(p)), msgFlags: uint32(flags | syscall.MSG_DONTWAIT), userData: user}
	r.queued++
}

// submit makes the queued operations in one io_uring_enter and stores
// each one's result, a count or a negated errno, in res[user]. It returns
// only once every one has completed, so that no buffer stays with the
// kernel.
func (r *ring) submit() error {
	unsubmitted := r.queued
	left := r.queued
	r.queued = 0
	atomic.StoreUint32(r.sqTail, atomic.LoadUint32(r.sqTail)+left)
	for left > 0 {
		// Every operation is meant to be complete when the enter that
		// submits it returns; should one not be, wait for it
		// (min_complete), as its buffer is still the kernel's.
		var wait, flags uintptr
		if unsubmitted == 0 {
			wait, flags = 1, enterGetEvents
		}
		n, _, errno := syscall.RawSyscall6(sysIoUringEnter, uintptr(r.fd), uintptr(unsubmitted), wait, flags, 0, 0)
		switch errno {
		case 0:
			unsubmitted -= min(unsubmitted, uint32(n))
		case syscall.EINTR, syscall.EAGAIN, syscall.EBUSY:
			runtime.Gosched()
		default:
			return os.NewSyscallError("io_uring_enter", errno)
		}
		left -= r.reap()
	}
	return nil
}

// reap stores the results of the completions posted so far, and returns
// their number.
func (r *ring) reap() uint32 {
	head := atomic.LoadUint32(r.cqHead)
	tail := atomic.LoadUint32(r.cqTail)
	for i := head; i != tail; i++ {
		c := (*cqe)(unsafe.Add(r.cqes, uintptr(i&r.cqMask)*unsafe.Sizeof(cqe{})))
		if c.userData < uint64(len(r.res)) {
			r.res[c.userData] = c.res
		}
	}
	atomic.StoreUint32(r.cqHead, tail)
	return tail - head
}
