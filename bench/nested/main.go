// Command nested measures what a reader's nested epoll costs the process
// that writes to it.
//
// fastconn's sockets live in an epoll instance of their own, and that
// instance is registered in the Go runtime's (internal/fastconn/poll.go):
// the runtime must wake the process when a socket is ready, and a second
// epoll instance is the only way to tell it without a plain system call.
// The price is paid by the peers: every wakeup of one of those sockets, a
// segment that brings data or a FIN, runs the socket's epoll callback and
// then the outer instance's, in the softirq of whoever sent the segment.
// On loopback that is the client's or the backend's own system call.
//
// The writer (this process, pinned to CPU 1) sends 64-byte messages over
// loopback TCP to a reader (a child process, pinned to CPU 0) that
// busy-polls its epoll instance and drains the socket. The reader's epoll
// instance is either on its own (flat, as HAProxy's and nginx's are) or
// registered in a second one (nested, as fastconn's is in the runtime's).
// It prints the writer's CPU time per send in each case, rounds
// interleaved.
//
//	go run ./bench/nested [-sends 2000000] [-rounds 4]
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	sends := flag.Int("sends", 2_000_000, "messages per measurement")
	rounds := flag.Int("rounds", 4, "rounds, each measuring flat then nested")
	reader := flag.String("reader", "", "internal: run as the reader (flat or nested) on fd 3")
	flag.Parse()
	runtime.GOMAXPROCS(1) // no runtime thread of this side's on the other's CPU
	if *reader != "" {
		if err := read(*reader == "nested"); err != nil {
			fmt.Fprintln(os.Stderr, "nested: reader:", err)
			os.Exit(1)
		}
		return
	}
	if runtime.NumCPU() < 2 {
		fmt.Fprintln(os.Stderr, "nested: needs two CPUs, one for each side")
		os.Exit(1)
	}
	cost := map[bool][]float64{}
	for r := range *rounds {
		for _, nested := range []bool{false, true} {
			ns, err := measure(nested, *sends)
			if err != nil {
				fmt.Fprintln(os.Stderr, "nested:", err)
				os.Exit(1)
			}
			cost[nested] = append(cost[nested], ns)
			fmt.Printf("round %d %-6s %6.0f ns of the writer's CPU per send\n", r+1, mode(nested), ns)
		}
	}
	flat, nested := median(cost[false]), median(cost[true])
	fmt.Printf("median: flat %.0f ns, nested %.0f ns: %+.0f ns (%.2fx) per send\n", flat, nested, nested-flat, nested/flat)
}

func mode(nested bool) string {
	if nested {
		return "nested"
	}
	return "flat"
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// measure connects a fresh pair, starts a reader on the accepted end, and
// returns the writer's CPU time per send after a warm-up.
func measure(nested bool, sends int) (float64, error) {
	client, server, err := socketPair()
	if err != nil {
		return 0, err
	}
	defer unix.Close(client)
	serverFile := os.NewFile(uintptr(server), "server")
	cmd := exec.Command(os.Args[0], "-reader", mode(nested))
	cmd.ExtraFiles = []*os.File{serverFile}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		serverFile.Close()
		return 0, fmt.Errorf("starting the reader: %w", err)
	}
	serverFile.Close()
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := pin(1); err != nil {
		return 0, err
	}
	// The reader says when it polls: before, sends would only fill the
	// socket's buffers.
	if _, err := unix.Read(client, make([]byte, 1)); err != nil {
		return 0, fmt.Errorf("waiting for the reader: %w", err)
	}
	msg := make([]byte, 64)
	send := func(n int) error {
		for range n {
			if _, err := unix.Write(client, msg); err != nil {
				return fmt.Errorf("send: %w", err)
			}
		}
		return nil
	}
	if err := send(sends / 10); err != nil { // warm-up, and the reader's start
		return 0, err
	}
	start := threadCPU()
	if err := send(sends); err != nil {
		return 0, err
	}
	return float64(threadCPU()-start) / float64(sends), nil
}

// socketPair returns both ends of a loopback TCP connection; the client's
// is blocking, with TCP_NODELAY as a proxy's would have.
func socketPair() (client, server int, err error) {
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, -1, fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(ln)
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return -1, -1, fmt.Errorf("bind: %w", err)
	}
	if err := unix.Listen(ln, 1); err != nil {
		return -1, -1, fmt.Errorf("listen: %w", err)
	}
	sa, err := unix.Getsockname(ln)
	if err != nil {
		return -1, -1, fmt.Errorf("getsockname: %w", err)
	}
	client, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, -1, fmt.Errorf("socket: %w", err)
	}
	if err := unix.SetsockoptInt(client, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		unix.Close(client)
		return -1, -1, fmt.Errorf("TCP_NODELAY: %w", err)
	}
	if err := unix.Connect(client, sa); err != nil {
		unix.Close(client)
		return -1, -1, fmt.Errorf("connect: %w", err)
	}
	server, _, err = unix.Accept4(ln, unix.SOCK_CLOEXEC)
	if err != nil {
		unix.Close(client)
		return -1, -1, fmt.Errorf("accept: %w", err)
	}
	return client, server, nil
}

// read is the reader: fd 3 in an epoll instance, edge-triggered as
// fastconn registers sockets, optionally itself registered in a second
// instance as the runtime registers fastconn's; then busy-polls the first
// and drains the socket until the writer goes away.
func read(nested bool) error {
	runtime.LockOSThread()
	if err := pin(0); err != nil {
		return err
	}
	const fd = 3
	if err := unix.SetNonblock(fd, true); err != nil {
		return fmt.Errorf("nonblock: %w", err)
	}
	inner, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll_create1: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: fd}
	if err := unix.EpollCtl(inner, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	if nested {
		outer, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			return fmt.Errorf("epoll_create1: %w", err)
		}
		// As the runtime registers a descriptor (netpoll_epoll.go).
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(inner)}
		if err := unix.EpollCtl(outer, unix.EPOLL_CTL_ADD, inner, &ev); err != nil {
			return fmt.Errorf("epoll_ctl of the inner instance: %w", err)
		}
	}
	if _, err := unix.Write(fd, []byte{1}); err != nil {
		return fmt.Errorf("ready: %w", err)
	}
	events := make([]unix.EpollEvent, 64)
	buf := make([]byte, 64<<10)
	for { // until the writer's end closes, as it does when the writer dies
		n, _, errno := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(inner),
			uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
		if errno != 0 && errno != syscall.EINTR {
			return fmt.Errorf("epoll_pwait: %w", errno)
		}
		for range int(n) {
			for {
				r, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0, 0)
				if errno == syscall.EAGAIN {
					break
				}
				if errno != 0 && errno != syscall.EINTR {
					return fmt.Errorf("recv: %w", errno)
				}
				if r == 0 && errno == 0 {
					return nil // the writer closed
				}
			}
		}
	}
}

func pin(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("pinning to CPU %d: %w", cpu, err)
	}
	return nil
}

func threadCPU() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return ts.Nano()
}
