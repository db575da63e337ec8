package httpproxy

import (
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// lateLogRounds counts the child's rounds.
var lateLogRounds atomic.Int32

// lateLogChild marks the child process TestRigLogsAfterItsTest starts to
// run its two rounds in.
const lateLogChild = "PACER_TEST_LATE_LOG"

// A proxy goroutine that outlives its test, and logs, must not panic the
// test binary ("Log in goroutine after ... has completed"), which ends
// the run of every test after it and hides the failure that left the
// goroutine behind. It happened under -count=3: a handler still waited
// for its backend's answer after the rig's Shutdown gave up its drain,
// and logged the backend's timeout during the next round of the tests,
// when nothing of the round that ran its test was left to take the line.
// The test runs itself twice (-count=2) in a child process: the first
// round leaves such a handler behind, the second waits for it to log.
func TestRigLogsAfterItsTest(t *testing.T) {
	if os.Getenv(lateLogChild) == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRigLogsAfterItsTest$", "-test.count=2", "-test.v")
		cmd.Env = append(os.Environ(), lateLogChild+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil || strings.Count(string(out), "--- PASS: TestRigLogsAfterItsTest ") != 2 {
			t.Fatalf("in a child process: %v\n%s", err, out)
		}
		return
	}
	// In the child: round 1 leaves a handler waiting for a backend that
	// never answers past the rig's cleanup, whose drain ends before the
	// answer is due; round 2 waits for the handler to log the backend's
	// timeout.
	if lateLogRounds.Add(1) > 1 {
		for deadline := time.Now().Add(waitFor); lateLogs.Load() == 0; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the handler left behind never logged")
			}
		}
		return
	}
	be := rawBackend(t, func(c net.Conn) { go io.Copy(io.Discard, c) })
	r := newRig(t, Config{DrainTimeout: 50 * time.Millisecond, ResponseHeaderTimeout: time.Second})
	r.apply(app("/web", 0, []string{"web.test"}, "", be))
	nc, _ := dialRaw(t, r.vhost)
	io.WriteString(nc, "GET / HTTP/1.1\r\nHost: web.test\r\n\r\n")
	for deadline := time.Now().Add(waitFor); r.p.Stats()[0].Active == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the request never reached the proxy's handler")
		}
	}
}
