package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pacer-lb/pacer/discovery/marathonsim"
	"github.com/pacer-lb/pacer/internal/fastconn"
	"github.com/pacer-lb/pacer/internal/testnet"
)

// startLine runs lb with args in a process of its own (this test binary,
// by lbArgsVar: the pollers' choice is made once per process) and returns
// the fields of its "pacer running" line.
func startLine(t *testing.T, args ...string) map[string]any {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = []string{lbArgsVar + "=" + strings.Join(args, "\x1f"), "PATH=" + os.Getenv("PATH")}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Error("lb did not stop within 10s of SIGTERM")
		}
	}()
	lines := make(chan map[string]any)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == "pacer running" {
				lines <- line
			}
		}
	}()
	select {
	case line, ok := <-lines:
		if !ok {
			t.Fatal("lb ended without its start line")
		}
		go func() {
			for range lines { // drain, so that lb never blocks on stderr
			}
		}()
		return line
	case <-time.After(10 * time.Second):
		t.Fatal("no start line within 10s")
		return nil
	}
}

// --io-uring=false gives the data plane plain system calls, and the start
// line says so; by default the pollers batch through io_uring wherever
// this test's own process could.
func TestIOUringFlagChoosesTheBatching(t *testing.T) {
	sim := startSim(t, marathonsim.Config{})
	args := func(extra ...string) []string {
		port := testnet.FreePort(t)
		return append([]string{"--marathon", sim.URL(), "--bind", "127.0.0.1", "--ports", fmt.Sprintf("%d-%d", port, port),
			"--admin", "127.0.0.1:0", "--dns", "", "--log-format", "json"}, extra...)
	}
	off := startLine(t, args("--io-uring=false")...)
	if got, _ := off["batching"].(string); !strings.HasPrefix(got, "plain system calls") {
		t.Errorf("with --io-uring=false the start line says batching %q; want plain system calls", got)
	}
	on := startLine(t, args()...)
	got, _ := on["batching"].(string)
	if err := fastconn.RingStatus(); err != nil {
		t.Logf("no io_uring in this process either (%v): lb says %q", err, got)
		if got == "io_uring" {
			t.Errorf("lb batches through io_uring where this process could not")
		}
		return
	}
	if got != "io_uring" {
		t.Errorf("by default the start line says batching %q; want io_uring, which works here", got)
	}
}
