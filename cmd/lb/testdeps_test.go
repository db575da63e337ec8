package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runTestDeps runs scripts/test-deps.sh as root on a machine whose PATH
// holds only bash and the stand-ins for the commands named in have (and
// id, apt-get and systemctl, which record their arguments: the real ones
// would change this machine). It returns the recorded calls.
func runTestDeps(t *testing.T, have ...string) string {
	t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(bash, filepath.Join(dir, "bash")); err != nil {
		t.Fatal(err)
	}
	calls := filepath.Join(dir, "calls")
	stub := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!"+bash+"\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	stub("id", "echo 0")
	stub("apt-get", `echo "apt-get $*" >>`+calls)
	stub("systemctl", `echo "systemctl $*" >>`+calls)
	for _, name := range have {
		stub(name, "exit 0")
	}
	cmd := exec.Command("../../scripts/test-deps.sh")
	cmd.Env = []string{"PATH=" + dir}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("test-deps.sh: %v\n%s", err, out)
	}
	got, err := os.ReadFile(calls)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(got)
}

// Debian's prometheus package, installed for promtool, also enables and
// starts the Prometheus server on :9090, pacer's admin port: `make run`
// after `make test` stopped with "--admin: address already in use". The
// script turns that server off, and only when it installed the package.
func TestTestDepsDisablesThePrometheusServerItInstalled(t *testing.T) {
	calls := runTestDeps(t)
	if !strings.Contains(calls, "apt-get install -y --no-install-recommends bind9-dnsutils zookeeper prometheus chromium systemd") {
		t.Fatalf("no apt-get install of every package; calls:\n%s", calls)
	}
	if !strings.Contains(calls, "systemctl disable --now prometheus.service") {
		t.Errorf("the Prometheus server the package started is left holding :9090; calls:\n%s", calls)
	}
	calls = runTestDeps(t, "promtool")
	if strings.Contains(calls, "prometheus") {
		t.Errorf("prometheus was already there, yet the script touched it; calls:\n%s", calls)
	}
}
