package marathonsim

import (
	"strings"
)

// appView says which parts of an app's JSON a response carries.
type appView struct {
	counts bool // tasksStaged..tasksUnhealthy and deployments (always on /v2/apps)
	tasks  bool // the tasks array (embed=apps.tasks, and always on /v2/apps/{id})
}

// appJSONLocked renders an app in the shape of the configured version:
// 0.8 (ports, no networks) or 1.x (networks, portDefinitions), §3.1.
func (s *Server) appJSONLocked(a *app, view appView) obj {
	if s.feat.legacyApps {
		return s.legacyAppJSONLocked(a, view)
	}
	f := s.feat
	o := obj{{"id", a.id}, {"backoffFactor", 1.15}, {"backoffSeconds", 1}}
	if a.spec.Cmd != "" {
		o = o.add("cmd", a.spec.Cmd)
	}
	o = o.add("cpus", 0.1).add("disk", 0).add("executor", "")
	if hcs := s.healthChecksJSON(a); len(hcs) > 0 || !f.omitEmpty {
		o = o.add("healthChecks", hcs)
	}
	o = o.add("instances", a.instances).
		add("labels", labelsOf(a)).
		add("maxLaunchDelaySeconds", 300).
		add("mem", 128).
		add("gpus", 0)
	if f.networks {
		o = o.add("networks", []obj{{{"mode", "host"}}})
	}
	defs := make([]obj, len(a.servicePorts))
	for i, p := range a.servicePorts {
		d := obj{{"port", p}, {"protocol", "tcp"}}
		if i < len(a.spec.PortNames) && a.spec.PortNames[i] != "" {
			d = d.add("name", a.spec.PortNames[i])
		}
		defs[i] = d.add("labels", map[string]string{})
	}
	o = o.add("portDefinitions", defs)
	if f.portsField {
		// Up to 1.4 apps also carry the service ports as "ports" and an
		// ipAddress that is null without IP-per-task.
		o = o.add("ports", a.servicePorts).add("ipAddress", nil)
	}
	o = o.add("requirePorts", false).
		add("upgradeStrategy", obj{{"maximumOverCapacity", 1}, {"minimumHealthCapacity", 1}}).
		add("version", stamp(a.version)).
		add("versionInfo", obj{{"lastScalingAt", stamp(a.version)}, {"lastConfigChangeAt", stamp(a.lastConfigChange)}})
	if f.networks {
		o = o.add("killSelection", "YOUNGEST_FIRST")
	}
	if f.unreachable {
		o = o.add("unreachableStrategy", obj{{"inactiveAfterSeconds", 0}, {"expungeAfterSeconds", 0}})
	}
	if f.roles {
		o = o.add("role", "*")
	}
	return s.appTailLocked(o, a, view)
}

// appTailLocked appends the counts, deployments and tasks of view.
func (s *Server) appTailLocked(o obj, a *app, view appView) obj {
	if view.counts {
		var staged, running, healthy, unhealthy int
		for _, t := range a.tasks {
			switch t.state {
			case "TASK_STAGING", "TASK_STARTING":
				staged++
			case "TASK_RUNNING":
				running++
			}
			if t.health != nil {
				if t.health.alive {
					healthy++
				} else {
					unhealthy++
				}
			}
		}
		// Deployments finish before the simulator answers, so none is ever
		// in progress.
		o = o.add("tasksStaged", staged).
			add("tasksRunning", running).
			add("tasksHealthy", healthy).
			add("tasksUnhealthy", unhealthy).
			add("deployments", []obj{})
	}
	if view.tasks {
		tasks := make([]obj, 0, len(a.tasks))
		for _, t := range a.tasks {
			tasks = append(tasks, s.taskJSONLocked(t, false))
		}
		o = o.add("tasks", tasks)
	}
	return o
}

// legacyAppJSONLocked is the Marathon 0.8 app: service ports in "ports",
// nulls where later versions omit, no networks or portDefinitions.
func (s *Server) legacyAppJSONLocked(a *app, view appView) obj {
	o := obj{{"id", a.id}}
	if a.spec.Cmd != "" {
		o = o.add("cmd", a.spec.Cmd)
	} else {
		o = o.add("cmd", nil)
	}
	o = o.add("args", nil).
		add("user", nil).
		add("env", map[string]string{}).
		add("instances", a.instances).
		add("cpus", 0.1).
		add("mem", 128).
		add("disk", 0).
		add("executor", "").
		add("constraints", []any{}).
		add("uris", []string{}).
		add("storeUrls", []string{}).
		add("ports", a.servicePorts).
		add("requirePorts", false).
		add("backoffSeconds", 1).
		add("backoffFactor", 1.15).
		add("maxLaunchDelaySeconds", 3600).
		add("container", nil).
		add("healthChecks", s.healthChecksJSON(a)).
		add("dependencies", []string{}).
		add("upgradeStrategy", obj{{"minimumHealthCapacity", 1}, {"maximumOverCapacity", 1}}).
		add("labels", labelsOf(a)).
		add("version", stamp(a.version))
	return s.appTailLocked(o, a, view)
}

func labelsOf(a *app) map[string]string {
	if a.spec.Labels == nil {
		return map[string]string{}
	}
	return a.spec.Labels
}

// healthChecksJSON renders the app's Marathon check with Marathon's defaults
// (grace 300 s, interval 60 s, timeout 20 s, 3 failures).
func (s *Server) healthChecksJSON(a *app) []obj {
	hc := a.spec.HealthCheck
	if hc == nil {
		return []obj{}
	}
	proto := strings.ToUpper(hc.Protocol)
	if proto == "" {
		proto = "TCP"
		if hc.Path != "" {
			proto = "HTTP"
		}
	}
	path := hc.Path
	if path == "" {
		path = "/"
	}
	if s.feat.legacyApps {
		o := obj{}
		if proto == "HTTP" {
			o = o.add("path", path)
		}
		return []obj{o.add("protocol", proto).
			add("portIndex", hc.PortIndex).
			add("command", nil).
			add("gracePeriodSeconds", 300).
			add("intervalSeconds", 60).
			add("timeoutSeconds", 20).
			add("maxConsecutiveFailures", 3)}
	}
	o := obj{{"gracePeriodSeconds", 300}}
	if proto == "HTTP" {
		o = o.add("ignoreHttp1xx", false)
	}
	o = o.add("intervalSeconds", 60).add("maxConsecutiveFailures", 3)
	if proto == "HTTP" {
		o = o.add("path", path)
	}
	o = o.add("portIndex", hc.PortIndex).add("protocol", proto)
	if s.feat.roles {
		o = o.add("ipProtocol", "IPv4")
	}
	return []obj{o.add("timeoutSeconds", 20).add("delaySeconds", 15)}
}

// taskJSONLocked renders a task (§3.1 "Task object"). servicePorts fills the
// app's service ports, as the tasks endpoints do; inside an app it is [].
func (s *Server) taskJSONLocked(t *task, servicePorts bool) obj {
	sp := []int{}
	if servicePorts || s.feat.legacyApps {
		sp = t.app.servicePorts
	}
	if s.feat.legacyApps {
		// 0.8 tasks have no state: only startedAt (null until running) and stagedAt.
		return obj{
			{"appId", t.app.id},
			{"id", t.id},
			{"host", taskHost},
			{"ports", t.portsJSON()},
			{"startedAt", orNull(t.startedAt)},
			{"stagedAt", stamp(t.stagedAt)},
			{"version", stamp(t.version)},
			{"servicePorts", sp},
			{"healthCheckResults", s.healthResultsJSON(t)},
		}
	}
	o := obj{
		{"appId", t.app.id},
		{"healthCheckResults", s.healthResultsJSON(t)},
		{"host", taskHost},
		{"id", t.id},
		{"ipAddresses", taskIPs()},
		{"ports", t.portsJSON()},
		{"servicePorts", sp},
		{"slaveId", t.agent},
		{"state", t.state},
		{"stagedAt", stamp(t.stagedAt)},
	}
	switch {
	case !t.startedAt.IsZero():
		o = o.add("startedAt", stamp(t.startedAt))
	case !s.feat.omitEmpty:
		o = o.add("startedAt", nil)
	}
	o = o.add("version", stamp(t.version)).add("localVolumes", []any{})
	if s.feat.roles {
		o = o.add("role", "*")
	}
	return o
}

// healthResultsJSON is [] until the first result (§3.1 "Health entry").
func (s *Server) healthResultsJSON(t *task) []obj {
	h := t.health
	if h == nil {
		return []obj{}
	}
	f := s.feat
	opt := func(o obj, k string, v any, zero bool) obj {
		switch {
		case !zero:
			return o.add(k, v)
		case !f.omitEmpty:
			return o.add(k, nil) // up to 1.5 missing values are null
		}
		return o
	}
	o := obj{{"alive", h.alive}, {"consecutiveFailures", h.failures}}
	if !f.healthByInst {
		// Up to 1.3 the entry names the task, and comes in the old order.
		o = o.add("firstSuccess", orNull(h.firstSuccess)).
			add("lastFailure", orNull(h.lastFailure)).
			add("lastSuccess", orNull(h.lastSuccess)).
			add("taskId", t.id)
		return []obj{o}
	}
	o = opt(o, "firstSuccess", stampOrZero(h.firstSuccess), h.firstSuccess.IsZero())
	o = o.add("instanceId", t.instanceID)
	o = opt(o, "lastFailure", stampOrZero(h.lastFailure), h.lastFailure.IsZero())
	o = opt(o, "lastFailureCause", h.cause, h.cause == "")
	o = opt(o, "lastSuccess", stampOrZero(h.lastSuccess), h.lastSuccess.IsZero())
	return []obj{o}
}
