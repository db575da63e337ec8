package marathon

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// The types below mirror Marathon's app JSON from 0.8 to 1.10, keeping only
// what routing needs. Every field is optional: Marathon up to 1.5 writes null
// for a missing value, 1.6+ omits it, and encoding/json leaves the zero value
// for both. Unknown fields are ignored.

// appDef is one app as GET /v2/apps?embed=apps.tasks returns it.
type appDef struct {
	ID      string            `json:"id"`
	Version string            `json:"version"`
	Labels  map[string]string `json:"labels"`

	// Ports are the service ports (Marathon 0.8 to 1.4).
	Ports []int `json:"ports"`
	// PortDefinitions are host-mode ports (0.15+; 1.5+ only in host mode).
	PortDefinitions []portDefinition `json:"portDefinitions"`
	Container       *container       `json:"container"`
	// Networks is the 1.5+ networking mode; the last entry's mode wins, as in
	// marathon-lb's utils.py.
	Networks []network `json:"networks"`
	// IPAddress is the up-to-1.4 IP-per-task definition (null otherwise).
	IPAddress    *ipAddressDef `json:"ipAddress"`
	HealthChecks []healthCheck `json:"healthChecks"`

	Tasks     []*task          `json:"tasks"`
	Readiness []readinessCheck `json:"readinessCheckResults"`
}

type portDefinition struct {
	Port     int    `json:"port"`
	Protocol string `json:"protocol"`
	Name     string `json:"name"`
}

type portMapping struct {
	ContainerPort int    `json:"containerPort"`
	HostPort      *int   `json:"hostPort"`
	ServicePort   int    `json:"servicePort"`
	Protocol      string `json:"protocol"`
	Name          string `json:"name"`
}

type container struct {
	Type         string        `json:"type"`
	Docker       *docker       `json:"docker"`
	PortMappings []portMapping `json:"portMappings"` // 1.5+
}

type docker struct {
	Network      string        `json:"network"`      // HOST, BRIDGE, USER (up to 1.4)
	PortMappings []portMapping `json:"portMappings"` // up to 1.4
}

type network struct {
	Mode string `json:"mode"`
	Name string `json:"name"`
}

type ipAddressDef struct {
	Discovery *struct {
		Ports []struct {
			Number   int    `json:"number"`
			Name     string `json:"name"`
			Protocol string `json:"protocol"`
		} `json:"ports"`
	} `json:"discovery"`
}

type healthCheck struct {
	Protocol  string `json:"protocol"`
	PortIndex *int   `json:"portIndex"`
	Port      *int   `json:"port"`
	Path      string `json:"path"` // HTTP(S) checks; read by checks.go
}

type readinessCheck struct {
	TaskID string `json:"taskId"`
	Ready  bool   `json:"ready"`
}

// task is one task of an app, from a snapshot or built from events.
type task struct {
	ID          string      `json:"id"`
	AppID       string      `json:"appId"`
	Host        string      `json:"host"`
	Ports       []int       `json:"ports"`
	IPAddresses []ipAddress `json:"ipAddresses"`
	// State is absent before Marathon 0.11 (then: running once startedAt is set).
	State     string  `json:"state"`
	StartedAt *string `json:"startedAt"`
	Version   string  `json:"version"`
	// HealthCheckResults carries one entry per check that has produced a
	// result; entries name the task by taskId (up to 1.3) or instanceId
	// (1.4+), which does not matter here because they are nested in the task.
	HealthCheckResults []healthResult `json:"healthCheckResults"`
}

type ipAddress struct {
	IPAddress string `json:"ipAddress"`
	Protocol  string `json:"protocol"`
}

type healthResult struct {
	Alive bool `json:"alive"`
	// The task the result is about, by instance id (1.4+) or task id (up
	// to 1.3); informational, since results are nested in their task.
	InstanceID string `json:"instanceId,omitempty"`
	TaskID     string `json:"taskId,omitempty"`
}

// appList is GET /v2/apps. Groups is not part of that response; it lets the
// same decoder read a /v2/groups tree (and the benchmark group fixtures).
type appList struct {
	Apps   *[]json.RawMessage `json:"apps"`
	Groups []json.RawMessage  `json:"groups"`
}

// decodedApp is one app from a response: the definition, or the reason it
// could not be understood (with whatever id could be recovered).
type decodedApp struct {
	ID      string
	Def     *appDef
	Problem string
}

// errNoApps says a snapshot lacks the "apps" array: a proxy's error page or a
// truncated body must never be taken for "Marathon has no apps".
var errNoApps = errors.New(`response has no "apps" array`)

// decodeApps decodes GET /v2/apps (or a group tree). The response as a whole
// must be valid JSON with an "apps" array; each app is then decoded on its own
// so that one app Marathon's JSON surprises us with becomes a decodedApp with
// a Problem instead of failing the others. Apps whose id cannot be read are
// dropped and counted in skipped.
func decodeApps(data []byte) (apps []decodedApp, skipped int, err error) {
	var l appList
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, 0, fmt.Errorf("decoding apps: %w", err)
	}
	if l.Apps == nil && l.Groups == nil {
		return nil, 0, errNoApps
	}
	var walk func(l *appList, depth int) error
	walk = func(l *appList, depth int) error {
		if l.Apps != nil {
			for _, raw := range *l.Apps {
				d := decodeOneApp(raw)
				if d.ID == "" {
					skipped++
					continue
				}
				apps = append(apps, d)
			}
		}
		if depth > 64 {
			return errors.New("decoding apps: group tree deeper than 64")
		}
		for _, g := range l.Groups {
			var sub appList
			if err := json.Unmarshal(g, &sub); err != nil {
				return fmt.Errorf("decoding group: %w", err)
			}
			if err := walk(&sub, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(&l, 0); err != nil {
		return nil, 0, err
	}
	return apps, skipped, nil
}

// decodeAppResponse decodes GET /v2/apps/{id}: {"app":{...}}.
func decodeAppResponse(data []byte) (decodedApp, error) {
	var r struct {
		App json.RawMessage `json:"app"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return decodedApp{}, fmt.Errorf("decoding app: %w", err)
	}
	if len(r.App) == 0 || bytes.Equal(r.App, []byte("null")) {
		return decodedApp{}, errors.New(`decoding app: response has no "app" object`)
	}
	d := decodeOneApp(r.App)
	if d.ID == "" {
		return decodedApp{}, fmt.Errorf("decoding app: %s", d.Problem)
	}
	return d, nil
}

// decodeProblem begins the Problem of an app whose JSON did not decode,
// which the source counts as a decode error (a label it cannot read is not).
const decodeProblem = "cannot decode app: "

// decodeOneApp decodes one app. A value that does not decode still yields its
// id when the id itself is readable, so the app is shown with its Problem.
func decodeOneApp(raw json.RawMessage) decodedApp {
	var a appDef
	if err := json.Unmarshal(raw, &a); err != nil {
		var idOnly struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(raw, &idOnly)
		return decodedApp{ID: normalizeID(idOnly.ID), Problem: decodeProblem + err.Error()}
	}
	a.ID = normalizeID(a.ID)
	if a.ID == "" {
		return decodedApp{Problem: "app without an id"}
	}
	a.Tasks = dropNilTasks(a.Tasks)
	return decodedApp{ID: a.ID, Def: &a}
}

// dropNilTasks removes null entries ("tasks":[null]) and tasks without an id,
// which could never be matched with an event; ts is returned as is when it
// has none.
func dropNilTasks(ts []*task) []*task {
	for i, t := range ts {
		if t == nil || t.ID == "" {
			out := append([]*task(nil), ts[:i]...)
			for _, t := range ts[i+1:] {
				if t != nil && t.ID != "" {
					out = append(out, t)
				}
			}
			return out
		}
	}
	return ts
}

// normalizeID makes app ids absolute: Marathon always answers with a leading
// slash, but events from some versions and hand-written fixtures do not.
func normalizeID(id string) string {
	if id == "" || id[0] == '/' {
		return id
	}
	return "/" + id
}
