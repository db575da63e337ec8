package fastconn

import (
	"errors"
	"io"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// maxSplice is the most one splice(2) call moves, and the size asked for
// the pipe: 1 MiB, the default /proc/sys/fs/pipe-max-size (the net
// package's splice uses the same).
const maxSplice = 1 << 20

// Splice moves src's bytes to dst through a pipe, without copying them
// through user space, until src's EOF (a nil error), an error, or a
// deadline. Unlike io.Copy between two *net.TCPConn, which splices too, its
// splice calls are raw: a call that moves a megabyte can take long enough
// for sysmon to hand the P to another thread, and in bulk transfers that was
// thousands of thread wakeups a second (bulk through the TCP plane: 2,950
// sysmon sleeps and 1,730 futex calls a second with the net package's
// splice, 6 and 0 with this one; bench/RESULTS.md).
//
// The count is of bytes taken from src, as Read counts, including any a
// failed write left in the pipe: they are gone from src either way.
func Splice(dst, src *Conn) (int64, error) {
	p := pipes.Get().(*pipe)
	if p.err != nil {
		// No pipe (the process is out of descriptors, or the kernel out
		// of memory): copy, as the net package's splice does. Failing
		// would break a healthy connection mid-transfer because other
		// connections hold every descriptor for a moment. p is not
		// pooled: the next Splice tries again.
		return copyPlain(dst, src)
	}
	var total int64
	for {
		n, err := src.spliceIn(p)
		if total == 0 && errors.Is(err, syscall.EINVAL) {
			// The kernel cannot splice this socket (nothing was moved):
			// copy as the net package would.
			putPipe(p)
			return copyPlain(dst, src)
		}
		total += int64(n)
		if err == nil && n > 0 {
			err = dst.spliceOut(p)
		}
		if err != nil || n == 0 {
			putPipe(p)
			return total, err
		}
	}
}

// copyPlain is Splice's fallback: a copy through user space, until src's
// EOF, an error, or a deadline, as Splice would stop.
func copyPlain(dst, src *Conn) (int64, error) {
	// Hidden from io.Copy: src's WriteTo would Splice again.
	return io.Copy(struct{ io.Writer }{dst}, struct{ io.Reader }{src})
}

// SplicedAt is when a Splice last moved bytes out to c (Mono's clock), or
// 0. Unlike the count Splice returns at its end, it moves while a Splice
// empties its pipe into a reader slower than the caller's idle timeout.
func (c *Conn) SplicedAt() time.Duration { return time.Duration(c.splicedAt.Load()) }

// spliceIn moves what src has, up to maxSplice, into p.
func (c *Conn) spliceIn(p *pipe) (int, error) {
	c.beforeRead()
	c.sp, c.rn, c.rerr = p, 0, 0
	rerr := c.waitRead()
	c.rd.end()
	c.sp = nil
	n, err := c.readResult(rerr)
	if err == io.EOF {
		return 0, nil
	}
	p.data += n
	return n, err
}

func (c *Conn) spliceInRaw(fd uintptr) bool {
	return c.rawRead(syscall.SYS_SPLICE, fd, 0, uintptr(c.sp.w), 0, maxSplice, spliceFlags)
}

// spliceOut writes everything in p to c.
func (c *Conn) spliceOut(p *pipe) error {
	c.wp, c.werr = p, 0
	c.wd.begin()
	err := c.waitWrite()
	c.wd.end()
	c.wp = nil
	c.wrote.Store(true)
	switch {
	case err != nil:
		return c.mapClosed("splice", err)
	case c.werr != 0:
		return c.opError("splice", c.werr)
	}
	return nil
}

func (c *Conn) spliceOutRaw(fd uintptr) bool {
	p := c.wp
	for p.data > 0 {
		n, _, errno := syscall.RawSyscall6(syscall.SYS_SPLICE, uintptr(p.r), 0, fd, 0, uintptr(p.data), spliceFlags)
		switch errno {
		case 0:
			p.data -= int(n)
			c.splicedAt.Store(int64(Mono()))
		case syscall.EINTR:
		case syscall.EAGAIN:
			c.wd.beforeWait()
			return false // dst's socket buffer is full
		default:
			c.werr = errno
			return true
		}
	}
	return true
}

// SPLICE_F_MOVE | SPLICE_F_NONBLOCK; the sockets are non-blocking already,
// and the flag makes the pipe side so too.
const spliceFlags = 0x1 | 0x2

// pipe is a pipe for Splice, with the count of bytes in it.
type pipe struct {
	r, w int
	data int
	err  error // the pipe could not be made
	// cleanup closes the descriptors when the pool drops the pipe.
	cleanup runtime.Cleanup
}

var pipes = sync.Pool{New: newPipe}

func newPipe() any {
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		return &pipe{err: os.NewSyscallError("pipe2", err)}
	}
	// A smaller pipe still works, a call at a time.
	_, _, _ = syscall.Syscall(syscall.SYS_FCNTL, uintptr(fds[0]), syscall.F_SETPIPE_SZ, maxSplice)
	p := &pipe{r: fds[0], w: fds[1]}
	p.cleanup = runtime.AddCleanup(p, closePipe, fds)
	return p
}

// putPipe returns p to the pool, or closes it if bytes are stuck in it.
func putPipe(p *pipe) {
	if p.data != 0 {
		p.cleanup.Stop()
		closePipe([2]int{p.r, p.w})
		return
	}
	pipes.Put(p)
}

func closePipe(fds [2]int) {
	_ = syscall.Close(fds[0])
	_ = syscall.Close(fds[1])
}
