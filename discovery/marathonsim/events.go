package marathonsim

import (
	"slices"
	"time"
)

// frameOf frames one event for the wire: "event: <type>" (0.11+), the
// compact JSON on one "data:" line, and a blank line, all CRLF (§1.3).
func (s *Server) frameOf(typ string, ev obj) frame {
	data := marshal(ev)
	b := make([]byte, 0, len(typ)+len(data)+20)
	if s.feat.eventNames {
		b = append(b, "event: "...)
		b = append(b, typ...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "data: "...)
	b = append(b, data...)
	b = append(b, "\r\n\r\n"...)
	return frame{typ: typ, b: b}
}

// emitLocked sends an event to every stream unless quiet is set (the change
// was made inside Silently) or a Silently call is running now.
func (s *Server) emitLocked(quiet bool, typ string, ev obj) {
	if quiet || s.silent.Load() > 0 {
		return
	}
	s.broadcastLocked(s.frameOf(typ, ev))
}

// quiet reports whether changes made now must not produce events.
func (s *Server) quiet() bool { return s.silent.Load() > 0 }

// Emit sends an arbitrary event to every stream. The payload's keys are
// written in sorted order, followed by eventType and timestamp (now, unless
// the payload has its own).
func (s *Server) Emit(eventType string, payload map[string]any) {
	keys := make([]string, 0, len(payload))
	for k := range payload {
		if k != "eventType" && k != "timestamp" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	ev := make(obj, 0, len(keys)+2)
	for _, k := range keys {
		ev = ev.add(k, payload[k])
	}
	ts, ok := payload["timestamp"]
	if !ok {
		ts = stamp(time.Now())
	}
	ev = ev.add("eventType", eventType).add("timestamp", ts)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.emitLocked(false, eventType, ev)
}

// EmitRaw writes data as is to every stream, bypassing framing and the
// event_type filter, for tests of malformed input.
func (s *Server) EmitRaw(data string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.quiet() {
		return
	}
	s.broadcastLocked(frame{b: []byte(data)})
}

// Silently runs fn with event emission suppressed: the state changes fn makes
// are visible through the REST API but never reach a stream, as when Marathon
// drops events for a slow consumer or between a disconnect and a reconnect.
// What fn sets in motion stays silent too: the launches, health results and
// grace-period kills it causes. Anything else emitted while fn runs (Emit,
// EmitRaw, other tasks' events) is suppressed as well; heartbeats and stream
// attach/detach events are not.
func (s *Server) Silently(fn func()) {
	s.silent.Add(1)
	defer s.silent.Add(-1)
	fn()
}

// The builders below write each event's fields in Marathon's serialization
// order (§2.1, §2.2).

func (s *Server) statusUpdateEvent(t *task, status, message string, now time.Time) obj {
	ev := obj{
		{"slaveId", t.agent},
		{"taskId", t.id},
		{"taskStatus", status},
		{"message", message},
		{"appId", t.app.id},
		{"host", taskHost},
	}
	if s.feat.eventIPs {
		ev = ev.add("ipAddresses", taskIPs())
	}
	return ev.add("ports", t.portsJSON()).
		add("version", stamp(t.version)).
		add("eventType", "status_update_event").
		add("timestamp", stamp(now))
}

func (s *Server) instanceChangedEvent(t *task, condition string, now time.Time) obj {
	return obj{
		{"instanceId", t.instanceID},
		{"condition", condition},
		{"runSpecId", t.app.id},
		{"agentId", t.agent},
		{"host", taskHost},
		{"runSpecVersion", stamp(t.version)},
		{"timestamp", stamp(now)},
		{"eventType", "instance_changed_event"},
	}
}

// emitStatusLocked reports a task state change: status_update_event with the
// raw Mesos state, then instance_changed_event (1.4+), in that order as
// InstanceChangedEventsGenerator publishes them (§2.2).
func (s *Server) emitStatusLocked(quiet bool, t *task, status, message string) {
	now := time.Now()
	s.emitLocked(quiet, "status_update_event", s.statusUpdateEvent(t, status, message, now))
	if s.feat.instanceEvents {
		s.emitLocked(quiet, "instance_changed_event", s.instanceChangedEvent(t, conditionOf(status), now))
	}
}

func (s *Server) emitHealthLocked(quiet bool, t *task, alive bool) {
	key, id := "taskId", t.id // 1.3 and earlier (§2.1)
	if s.feat.healthByInst {
		key, id = "instanceId", t.instanceID
	}
	s.emitLocked(quiet, "health_status_changed_event", obj{
		{"appId", t.app.id},
		{key, id},
		{"version", stamp(t.version)},
		{"alive", alive},
		{"eventType", "health_status_changed_event"},
		{"timestamp", stamp(time.Now())},
	})
}

// conditionOf maps a Mesos task state to Marathon's instance condition.
func conditionOf(state string) string {
	switch state {
	case "TASK_STAGING":
		return "Staging"
	case "TASK_STARTING":
		return "Starting"
	case "TASK_RUNNING":
		return "Running"
	case "TASK_KILLING":
		return "Killing"
	case "TASK_KILLED":
		return "Killed"
	case "TASK_FINISHED":
		return "Finished"
	case "TASK_FAILED":
		return "Failed"
	case "TASK_ERROR":
		return "Error"
	case "TASK_LOST", "TASK_UNREACHABLE":
		return "Unreachable"
	case "TASK_DROPPED":
		return "Dropped"
	case "TASK_GONE", "TASK_GONE_BY_OPERATOR":
		return "Gone"
	}
	return "Unknown"
}

// plan is a deployment plan in its light form (1.8+ always, §2.1).
type plan struct {
	id      string
	version time.Time
	steps   [][2]string // one action per step: {action, app id}
}

func (s *Server) newPlan(version time.Time, steps ...[2]string) *plan {
	return &plan{id: newUUID(), version: version, steps: steps}
}

func (s *Server) stepJSON(step [2]string) obj {
	return obj{{"actions", []obj{{{s.feat.actionKey, step[0]}, {"app", step[1]}}}}}
}

func (s *Server) planJSON(p *plan) obj {
	steps := make([]obj, len(p.steps))
	for i, st := range p.steps {
		steps[i] = s.stepJSON(st)
	}
	return obj{{"id", p.id}, {"steps", steps}, {"version", stamp(p.version)}}
}

// deployLocked runs a plan as Marathon's DeploymentActor reports it:
// deployment_info and deployment_step_success around each step (run does
// the step's work), then deployment_success.
func (s *Server) deployLocked(quiet bool, p *plan, run func(step int)) {
	for i, step := range p.steps {
		s.emitLocked(quiet, "deployment_info", obj{
			{"plan", s.planJSON(p)},
			{"currentStep", s.stepJSON(step)},
			{"eventType", "deployment_info"},
			{"timestamp", stamp(time.Now())},
		})
		run(i)
		s.emitLocked(quiet, "deployment_step_success", obj{
			{"plan", s.planJSON(p)},
			{"currentStep", s.stepJSON(step)},
			{"eventType", "deployment_step_success"},
			{"timestamp", stamp(time.Now())},
		})
	}
	ev := obj{{"id", p.id}}
	if s.feat.planInSuccess {
		ev = ev.add("plan", s.planJSON(p))
	}
	s.emitLocked(quiet, "deployment_success", ev.add("eventType", "deployment_success").add("timestamp", stamp(time.Now())))
}

func (s *Server) groupChangeLocked(quiet bool, version time.Time) {
	s.emitLocked(quiet, "group_change_success", obj{
		{"groupId", "/"},
		{"version", stamp(version)},
		{"eventType", "group_change_success"},
		{"timestamp", stamp(time.Now())},
	})
}

func (s *Server) apiPostLocked(quiet bool, a *app, uri string) {
	s.emitLocked(quiet, "api_post_event", obj{
		{"clientIp", "127.0.0.1"},
		{"uri", uri},
		{"appDefinition", s.appJSONLocked(a, appView{})}, // the app as posted: no counts, no tasks
		{"eventType", "api_post_event"},
		{"timestamp", stamp(time.Now())},
	})
}
