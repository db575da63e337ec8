package marathon

import (
	"bytes"
	"encoding/json"
	"slices"
)

// Event types pacer subscribes to (the event_type query parameter, honoured
// since Marathon 1.3.7; older versions send everything and the rest is
// ignored here).
const (
	evStatusUpdate           = "status_update_event"
	evAPIPost                = "api_post_event"
	evAppTerminated          = "app_terminated_event"
	evDeploymentSuccess      = "deployment_success"
	evDeploymentFailed       = "deployment_failed"
	evDeploymentInfo         = "deployment_info"
	evDeploymentStepSuccess  = "deployment_step_success"
	evDeploymentStepFailure  = "deployment_step_failure"
	evHealthStatusChanged    = "health_status_changed_event"
	evInstanceHealthChanged  = "instance_health_changed_event"
	evFailedHealthCheck      = "failed_health_check_event"
	evInstanceChanged        = "instance_changed_event"
	evUnhealthyTaskKill      = "unhealthy_task_kill_event"     // 1.1 to 1.3
	evUnhealthyInstanceKill  = "unhealthy_instance_kill_event" // 1.4+
	evAddHealthCheck         = "add_health_check_event"
	evRemoveHealthCheck      = "remove_health_check_event"
	evEventStreamAttached    = "event_stream_attached"
	evUnknownInstanceTermina = "unknown_instance_terminated_event"
)

// subscribedEvents is sent as event_type parameters. Order is fixed so the
// request is the same every time (tests and logs).
var subscribedEvents = []string{
	evStatusUpdate,
	evAPIPost,
	evAppTerminated,
	evDeploymentInfo,
	evDeploymentStepSuccess,
	evDeploymentStepFailure,
	evDeploymentSuccess,
	evDeploymentFailed,
	evHealthStatusChanged,
	evInstanceHealthChanged,
	evFailedHealthCheck,
	evInstanceChanged,
	evUnhealthyTaskKill,
	evUnhealthyInstanceKill,
	evAddHealthCheck,
	evRemoveHealthCheck,
	evUnknownInstanceTermina,
}

// event holds the fields of every event pacer acts on; each event type fills
// a few of them. Field names follow Marathon's serializers (reference §2.1).
type event struct {
	EventType string `json:"eventType"`

	// status_update_event (and appId in most app events)
	AppID       string      `json:"appId"`
	TaskID      string      `json:"taskId"`
	TaskStatus  string      `json:"taskStatus"`
	Host        string      `json:"host"`
	Ports       []int       `json:"ports"`
	IPAddresses []ipAddress `json:"ipAddresses"`
	Version     string      `json:"version"`

	// instance_* events (1.4+) name the app runSpecId.
	RunSpecID string `json:"runSpecId"`

	// Health events. InstanceID is set from 1.4 (health_status_changed_event
	// up to 1.3 names the task in TaskID, and failed_health_check_event from
	// 1.5 puts an instance id in TaskID). Alive is
	// health_status_changed_event's, Healthy instance_health_changed_event's
	// (null while Mesos has no verdict).
	InstanceID string `json:"instanceId"`
	Alive      *bool  `json:"alive"`
	Healthy    *bool  `json:"healthy"`

	// api_post_event
	AppDefinition *struct {
		ID string `json:"id"`
	} `json:"appDefinition"`

	// deployment_* events
	Plan *struct {
		Steps []planStep `json:"steps"`
	} `json:"plan"`
	CurrentStep *planStep `json:"currentStep"`
}

// planStep is one step of a deployment plan. Marathon 1.x writes
// {"actions":[...]}; old docs show the action itself as the step, and 0.x
// wrote a step as a bare array of actions. All three are accepted.
type planStep struct {
	Actions []planAction
}

type planAction struct {
	Action string `json:"action"` // 1.1.2+
	Type   string `json:"type"`   // up to 1.1.1
	App    string `json:"app"`
	Pod    string `json:"pod"`
}

func (s *planStep) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '[' {
		return json.Unmarshal(b, &s.Actions)
	}
	var o struct {
		Actions []planAction `json:"actions"`
		planAction
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return err
	}
	s.Actions = o.Actions
	if o.App != "" {
		s.Actions = append(s.Actions, o.planAction)
	}
	return nil
}

// appIDs returns the apps an event is about, deduplicated, for re-fetching.
// ok is false when the event is relevant but names no app (for instance a
// deployment event from Marathon 0.9, which has no plan): a full resync is
// the only safe answer then.
func (e *event) appIDs() (ids []string, ok bool) {
	add := func(id string) {
		if id = normalizeID(id); id != "" && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	switch e.EventType {
	case evAPIPost:
		if e.AppDefinition != nil {
			add(e.AppDefinition.ID)
		}
		add(e.AppID)
	case evDeploymentInfo, evDeploymentStepSuccess, evDeploymentStepFailure,
		evDeploymentSuccess, evDeploymentFailed:
		var steps []planStep
		if e.Plan != nil {
			steps = e.Plan.Steps
		}
		if e.CurrentStep != nil {
			steps = append(slices.Clip(steps), *e.CurrentStep)
		}
		pods := false
		for _, s := range steps {
			for _, a := range s.Actions {
				add(a.App)
				pods = pods || a.Pod != ""
			}
		}
		// A plan that only touches pods is fine to ignore: pacer does not
		// route pods.
		if len(ids) == 0 && pods {
			return nil, true
		}
	case evInstanceChanged, evInstanceHealthChanged, evUnknownInstanceTermina:
		add(e.RunSpecID)
		add(e.AppID)
	default:
		add(e.AppID)
	}
	return ids, len(ids) > 0
}

// relevant reports whether pacer acts on an event type at all.
func relevant(eventType string) bool {
	switch eventType {
	case evEventStreamAttached, "":
		return false
	}
	return slices.Contains(subscribedEvents, eventType)
}

// Task states of status_update_event (raw Mesos states).
const (
	stateRunning        = "TASK_RUNNING"
	stateKilling        = "TASK_KILLING"
	stateUnreachable    = "TASK_UNREACHABLE"
	stateLost           = "TASK_LOST"
	stateStaging        = "TASK_STAGING"
	stateStarting       = "TASK_STARTING"
	stateFinished       = "TASK_FINISHED"
	stateFailed         = "TASK_FAILED"
	stateKilled         = "TASK_KILLED"
	stateError          = "TASK_ERROR"
	stateDropped        = "TASK_DROPPED"
	stateGone           = "TASK_GONE"
	stateGoneByOperator = "TASK_GONE_BY_OPERATOR"
	stateUnknown        = "TASK_UNKNOWN"
)

// terminal reports whether a task in this state never runs again: Marathon
// ignores every later update for it, and so does pacer.
func terminal(state string) bool {
	switch state {
	case stateFinished, stateFailed, stateKilled, stateError, stateDropped,
		stateGone, stateGoneByOperator, stateUnknown:
		return true
	}
	return false
}
