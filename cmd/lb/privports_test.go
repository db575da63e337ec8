package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/pacer-lb/pacer/internal/testnet"
)

// lbArgsVar, when set, makes this test binary run lb with those arguments
// (separated by \x1f, the ASCII unit separator) as the process it is: how
// a test runs lb as a user that is not root.
const lbArgsVar = "PACER_TEST_LB_ARGS"

func TestMain(m *testing.M) {
	if args, ok := os.LookupEnv(lbArgsVar); ok {
		os.Exit(realMain(strings.Split(args, "\x1f")))
	}
	os.Exit(m.Run())
}

// runLBAsNobody runs lb with args in a process of user nobody (65534), or
// of the user who runs the tests if not root, with no capability, and
// returns its exit status and stderr.
// Run by root, the process gets a network namespace of its own, where
// ports below 1024 are privileged whatever the host's
// net.ipv4.ip_unprivileged_port_start says (0 in Docker's containers): its
// only interface is a loopback that is down, so bind wildcard addresses.
func runLBAsNobody(t *testing.T, args ...string) (int, string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	if os.Geteuid() == 0 {
		// The test binary sits in a directory only root may enter: run a
		// copy nobody can read.
		// (t.TempDir's parent is 0700.)
		dir, err := os.MkdirTemp("", "pacer-nobody-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		copyExecutable(t, self, filepath.Join(dir, "lb.test"))
		cmd = exec.Command(filepath.Join(dir, "lb.test"))
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: 65534, Gid: 65534},
			Cloneflags: syscall.CLONE_NEWNET,
		}
	} else {
		// Not root: a user namespace of its own, where this user stays
		// who it is with no capability once lb starts, owns a network
		// namespace of its own, whose privileged ports start at 1024
		// whatever this one says (a host or container may set 0).
		uid, gid := os.Getuid(), os.Getgid()
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}},
		}
	}
	cmd.Env = []string{lbArgsVar + "=" + strings.Join(args, "\x1f"), "PATH=" + os.Getenv("PATH")}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return exit.ExitCode(), stderr.String()
	case err != nil:
		t.Fatal(err)
	}
	return 0, stderr.String()
}

func copyExecutable(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// A user that may not bind ports below 1024 who asks for one for --admin,
// --dns or --http is told so, and how to grant the capability: not "is
// another pacer running?", which sent operators looking for a process that
// was never there.
func TestPrivilegedPortNamesTheCapability(t *testing.T) {
	port := testnet.FreePort(t)
	for _, flag := range []string{"--admin", "--dns", "--http"} {
		args := []string{"--marathon", "http://127.0.0.1:1", "--bind", "0.0.0.0",
			"--ports", fmt.Sprintf("%d-%d", port, port), "--admin", ":0", "--dns", ":0",
			"--log-format", "json", flag, ":999"}
		code, stderr := runLBAsNobody(t, args...)
		last := lastLine(stderr)
		if code != 1 || !strings.HasPrefix(last, "lb: "+flag+":") || !strings.Contains(last, "permission denied") ||
			!strings.Contains(last, "CAP_NET_BIND_SERVICE") || strings.Contains(last, "another pacer") {
			t.Errorf("%s :999 as nobody: exit %d, last line\n\t%s\nwant exit 1 and a line naming %s, the capability and not another pacer; stderr:\n%s",
				flag, code, last, flag, stderr)
		}
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
