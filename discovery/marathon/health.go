package marathon

import (
	"strings"
)

// Health events are applied to the tasks they name at once, without a
// fetch (marathon-lb refetches everything on each, which is what turns a
// health flap into a reload storm); the next snapshot confirms them.
//
//   - health_status_changed_event (Marathon HTTP/HTTPS/TCP checks): alive.
//   - instance_health_changed_event (Mesos checks, 1.4+): healthy, or null
//     while Mesos has no verdict.
//   - failed_health_check_event: a check failed, so the task is not alive
//     (Marathon's alive is "last success after last failure").
//   - unhealthy_instance_kill_event / unhealthy_task_kill_event: Marathon
//     is killing the task for failing its checks.
//
// An event that cannot be applied exactly (an unknown app or task, a null
// verdict, "alive" for one of several checks whose others are unknown)
// asks for a fetch of its app instead.

// isHealthEvent reports whether applyHealth handles the event type.
func isHealthEvent(eventType string) bool {
	switch eventType {
	case evHealthStatusChanged, evInstanceHealthChanged, evFailedHealthCheck,
		evUnhealthyInstanceKill, evUnhealthyTaskKill:
		return true
	}
	return false
}

// verdict is what a health event says about its task: alive or not, or
// nothing (nil).
func (e *event) verdict() *bool {
	switch e.EventType {
	case evHealthStatusChanged:
		return e.Alive
	case evInstanceHealthChanged:
		return e.Healthy
	}
	no := false
	return &no
}

// healthKey is the instance the event names: instanceId from 1.4, else
// taskId (a task id up to 1.3, an instance id in failed_health_check_event
// from 1.5), as an instance id.
func (e *event) healthKey() string {
	if e.InstanceID != "" {
		return instanceOf(e.InstanceID)
	}
	return instanceOf(e.TaskID)
}

// instanceOf returns the instance id a task id belongs to (marathon-api.md
// §2.1); an instance id is returned as is.
//
//   - 1.8+ app tasks: "<instanceId>._app.<n>";
//   - pod tasks and resident tasks: "<instanceId>.<name>", where the instance
//     part is "<safeAppId>.instance-<uuid>" or "<safeAppId>.marathon-<uuid>";
//   - up to 1.7: "<safeAppId>.<uuid>", whose instance is
//     "<safeAppId>.marathon-<uuid>", and for resident tasks (persistent
//     volumes) "<safeAppId>.<uuid>.<attempt>", of the same instance.
//
// Anything else is returned unchanged.
func instanceOf(id string) string {
	if i := strings.LastIndex(id, "._app."); i > 0 && allDigits(id[i+len("._app."):]) {
		return id[:i]
	}
	dot := strings.LastIndexByte(id, '.')
	if dot <= 0 || dot == len(id)-1 {
		return id
	}
	prefix, last := id[:dot], id[dot+1:]
	if strings.HasPrefix(last, "instance-") || strings.HasPrefix(last, "marathon-") {
		return id // already an instance id
	}
	if i := len(prefix) - uuidLen; allDigits(last) && i > 0 && prefix[i-1] == '.' && looksLikeUUID(prefix[i:]) {
		// A resident task up to 1.7 (Marathon's LegacyResidentId): the
		// attempt follows the uuid. 1.4 to 1.7 health events name its
		// instance, which without this never matched: every one of them
		// cost a fetch before an unhealthy task left routing.
		return prefix[:i-1] + ".marathon-" + prefix[i:]
	}
	if p := strings.LastIndexByte(prefix, '.'); p > 0 {
		seg := prefix[p+1:]
		for _, kind := range []string{"instance-", "marathon-"} {
			if strings.HasPrefix(seg, kind) && looksLikeUUID(seg[len(kind):]) {
				return prefix // "<instanceId>.<container>"
			}
		}
	}
	return prefix + ".marathon-" + last
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// uuidLen is the length of a UUID as Marathon writes it in ids.
const uuidLen = 36

// looksLikeUUID reports whether s is 8-4-4-4-12 hex digits.
func looksLikeUUID(s string) bool {
	if len(s) != uuidLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// mesosCheck reports whether a check is executed by Mesos (its verdict
// arrives as instance_health_changed_event), not by Marathon.
func mesosCheck(hc healthCheck) bool {
	p := strings.ToUpper(hc.Protocol)
	return strings.HasPrefix(p, "MESOS_") || p == "COMMAND"
}

// applyHealth applies a health event at sequence e. It returns the app id,
// whether the app's state changed, and whether the app needs a fetch
// because the event could not be applied exactly.
func (s *state) applyHealth(ev *event, e uint64) (id string, changed, fetch bool) {
	id = normalizeID(ev.AppID)
	if id == "" {
		id = normalizeID(ev.RunSpecID)
	}
	if id == "" {
		return "", false, true
	}
	a := s.apps[id]
	if a == nil || a.def == nil || len(a.def.HealthChecks) == 0 {
		// Unknown, not understood, or checks this source has not seen yet
		// (add_health_check_event may be on its way): ask Marathon.
		return id, false, a == nil || a.problem == ""
	}
	v := ev.verdict()
	key := ev.healthKey()
	if v == nil || key == "" {
		return id, false, true
	}
	n := len(a.def.HealthChecks)
	allMesos := true
	for _, hc := range a.def.HealthChecks {
		allMesos = allMesos && mesosCheck(hc)
	}
	matched := false
	for tid, te := range a.tasks {
		if tid != key && instanceOf(tid) != key {
			continue
		}
		matched = true
		var res []healthResult
		switch {
		case !*v:
			// One failing result makes the task unhealthy whatever the
			// other checks say.
			res = []healthResult{{Alive: false}}
		case n == 1 || (ev.EventType == evInstanceHealthChanged && allMesos):
			// Mesos' healthy flag is the verdict of the task's checks.
			res = allAlive(n)
		default:
			// One of several checks passes: all are alive only if the
			// others already were.
			old := te.t.HealthCheckResults
			failing := 0
			for _, r := range old {
				if !r.Alive {
					failing++
				}
			}
			if (len(old) == n && failing <= 1) || (len(old) == n-1 && failing == 0) {
				res = allAlive(n)
			} else {
				fetch = true
				continue
			}
		}
		t := *te.t
		t.HealthCheckResults = res
		a.tasks[tid] = &taskEntry{t: &t, seq: te.seq, healthSeq: e}
		changed = true
	}
	if !matched {
		fetch = true // a task this source has not seen yet
	}
	return id, changed, fetch
}

func allAlive(n int) []healthResult {
	res := make([]healthResult, n)
	for i := range res {
		res[i].Alive = true
	}
	return res
}
