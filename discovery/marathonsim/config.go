package marathonsim

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Config configures a Server. The zero value is a Marathon 1.10.17 leader.
type Config struct {
	// Version is the Marathon version reported by /v2/info and imitated on the
	// wire; "" means "1.10.17". From 1.8 task ids are
	// "<safeAppId>.instance-<uuid>._app.<n>", before that "<safeAppId>.<uuid>".
	// A version starting with "0.8" serves the 0.8 app JSON shape.
	Version string
	// Heartbeat is the SSE keepalive period; 0 means 10s (Jetty's default
	// heartBeatPeriod, which Marathon does not override).
	Heartbeat time.Duration
	// RestartDelay is how long Marathon waits before launching a replacement
	// for a task that ended; 0 means 50ms, negative means at once.
	RestartDelay time.Duration
	// Leader, when non-empty, makes this Server a standby of the Marathon at
	// that URL (e.g. "http://127.0.0.1:8080"). /v2/events answers 302 to the
	// leader (1.7+) or is proxied (before 1.7); every other request is proxied
	// with "Via: 1.1 <host:port>" (marathon-api.md §1.5).
	Leader string
	// NoLeaderHold is how long a request waits before failing while
	// SetNoLeader is on; 0 means 2.5s (Marathon's 10 tries 250 ms apart),
	// negative means no wait.
	NoLeaderHold time.Duration
	// Logf, if set, receives the simulator's diagnostics; nil discards them.
	Logf func(format string, args ...any)
}

// Defaults and Marathon constants the simulator reproduces.
const (
	defaultVersion      = "1.10.17"
	defaultHeartbeat    = 10 * time.Second
	defaultRestartDelay = 50 * time.Millisecond
	defaultNoLeaderHold = 2500 * time.Millisecond

	// --local_port_min/--local_port_max defaults, unchanged since 0.7 (§3.1).
	localPortMin = 10000
	localPortMax = 20000
)

// version is a parsed Marathon release number.
type version [3]int

// parseVersion reads "1.10.17", "0.8", "1.3.7-RC1" (suffixes are ignored).
func parseVersion(s string) (version, error) {
	var v version
	core, _, _ := strings.Cut(s, "-")
	parts := strings.Split(core, ".")
	if len(parts) > 3 {
		return v, fmt.Errorf("marathon version %q: want major.minor[.patch]", s)
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return v, fmt.Errorf("marathon version %q: want major.minor[.patch]", s)
		}
		v[i] = n
	}
	return v, nil
}

func (v version) atLeast(major, minor, patch int) bool {
	w := version{major, minor, patch}
	for i := range v {
		if v[i] != w[i] {
			return v[i] > w[i]
		}
	}
	return true
}

// features are the version-dependent behaviours, decided once in New so the
// rest of the package asks "does this Marathon do X" rather than compare
// version numbers.
type features struct {
	eventNames     bool   // 0.11+: Jetty 9 writes an "event:" line (§1.3)
	eventFilter    bool   // 1.3.7+: event_type query parameter (§1.1)
	redirectEvents bool   // 1.7+: a standby answers /v2/events with 302 (§1.5)
	closeSlow      bool   // 1.8+: a full stream queue closes the stream (§1.4)
	queueLen       int    // --event_stream_max_outstanding_messages default
	instanceIDs    bool   // 1.8+: task id = instance id + "._app.<n>" (§2.1)
	instanceEvents bool   // 1.4+: instance_changed_event exists
	healthByInst   bool   // 1.4+: health results/events say instanceId, not taskId
	eventIPs       bool   // 0.14+: status_update_event has ipAddresses
	legacyApps     bool   // < 0.9: 0.8 app and task JSON (ports, no task state)
	portsField     bool   // < 1.5: apps also carry "ports" and "ipAddress"
	networks       bool   // 1.5+: "networks", "killSelection"
	unreachable    bool   // 1.4+: "unreachableStrategy"
	roles          bool   // 1.9+: "role" on apps and tasks
	omitEmpty      bool   // 1.6+: empty healthChecks and null health fields are omitted
	planInSuccess  bool   // 0.10+: deployment_success carries the plan
	actionKey      string // "action" from 1.1.2, "type" before
}

func featuresOf(v version) features {
	f := features{
		eventNames:     v.atLeast(0, 11, 0),
		eventFilter:    v.atLeast(1, 3, 7),
		redirectEvents: v.atLeast(1, 7, 0),
		closeSlow:      v.atLeast(1, 8, 0),
		queueLen:       1024,
		instanceIDs:    v.atLeast(1, 8, 0),
		instanceEvents: v.atLeast(1, 4, 0),
		healthByInst:   v.atLeast(1, 4, 0),
		eventIPs:       v.atLeast(0, 14, 0),
		legacyApps:     !v.atLeast(0, 9, 0),
		portsField:     !v.atLeast(1, 5, 0),
		networks:       v.atLeast(1, 5, 0),
		unreachable:    v.atLeast(1, 4, 0),
		roles:          v.atLeast(1, 9, 0),
		omitEmpty:      v.atLeast(1, 6, 0),
		planInSuccess:  v.atLeast(0, 10, 0),
		actionKey:      "action",
	}
	if !v.atLeast(1, 5, 0) {
		f.queueLen = 50 // default up to 1.4 (§1.4)
	}
	if !v.atLeast(1, 1, 2) {
		f.actionKey = "type"
	}
	return f
}
