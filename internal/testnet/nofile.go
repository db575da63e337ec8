package testnet

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// childEnv names the test a child test process runs (InChild).
const childEnv = "PACER_TEST_CHILD"

// InChild reports whether t runs in a child test process made for it. If
// not, it runs t alone in a fresh test process, fails t if it fails there,
// and returns false: the caller returns at once. For tests that exhaust
// the process's descriptors (ExhaustDescriptors): they must not starve the
// tests running beside them, and a fresh process holds no pooled pipe or
// connection.
func InChild(t *testing.T) bool {
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

// Descriptors holds the descriptors ExhaustDescriptors took.
type Descriptors struct {
	files []*os.File
	limit syscall.Rlimit // the limit before
}

// ExhaustDescriptors lowers the descriptor limit to a little above what
// is open and opens /dev/null until no descriptor is left. Cleanup gives
// them back and restores the limit. Run it in a child process (InChild).
func ExhaustDescriptors(t *testing.T) *Descriptors {
	t.Helper()
	d := &Descriptors{}
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &d.limit); err != nil {
		t.Fatal(err)
	}
	open, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	low := d.limit
	low.Cur = uint64(len(open) + 64)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Release)
	for {
		file, err := os.Open(os.DevNull)
		if errors.Is(err, syscall.EMFILE) {
			return d
		}
		if err != nil {
			t.Fatal(err)
		}
		d.files = append(d.files, file)
	}
}

// Free gives n descriptors back.
func (d *Descriptors) Free(n int) {
	for range min(n, len(d.files)) {
		d.files[len(d.files)-1].Close()
		d.files = d.files[:len(d.files)-1]
	}
}

// Release gives every descriptor back and restores the limit.
func (d *Descriptors) Release() {
	d.Free(len(d.files))
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &d.limit)
}
