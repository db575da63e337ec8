package fastconn

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// childEnv names the test a child test process runs (inChild).
const childEnv = "FASTCONN_TEST_CHILD"

// inChild reports whether t runs in a child process made for it; if not,
// it runs t alone in a fresh test process and fails t if it fails there.
// For tests that exhaust the process's descriptors: they must not starve
// tests running beside them, and a fresh process holds no pooled pipe.
func inChild(t *testing.T) bool {
	t.Helper()
	if os.Getenv(childEnv) == t.Name() {
		return true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+t.Name())
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("in a child process: %v\n%s", err, out)
	}
	return false
}

// exhaustDescriptors lowers the descriptor limit to a little above what is
// open and opens /dev/null until no descriptor is left. Cleanup gives them
// back and restores the limit.
func exhaustDescriptors(t *testing.T) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	open, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	low := lim
	low.Cur = uint64(len(open) + 64)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	var fillers []*os.File
	t.Cleanup(func() {
		for _, f := range fillers {
			f.Close()
		}
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	})
	for {
		f, err := os.Open(os.DevNull)
		if errors.Is(err, syscall.EMFILE) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		fillers = append(fillers, f)
	}
}

// A Splice that cannot make its pipe, the process being out of
// descriptors, copies instead, as the net package's splice does: a
// connection moving bulk data must not break because other connections
// hold every descriptor for a moment.
func TestSpliceCopiesWithoutDescriptors(t *testing.T) {
	if !inChild(t) {
		return
	}
	src, in := pair(t)
	dst, out := pair(t)
	exhaustDescriptors(t)
	if _, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0); !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("a new socket with the descriptors exhausted: %v; want EMFILE", err)
	}

	want := make([]byte, 4<<20+17)
	for i := range want {
		want[i] = byte(i * 7)
	}
	go func() {
		in.Write(want)
		in.CloseWrite()
	}()
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(out)
		got <- b
	}()
	n, err := Splice(dst, src)
	if err != nil || n != int64(len(want)) {
		t.Fatalf("Splice without a descriptor to spare: %d, %v; want %d, nil", n, err, len(want))
	}
	dst.CloseWrite()
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("the far end got %d bytes, not the %d sent", len(b), len(want))
	}
}
