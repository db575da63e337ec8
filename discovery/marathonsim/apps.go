package marathonsim

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// AppSpec declares a Marathon app.
type AppSpec struct {
	ID        string // e.g. "/shop/web"; a missing leading slash is added
	Instances int
	// ServicePorts are the app's service ports: portDefinitions[].port (1.x)
	// or ports (0.8). A 0 entry, or an empty list (Marathon's default of one
	// port), is assigned the lowest free port from 10000 to 20000, as
	// Marathon does. Each task gets one host port per service port.
	ServicePorts []int
	PortNames    []string // optional, portDefinitions[].name by index
	Labels       map[string]string
	// Cmd is shown as the app's cmd; it is not run ("" omits it).
	Cmd string
	// HealthCheck, if set, is a Marathon-executed check: the simulator marks
	// each task alive (and emits health_status_changed_event) once the port
	// answers. Note that a check connection counts against OneShotHello's
	// single connection, as it would against nc.
	HealthCheck *HealthCheck
	// Run is each task's process; nil means HTTPHello().
	Run TaskFunc
}

// HealthCheck is a Marathon HTTP or TCP health check.
type HealthCheck struct {
	Protocol  string // "HTTP" or "TCP"; "" means HTTP when Path is set, else TCP
	Path      string // HTTP path; "" means "/"
	PortIndex int
}

// KillOptions says how KillTask ends a task.
type KillOptions struct {
	// Grace > 0 reports TASK_KILLING at once, keeps the process serving for
	// Grace (its drain window), then stops it and reports TASK_KILLED.
	Grace time.Duration
	// Abrupt makes the process vanish with no event at all: its listeners
	// close, its connections are reset, and Marathon keeps listing the task
	// as running (as when an agent dies unnoticed). A later KillTask of the
	// same id reports it killed.
	Abrupt bool
	// NoRestart scales the app down by one instead of replacing the task,
	// as DELETE /v2/apps/{app}/tasks/{task}?scale=true does.
	NoRestart bool
	// State is the terminal state reported instead of TASK_KILLED, e.g.
	// TASK_FAILED, TASK_LOST or TASK_GONE; "" means TASK_KILLED.
	State string

	quiet bool // the kill was requested inside Silently
}

// TaskInfo describes a live task.
type TaskInfo struct {
	ID         string
	AppID      string
	InstanceID string
	Host       string
	Ports      []int
	State      string // REST state, e.g. TASK_RUNNING, TASK_KILLING
	Healthy    *bool  // nil until the first health check result
}

// app is one Marathon app; guarded by Server.mu.
type app struct {
	id               string
	spec             AppSpec
	servicePorts     []int
	instances        int
	version          time.Time
	lastConfigChange time.Time
	tasks            []*task    // live tasks in launch order
	reuse            []instance // 1.8+: instances waiting for their next incarnation
}

// CreateApp creates and deploys an app: api_post_event, group_change_success,
// the deployment events, and each task's status updates. It returns once
// every task is TASK_RUNNING (health results follow asynchronously).
func (s *Server) CreateApp(spec AppSpec) error {
	if strings.Trim(spec.ID, "/") == "" {
		return errors.New("marathonsim: app id is empty")
	}
	if spec.Instances < 0 {
		return fmt.Errorf("marathonsim: app %s: negative instances", spec.ID)
	}
	spec.ID = canonicalID(spec.ID)
	if spec.Run == nil {
		spec.Run = HTTPHello()
	}
	nports := max(len(spec.ServicePorts), 1)
	if hc := spec.HealthCheck; hc != nil {
		if hc.PortIndex < 0 || hc.PortIndex >= nports {
			return fmt.Errorf("marathonsim: app %s: health check port index %d out of range", spec.ID, hc.PortIndex)
		}
		switch strings.ToUpper(hc.Protocol) {
		case "", "HTTP", "TCP":
		default:
			return fmt.Errorf("marathonsim: app %s: health check protocol %q: want HTTP or TCP", spec.ID, hc.Protocol)
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if _, ok := s.apps[spec.ID]; ok {
		return fmt.Errorf("marathonsim: %w: %s", ErrAppExists, spec.ID)
	}
	now := time.Now()
	a := &app{
		id:               spec.ID,
		spec:             spec,
		instances:        spec.Instances,
		version:          now,
		lastConfigChange: now,
	}
	a.servicePorts = make([]int, nports)
	copy(a.servicePorts, spec.ServicePorts)
	for i, p := range a.servicePorts {
		if p == 0 {
			if a.servicePorts[i] = s.freeServicePortLocked(a); a.servicePorts[i] == 0 {
				return fmt.Errorf("marathonsim: app %s: no free service port in %d-%d", spec.ID, localPortMin, localPortMax)
			}
		}
	}
	s.apps[a.id] = a

	q := s.quiet()
	s.apiPostLocked(q, a, "/v2/apps")
	s.groupChangeLocked(q, now)
	var err error
	p := s.newPlan(now, [2]string{"StartApplication", a.id}, [2]string{"ScaleApplication", a.id})
	s.deployLocked(q, p, func(step int) {
		if step == 1 && err == nil {
			err = s.scaleToLocked(q, a)
		}
	})
	return err
}

// freeServicePortLocked is Marathon's AssignDynamicServiceLogic: the lowest
// port in [local_port_min, local_port_max] no app uses (§3.1); 0 when full.
func (s *Server) freeServicePortLocked(self *app) int {
	used := make(map[int]bool)
	for _, a := range s.apps {
		for _, p := range a.servicePorts {
			used[p] = true
		}
	}
	for _, p := range self.servicePorts {
		used[p] = true
	}
	for p := localPortMin; p <= localPortMax; p++ {
		if !used[p] {
			return p
		}
	}
	return 0
}

// scaleToLocked launches or kills tasks until a has a.instances of them.
// Scaling down kills the youngest first (killSelection YOUNGEST_FIRST).
func (s *Server) scaleToLocked(quiet bool, a *app) error {
	for len(a.tasks) > a.instances {
		t := a.tasks[len(a.tasks)-1]
		s.stopProcessLocked(t, false)
		s.endTaskLocked(quiet, t, "TASK_KILLED", "")
	}
	a.reuse = nil
	for len(a.tasks) < a.instances {
		if err := s.launchLocked(quiet, a, nil); err != nil {
			return err
		}
	}
	return nil
}

// Scale sets an app's instance count and deploys the change.
func (s *Server) Scale(appID string, n int) error {
	if n < 0 {
		return fmt.Errorf("marathonsim: scaling %s: negative instances", appID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.appLocked(appID)
	if err != nil {
		return err
	}
	now := time.Now()
	a.instances = n
	a.version = now
	q := s.quiet()
	s.apiPostLocked(q, a, "/v2/apps"+a.id)
	s.groupChangeLocked(q, now)
	p := s.newPlan(now, [2]string{"ScaleApplication", a.id})
	s.deployLocked(q, p, func(int) { err = s.scaleToLocked(q, a) })
	return err
}

// UpdateApp replaces an app's definition with spec (same ID), as PUT
// /v2/apps/{id} does: api_post_event with the new definition, a new
// version, and a RestartApplication deployment that starts spec.Instances
// new tasks before it kills the old ones (upgradeStrategy
// minimumHealthCapacity 1). It is how labels, ports and health checks
// change live. A 0 service port keeps the old one at that index, or is
// assigned as in CreateApp.
func (s *Server) UpdateApp(spec AppSpec) error {
	if spec.Instances < 0 {
		return fmt.Errorf("marathonsim: app %s: negative instances", spec.ID)
	}
	if spec.Run == nil {
		spec.Run = HTTPHello()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.appLocked(spec.ID)
	if err != nil {
		return err
	}
	spec.ID = a.id
	ports := make([]int, max(len(spec.ServicePorts), 1))
	copy(ports, spec.ServicePorts)
	for i, p := range ports {
		switch {
		case p != 0:
		case i < len(a.servicePorts):
			ports[i] = a.servicePorts[i]
		default:
			if ports[i] = s.freeServicePortLocked(a); ports[i] == 0 {
				return fmt.Errorf("marathonsim: app %s: no free service port in %d-%d", a.id, localPortMin, localPortMax)
			}
		}
	}
	if hc := spec.HealthCheck; hc != nil && (hc.PortIndex < 0 || hc.PortIndex >= len(ports)) {
		return fmt.Errorf("marathonsim: app %s: health check port index %d out of range", a.id, hc.PortIndex)
	}
	now := time.Now()
	a.spec, a.servicePorts, a.instances = spec, ports, spec.Instances
	a.version, a.lastConfigChange = now, now
	q := s.quiet()
	s.apiPostLocked(q, a, "/v2/apps"+a.id)
	s.groupChangeLocked(q, now)
	p := s.newPlan(now, [2]string{"RestartApplication", a.id})
	s.deployLocked(q, p, func(int) {
		old := slices.Clone(a.tasks)
		for range a.instances {
			if err == nil {
				err = s.launchLocked(q, a, nil)
			}
		}
		for _, t := range old {
			s.stopProcessLocked(t, false)
			s.endTaskLocked(q, t, "TASK_KILLED", "")
		}
		a.reuse = nil
	})
	return err
}

// DeleteApp removes an app: its tasks are killed (TASK_KILLED) after
// app_terminated_event, as the StopApplication step does.
func (s *Server) DeleteApp(appID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.appLocked(appID)
	if err != nil {
		return err
	}
	delete(s.apps, a.id)
	now := time.Now()
	q := s.quiet()
	s.groupChangeLocked(q, now)
	p := s.newPlan(now, [2]string{"StopApplication", a.id})
	s.deployLocked(q, p, func(int) {
		s.emitLocked(q, "app_terminated_event", obj{
			{"appId", a.id},
			{"eventType", "app_terminated_event"},
			{"timestamp", stamp(time.Now())},
		})
		for len(a.tasks) > 0 {
			t := a.tasks[0]
			s.stopProcessLocked(t, false)
			s.endTaskLocked(q, t, "TASK_KILLED", "")
		}
		a.reuse = nil
	})
	return nil
}

// KillTask kills one task as opt says; see KillOptions.
func (s *Server) KillTask(taskID string, opt KillOptions) error {
	if opt.State != "" && !isTerminal(opt.State) {
		return fmt.Errorf("marathonsim: killing %s: %s is not a terminal state", taskID, opt.State)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.taskLocked(taskID)
	if err != nil {
		return err
	}
	if t.killOpt != nil {
		return nil // already being killed: Marathon ignores a second kill
	}
	opt.quiet = s.quiet()
	if opt.Abrupt {
		s.stopProcessLocked(t, true)
		return nil
	}
	if opt.NoRestart && t.app.instances > 0 {
		t.app.instances--
	}
	switch {
	case opt.Grace > 0 && !t.stopped:
		t.killOpt = &opt
		t.state = "TASK_KILLING"
		s.emitStatusLocked(opt.quiet, t, "TASK_KILLING", "")
		s.afterLocked(opt.Grace, func() {
			if !t.gone {
				s.finishKillLocked(t)
			}
		})
	default:
		t.killOpt = &opt
		s.finishKillLocked(t)
	}
	return nil
}

// SetHealth sets the result of a task's health check, as if Marathon's check
// had just run, and emits health_status_changed_event when alive flips.
// The app must have a HealthCheck.
func (s *Server) SetHealth(taskID string, alive bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.taskLocked(taskID)
	if err != nil {
		return err
	}
	if t.app.spec.HealthCheck == nil {
		return fmt.Errorf("marathonsim: app %s has no health check", t.app.id)
	}
	cause := ""
	if !alive {
		cause = "503 Service Unavailable"
	}
	s.setHealthLocked(s.quiet(), t, alive, cause)
	return nil
}

// ForgetHealth drops every task's health check results without an event,
// as a Marathon leader failover does: health state lives in the leader's
// memory only, so the new leader lists "healthCheckResults":[] for every
// task until its own checks run (§3.1 "Health entry", §8 gotcha 8).
// SetHealth records new results afterwards.
func (s *Server) ForgetHealth() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.apps {
		for _, t := range a.tasks {
			t.health = nil
		}
	}
}

// SetTaskState reports a non-terminal state change of a live task without
// touching its process, e.g. TASK_UNREACHABLE when its agent is partitioned
// and TASK_RUNNING when it comes back (a fresh status_update_event, §4).
// TASK_LOST is reported raw in the event and as TASK_UNREACHABLE in the REST
// API from 1.4 (§3.1). Terminal states go through KillTask.
func (s *Server) SetTaskState(taskID, state string) error {
	switch state {
	case "TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_UNREACHABLE", "TASK_LOST":
	default:
		return fmt.Errorf("marathonsim: SetTaskState %s: want a non-terminal state, not %q", taskID, state)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.taskLocked(taskID)
	if err != nil {
		return err
	}
	t.state = state
	if state == "TASK_LOST" && s.feat.instanceEvents {
		t.state = "TASK_UNREACHABLE"
	}
	s.emitStatusLocked(s.quiet(), t, state, "")
	return nil
}

// Tasks returns the live tasks of an app (every app when appID is ""), in
// launch order. A task killed with Abrupt stays listed, as in Marathon.
func (s *Server) Tasks(appID string) []TaskInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []TaskInfo
	for _, a := range s.sortedAppsLocked() {
		if appID != "" && a.id != canonicalID(appID) {
			continue
		}
		for _, t := range a.tasks {
			ti := TaskInfo{
				ID:         t.id,
				AppID:      a.id,
				InstanceID: t.instanceID,
				Host:       taskHost,
				Ports:      slices.Clone(t.ports),
				State:      t.state,
			}
			if t.health != nil {
				alive := t.health.alive
				ti.Healthy = &alive
			}
			out = append(out, ti)
		}
	}
	return out
}

func (s *Server) appLocked(appID string) (*app, error) {
	if s.closed {
		return nil, ErrClosed
	}
	a, ok := s.apps[canonicalID(appID)]
	if !ok {
		return nil, fmt.Errorf("marathonsim: %w: %s", ErrUnknownApp, canonicalID(appID))
	}
	return a, nil
}

func (s *Server) taskLocked(taskID string) (*task, error) {
	if s.closed {
		return nil, ErrClosed
	}
	for _, a := range s.apps {
		for _, t := range a.tasks {
			if t.id == taskID {
				return t, nil
			}
		}
	}
	return nil, fmt.Errorf("marathonsim: %w: %s", ErrUnknownTask, taskID)
}

func (s *Server) sortedAppsLocked() []*app {
	apps := make([]*app, 0, len(s.apps))
	for _, a := range s.apps {
		apps = append(apps, a)
	}
	slices.SortFunc(apps, func(x, y *app) int { return strings.Compare(x.id, y.id) })
	return apps
}

func isTerminal(state string) bool {
	switch state {
	case "TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_LOST",
		"TASK_DROPPED", "TASK_GONE", "TASK_GONE_BY_OPERATOR", "TASK_UNKNOWN":
		return true
	}
	return false
}
