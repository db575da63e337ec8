package fastconn

import (
	"bytes"
	"net"
	"os"
	"syscall"
	"testing"
	"unsafe"
)

// loopbackPairs opens n connected pairs of non-blocking loopback TCP
// sockets, closed when the test ends.
func loopbackPairs(tb testing.TB, n int) (a, b []int) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	raw := func(c net.Conn) int {
		f, err := c.(*net.TCPConn).File() // a duplicate, blocking
		c.Close()
		if err != nil {
			tb.Fatal(err)
		}
		fd, err := syscall.Dup(int(f.Fd()))
		f.Close()
		if err != nil {
			tb.Fatal(err)
		}
		if err := syscall.SetNonblock(fd, true); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { syscall.Close(fd) })
		return fd
	}
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			tb.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			tb.Fatal(err)
		}
		a, b = append(a, raw(c)), append(b, raw(s))
	}
	return a, b
}

// kernelRing reports whether this process may set up an io_uring at all,
// with no flag (a seccomp filter or kernel.io_uring_disabled says no), and
// why not.
func kernelRing() error {
	var p ringParams
	fd, _, errno := syscall.RawSyscall(sysIoUringSetup, 4, uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return os.NewSyscallError("io_uring_setup", errno)
	}
	syscall.Close(int(fd))
	return nil
}

// testRing sets up a ring; nil where the kernel has none for this
// process, which is then what setupRing must have said too.
func testRing(tb testing.TB) *ring {
	tb.Helper()
	r, err := setupRing()
	if err != nil {
		if kerr := kernelRing(); kerr == nil {
			tb.Fatalf("io_uring works here, yet no ring passes the probe: %v", err)
		}
		tb.Logf("no io_uring for this process: %v", err)
		return nil
	}
	tb.Cleanup(r.close)
	return r
}

// TestPollersBatchThroughRing: where the kernel lets a process set up an
// io_uring, the pollers use one, unless PACER_IO_URING turns it off (a
// probe that failed on a kernel that has io_uring would silently cost the
// data plane the batching); where it does not, they say why.
func TestPollersBatchThroughRing(t *testing.T) {
	err := RingStatus()
	if kerr := kernelRing(); kerr != nil {
		if err == nil {
			t.Fatalf("%v, yet the pollers report a ring", kerr)
		}
		t.Logf("the pollers make plain system calls: %v", err)
		return
	}
	switch v := os.Getenv(ringEnv); v {
	case "off", "0", "false":
		if err == nil {
			t.Fatalf("%s=%s, yet the pollers batch through io_uring", ringEnv, v)
		}
	default:
		if err != nil {
			t.Fatalf("io_uring works here, yet the pollers do not use it: %v", err)
		}
	}
}

// TestRingCallsCompleteInTheirEnter: sends and receives on many sockets
// in one submit, each with its own result, a receive with nothing to read
// failing with EAGAIN instead of waiting, and a send that the socket's
// buffer takes only in part reporting what went out.
func TestRingCallsCompleteInTheirEnter(t *testing.T) {
	if unsafe.Sizeof(sqe{}) != 64 || unsafe.Sizeof(cqe{}) != 16 || unsafe.Sizeof(ringParams{}) != 120 {
		t.Fatalf("io_uring structures of %d, %d and %d bytes; the kernel's are 64, 16 and 120",
			unsafe.Sizeof(sqe{}), unsafe.Sizeof(cqe{}), unsafe.Sizeof(ringParams{}))
	}
	r := testRing(t)
	if r == nil {
		return // the kernel's refusal, checked by testRing
	}
	a, b := loopbackPairs(t, 8)
	msgs := make([][]byte, len(a))
	for i := range a {
		msgs[i] = bytes.Repeat([]byte{byte('a' + i)}, 10+i)
		r.add(opSend, a[i], msgs[i], syscall.MSG_NOSIGNAL, uint64(i))
	}
	if err := r.submit(); err != nil {
		t.Fatal(err)
	}
	for i := range a {
		if r.res[i] != int32(len(msgs[i])) {
			t.Errorf("send %d: %d, want %d", i, r.res[i], len(msgs[i]))
		}
	}
	bufs := make([][]byte, len(b)+1)
	for i := range b {
		bufs[i] = make([]byte, 64)
		r.add(opRecv, b[i], bufs[i], 0, uint64(i))
	}
	bufs[len(b)] = make([]byte, 64)
	r.add(opRecv, a[0], bufs[len(b)], 0, uint64(len(b))) // nothing sent that way
	if err := r.submit(); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		if n := r.res[i]; n < 0 || !bytes.Equal(bufs[i][:n], msgs[i]) {
			t.Errorf("recv %d: %d %q, want %q", i, n, bufs[i][:max(n, 0)], msgs[i])
		}
	}
	if res := r.res[len(b)]; res != -int32(syscall.EAGAIN) {
		t.Errorf("recv with nothing to read: %d, want -EAGAIN (%d)", res, -int32(syscall.EAGAIN))
	}

	// Fill a socket whose peer reads nothing: the last send takes part, or
	// nothing (EAGAIN), and returns at once either way.
	if err := syscall.SetsockoptInt(a[1], syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 1<<20)
	total := 0
	for range 64 {
		r.add(opSend, a[1], big, syscall.MSG_NOSIGNAL, 0)
		if err := r.submit(); err != nil {
			t.Fatal(err)
		}
		if r.res[0] == -int32(syscall.EAGAIN) {
			break
		}
		if r.res[0] <= 0 {
			t.Fatalf("send to a full socket: %d", r.res[0])
		}
		total += int(r.res[0])
	}
	if r.res[0] != -int32(syscall.EAGAIN) {
		t.Fatalf("64 sends of 1 MiB to a socket nobody reads went out whole (%d bytes)", total)
	}
	if total >= 64<<20 {
		t.Fatalf("sent %d bytes to a socket nobody reads", total)
	}
}

// BenchmarkRingBatch and BenchmarkSyscallBatch send 100 bytes over 8
// loopback connections and receive them, as one io_uring_enter per
// direction and as 16 system calls: the saving the poller's batches are
// for (uring.go).
func BenchmarkRingBatch(b *testing.B) {
	r := testRing(b)
	if r == nil {
		b.Skip("no io_uring for this process")
	}
	a, c := loopbackPairs(b, 8)
	msg, buf := make([]byte, 100), make([]byte, 4096)
	for b.Loop() {
		for i := range a {
			r.add(opSend, a[i], msg, syscall.MSG_NOSIGNAL, uint64(i))
		}
		if err := r.submit(); err != nil {
			b.Fatal(err)
		}
		for i := range c {
			r.add(opRecv, c[i], buf, 0, uint64(i))
		}
		if err := r.submit(); err != nil {
			b.Fatal(err)
		}
		for i := range c {
			if r.res[i] != 100 {
				b.Fatalf("recv %d: %d", i, r.res[i])
			}
		}
	}
}

// BenchmarkGetpid is the cost of a system call that does nothing: its
// entry and exit.
func BenchmarkGetpid(b *testing.B) {
	for b.Loop() {
		syscall.RawSyscall(syscall.SYS_GETPID, 0, 0, 0)
	}
}

func BenchmarkSyscallBatch(b *testing.B) {
	a, c := loopbackPairs(b, 8)
	msg, buf := make([]byte, 100), make([]byte, 4096)
	for b.Loop() {
		for i := range a {
			if n, errno := sendAll(uintptr(a[i]), msg, 0); errno != 0 || n != 100 {
				b.Fatalf("send %d: %d %v", i, n, errno)
			}
		}
		for i := range c {
			if n, errno := recv(uintptr(c[i]), buf); errno != 0 || n != 100 {
				b.Fatalf("recv %d: %d %v", i, n, errno)
			}
		}
	}
}
