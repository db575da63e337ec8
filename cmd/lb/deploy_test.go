package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// marathonApp is the part of Marathon's AppDefinition that deploy/marathon.json
// uses; decoding with DisallowUnknownFields catches a misspelt field, which
// Marathon would reject with 422.
type marathonApp struct {
	ID        string  `json:"id"`
	Cmd       string  `json:"cmd"`
	Instances int     `json:"instances"`
	CPUs      float64 `json:"cpus"`
	Mem       float64 `json:"mem"`
	Disk      float64 `json:"disk"`
	Container struct {
		Type   string `json:"type"`
		Docker struct {
			Image          string `json:"image"`
			ForcePullImage bool   `json:"forcePullImage"`
		} `json:"docker"`
	} `json:"container"`
	Networks []struct {
		Mode string `json:"mode"`
	} `json:"networks"`
	PortDefinitions []struct {
		Port     int    `json:"port"`
		Name     string `json:"name"`
		Protocol string `json:"protocol"`
	} `json:"portDefinitions"`
	RequirePorts bool              `json:"requirePorts"`
	Env          map[string]string `json:"env"`
	HealthChecks []struct {
		Protocol               string `json:"protocol"`
		Path                   string `json:"path"`
		PortIndex              int    `json:"portIndex"`
		GracePeriodSeconds     int    `json:"gracePeriodSeconds"`
		IntervalSeconds        int    `json:"intervalSeconds"`
		TimeoutSeconds         int    `json:"timeoutSeconds"`
		MaxConsecutiveFailures int    `json:"maxConsecutiveFailures"`
		DelaySeconds           int    `json:"delaySeconds"`
	} `json:"healthChecks"`
	Constraints     [][]string `json:"constraints"`
	UpgradeStrategy struct {
		MinimumHealthCapacity float64 `json:"minimumHealthCapacity"`
		MaximumOverCapacity   float64 `json:"maximumOverCapacity"`
	} `json:"upgradeStrategy"`
	UnreachableStrategy struct {
		InactiveAfterSeconds int `json:"inactiveAfterSeconds"`
		ExpungeAfterSeconds  int `json:"expungeAfterSeconds"`
	} `json:"unreachableStrategy"`
	KillSelection              string            `json:"killSelection"`
	TaskKillGracePeriodSeconds int               `json:"taskKillGracePeriodSeconds"`
	Labels                     map[string]string `json:"labels"`
}

// marathonLocalPortMin is the default of Marathon's --local_port_min, the
// first service port it assigns.
const marathonLocalPortMin = 10000

func mustPort(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	n, err2 := strconv.Atoi(p)
	if err != nil || err2 != nil {
		t.Fatalf("bad address %q", addr)
	}
	return n
}

// Marathon's rule for each path segment of an app id (PathId validation).
var marathonIDSegment = regexp.MustCompile(`^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])$`)

func TestDeployMarathonJSONIsAcceptedByMarathon(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/marathon.json")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var app marathonApp
	if err := dec.Decode(&app); err != nil {
		t.Fatalf("deploy/marathon.json: %v", err)
	}
	for _, seg := range regexp.MustCompile(`/`).Split(app.ID[1:], -1) {
		if !marathonIDSegment.MatchString(seg) {
			t.Errorf("id segment %q is not a valid Marathon path segment", seg)
		}
	}
	if app.CPUs <= 0 || app.Mem < 32 || app.Instances < 1 {
		t.Errorf("resources: cpus %v mem %v instances %d", app.CPUs, app.Mem, app.Instances)
	}
	if app.Container.Type == "DOCKER" && app.Cmd != "" {
		// Marathon runs a Docker app's cmd with /bin/sh -c, and the image
		// (deploy/Dockerfile) is FROM scratch: no shell. The entrypoint is lb.
		t.Errorf("cmd %q needs a shell the image does not have; leave it out and let the entrypoint run", app.Cmd)
	}
	if len(app.Networks) != 1 || app.Networks[0].Mode != "host" {
		t.Errorf("pacer must use host networking to bind service ports on the agent: %+v", app.Networks)
	}
	if len(app.PortDefinitions) == 0 || app.PortDefinitions[0].Name != "admin" {
		t.Fatalf("port 0 must be the admin port (the health check's portIndex 0): %+v", app.PortDefinitions)
	}
	// The admin and DNS ports are reserved for pacer: with requirePorts
	// Mesos gives the task exactly these ports, so no other task lands on
	// them.
	if !app.RequirePorts {
		t.Error("requirePorts must be true so the admin and DNS ports are reserved")
	}
	declared := map[int]string{}
	for _, pd := range app.PortDefinitions {
		if _, dup := declared[pd.Port]; dup {
			t.Errorf("port %d declared twice", pd.Port)
		}
		declared[pd.Port] = pd.Protocol
	}
	protocols := map[string]bool{"HTTP": true, "HTTPS": true, "TCP": true, "COMMAND": true, "MESOS_HTTP": true, "MESOS_HTTPS": true, "MESOS_TCP": true}
	if len(app.HealthChecks) == 0 {
		t.Fatal("no health check: Marathon could not tell a draining pacer")
	}
	for _, hc := range app.HealthChecks {
		if !protocols[hc.Protocol] {
			t.Errorf("health check protocol %q", hc.Protocol)
		}
		if hc.PortIndex < 0 || hc.PortIndex >= len(app.PortDefinitions) {
			t.Errorf("health check portIndex %d outside portDefinitions", hc.PortIndex)
		}
		if hc.Path != "/healthz" {
			t.Errorf("health check path %q, want /healthz", hc.Path)
		}
		if hc.TimeoutSeconds >= hc.IntervalSeconds {
			t.Errorf("timeoutSeconds %d must be below intervalSeconds %d", hc.TimeoutSeconds, hc.IntervalSeconds)
		}
	}
	operators := map[string]bool{"UNIQUE": true, "CLUSTER": true, "GROUP_BY": true, "LIKE": true, "UNLIKE": true, "MAX_PER": true, "IS": true}
	unique := false
	for _, c := range app.Constraints {
		if len(c) < 2 || !operators[c[1]] {
			t.Errorf("constraint %v", c)
		}
		unique = unique || (c[0] == "hostname" && c[1] == "UNIQUE")
	}
	if !unique {
		t.Error("want one instance per agent: hostname UNIQUE")
	}
	us := app.UpgradeStrategy
	if us.MinimumHealthCapacity <= 0 || us.MinimumHealthCapacity >= 1 || us.MaximumOverCapacity < 0 || us.MaximumOverCapacity > 1 {
		// With hostname UNIQUE there is no room for extra instances, so an
		// upgrade must be able to stop some, and must never stop all.
		t.Errorf("upgradeStrategy %+v must keep some but not all instances up", us)
	}
	if app.Labels["PACER_0_ENABLED"] != "false" || app.Labels["HAPROXY_0_ENABLED"] != "false" {
		t.Error("pacer's admin port must be kept out of pacer's and marathon-lb's rotation")
	}
	// The environment must be a configuration lb accepts, as Marathon runs it.
	env := map[string]string{"MARATHON_APP_ID": app.ID, "HOST": "10.0.0.5"}
	for k, v := range app.Env {
		env[k] = v
	}
	env["PORT0"] = strconv.Itoa(app.PortDefinitions[0].Port) // requirePorts: PORT0 is the declared port
	c, err := parseConfig("lb", nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard)
	if err != nil {
		t.Fatalf("lb rejects deploy/marathon.json's env: %v", err)
	}
	// Marathon's SIGKILL must not cut the delay or the drain short.
	if grace := time.Duration(app.TaskKillGracePeriodSeconds) * time.Second; grace <= c.shutdownDelay+c.drainTimeout {
		t.Errorf("taskKillGracePeriodSeconds %d must exceed --shutdown-delay %v plus --drain-timeout %v", app.TaskKillGracePeriodSeconds, c.shutdownDelay, c.drainTimeout)
	}
	// Clients act on a withdrawn lb.<domain> answer only once their cached
	// one expires, and Marathon on /healthz at its next check.
	if c.shutdownDelay < c.dnsTTL {
		t.Errorf("--shutdown-delay %v is shorter than the DNS TTL %v: clients would be refused", c.shutdownDelay, c.dnsTTL)
	}
	if c.selfAppID != "/pacer" {
		t.Errorf("self %q", c.selfAppID)
	}
	// The service-port range is not: an app's port definitions are its
	// service ports too, and Marathon gives an app that asks for none
	// (port 0) the lowest port of its --local_port_min..max, 10000-20000,
	// that no app declares. Declared by pacer, the range would send every
	// new app past it, to ports pacer does not bind. pacer binds it outside
	// Mesos's accounting, as marathon-lb does: agents offer tasks
	// 31000-32000 by default, none of it.
	for port := c.portMin; port <= c.portMax; port++ {
		if _, ok := declared[port]; ok {
			t.Errorf("service port %d (PACER_PORTS) is declared in portDefinitions: Marathon would assign new apps' service ports past the range", port)
		}
	}
	if c.portMin != marathonLocalPortMin {
		t.Errorf("PACER_PORTS starts at %d; Marathon assigns service ports from %d up", c.portMin, marathonLocalPortMin)
	}
	for name, addr := range map[string]string{"PACER_ADMIN": c.admin, "PACER_DNS": c.dns} {
		_, p, _ := net.SplitHostPort(addr)
		n, _ := strconv.Atoi(p)
		if _, ok := declared[n]; !ok {
			t.Errorf("%s port %d is not reserved in portDefinitions", name, n)
		}
	}
	if declared[mustPort(t, c.dns)] != "udp,tcp" {
		t.Errorf("the DNS port must be reserved for UDP and TCP, got %q", declared[mustPort(t, c.dns)])
	}
}

// deploy/pacer.service confines pacer as far as a network daemon that only
// reads its configuration allows (systemd's own exposure score guards it),
// and does not restart a configuration lb rejected: exit status 2.
func TestDeploySystemdUnit(t *testing.T) {
	const unit = "../../deploy/pacer.service"
	raw, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	if code := realMain([]string{"--ports", "8100-8000"}); code != 2 {
		t.Fatalf("a rejected configuration exits %d, want 2", code)
	}
	if !regexp.MustCompile(`(?m)^RestartPreventExitStatus=2$`).Match(raw) {
		t.Error("Restart=always restarts a rejected configuration (exit 2) forever: set RestartPreventExitStatus=2")
	}
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze not found: run `make test`, which installs Debian's systemd package")
	}
	// --threshold is on systemd's 0-100 scale: 40 is an exposure of 4.0.
	out, err := exec.Command(sa, "security", "--offline=yes", "--threshold=40", unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: exposure above 4.0 (%v):\n%s", err, out)
	}
}
