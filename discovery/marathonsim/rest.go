package marathonsim

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// route serves a leader's endpoints (marathon-api.md §3).
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	leader := "http://" + s.hostPortLocked()
	s.mu.Unlock()
	w.Header().Set("X-Marathon-Leader", leader)

	p := r.URL.Path
	switch {
	case p == "/v2/events":
		s.serveEvents(w, r)
	case p == "/ping":
		onlyGET(w, r, s.servePing)
	case p == "/v2/info":
		onlyGET(w, r, s.serveInfo)
	case p == "/v2/leader":
		onlyGET(w, r, s.serveLeader)
	case p == "/v2/apps" || p == "/v2/apps/":
		onlyGET(w, r, s.serveApps)
	case strings.HasPrefix(p, "/v2/apps/"):
		s.serveApp(w, r, strings.TrimPrefix(p, "/v2/apps"))
	case p == "/v2/tasks":
		onlyGET(w, r, s.serveTasks)
	default:
		// Marathon's NotFoundException mapper answers JSON.
		writeJSON(w, http.StatusNotFound, obj{{"message", "HTTP 404 Not Found"}})
	}
}

func onlyGET(w http.ResponseWriter, r *http.Request, h http.HandlerFunc) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeJSON(w, http.StatusMethodNotAllowed, obj{{"message", "HTTP 405 Method Not Allowed"}})
		return
	}
	h(w, r)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body := marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

// servePing is content-negotiated: text/plain "pong" by default, the JSON
// string "pong" for application/json, 204 when nothing matches (§3.4).
func (s *Server) servePing(w http.ResponseWriter, r *http.Request) {
	accept := strings.Join(r.Header.Values("Accept"), ",")
	if strings.TrimSpace(accept) == "" {
		accept = "*/*"
	}
	for _, m := range strings.Split(accept, ",") {
		m, _, _ = strings.Cut(m, ";")
		switch strings.TrimSpace(m) {
		case "*/*", "text/*", "text/plain":
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "pong")
			return
		case "application/*", "application/json":
			writeJSON(w, http.StatusOK, "pong")
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) serveInfo(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	hp := s.hostPortLocked()
	s.mu.Unlock()
	host, portStr, _ := net.SplitHostPort(hp)
	port, _ := strconv.Atoi(portStr)
	writeJSON(w, http.StatusOK, obj{
		{"name", "marathon"},
		{"version", s.cfg.Version},
		{"buildref", "marathonsim"},
		{"elected", true},
		{"leader", hp},
		{"frameworkId", s.frameworkID},
		{"marathon_config", obj{
			{"checkpoint", true},
			{"executor", "//cmd"},
			{"failover_timeout", 604800},
			{"framework_name", "marathon"},
			{"ha", true},
			{"hostname", host},
			{"leader_proxy_connection_timeout_ms", 5000},
			{"leader_proxy_read_timeout_ms", 10000},
			{"local_port_max", localPortMax},
			{"local_port_min", localPortMin},
			{"master", "zk://127.0.0.1:2181/mesos"},
			{"mesos_leader_ui_url", "http://127.0.0.1:5050/"},
			{"mesos_role", "*"},
			{"mesos_user", "root"},
			{"webui_url", nil},
			{"features", []string{}},
		}},
		{"zookeeper_config", obj{
			{"zk", "zk://127.0.0.1:2181/marathon"},
			{"zk_timeout", 10000},
			{"zk_session_timeout", 10000},
			{"zk_max_versions", 50},
		}},
		{"http_config", obj{{"http_port", port}, {"https_port", 8443}}},
	})
}

func (s *Server) serveLeader(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	hp := s.hostPortLocked()
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, obj{{"leader", hp}})
}

// embedsTasks reads /v2/apps's embed parameters: "tasks" and the deprecated
// "failures" add tasks, with any of the prefixes apps., app., group.apps. (§3.1).
func embedsTasks(q url.Values) bool {
	for _, e := range q["embed"] {
		for _, prefix := range []string{"group.apps.", "apps.", "app."} {
			if strings.HasPrefix(e, prefix) {
				e = strings.TrimPrefix(e, prefix)
				break
			}
		}
		if e == "tasks" || e == "failures" {
			return true
		}
	}
	return false
}

func (s *Server) serveApps(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	view := appView{counts: true, tasks: embedsTasks(q)}
	idFilter := q.Get("id")
	s.mu.Lock()
	apps := []obj{}
	for _, a := range s.sortedAppsLocked() {
		if idFilter == "" || strings.Contains(a.id, idFilter) {
			apps = append(apps, s.appJSONLocked(a, view))
		}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, obj{{"apps", apps}})
}

// serveApp handles /v2/apps/{id}, /v2/apps/{id}/tasks, /v2/apps/{group}/*
// and the write endpoints `lb demo` users reach with curl: PUT
// {"instances":n}, DELETE of an app or of one task.
func (s *Server) serveApp(w http.ResponseWriter, r *http.Request, rest string) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodDelete:
		s.serveDelete(w, r, rest)
		return
	case http.MethodPut:
		s.serveScale(w, r, rest)
		return
	default:
		writeJSON(w, http.StatusMethodNotAllowed, obj{{"message", "HTTP 405 Method Not Allowed"}})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case strings.HasSuffix(rest, "/*"):
		group := canonicalID(strings.TrimSuffix(rest, "/*"))
		view := appView{counts: true, tasks: embedsTasks(r.URL.Query())}
		apps := []obj{}
		for _, a := range s.sortedAppsLocked() {
			if strings.HasPrefix(a.id, group+"/") {
				apps = append(apps, s.appJSONLocked(a, view))
			}
		}
		writeJSON(w, http.StatusOK, obj{{"*", apps}}) // sic (§3.1)
	case strings.HasSuffix(rest, "/tasks"):
		id := canonicalID(strings.TrimSuffix(rest, "/tasks"))
		a, ok := s.apps[id]
		if !ok {
			writeJSON(w, http.StatusNotFound, noApp(id))
			return
		}
		tasks := make([]obj, 0, len(a.tasks))
		for _, t := range a.tasks {
			tasks = append(tasks, s.taskJSONLocked(t, true))
		}
		writeJSON(w, http.StatusOK, obj{{"tasks", tasks}})
	default:
		id := canonicalID(rest)
		a, ok := s.apps[id]
		if !ok {
			writeJSON(w, http.StatusNotFound, noApp(id))
			return
		}
		writeJSON(w, http.StatusOK, obj{{"app", s.appJSONLocked(a, appView{counts: true, tasks: true})}})
	}
}

func noApp(id string) obj { return obj{{"message", "App '" + id + "' does not exist"}} }

// serveDelete is DELETE /v2/apps/{id} and DELETE /v2/apps/{id}/tasks/{task}[?scale=true].
func (s *Server) serveDelete(w http.ResponseWriter, r *http.Request, rest string) {
	if appPart, taskID, ok := strings.Cut(rest, "/tasks/"); ok {
		scale := r.URL.Query().Get("scale") == "true"
		s.mu.Lock()
		t, err := s.taskLocked(taskID)
		var body obj
		if err == nil {
			body = obj{{"task", s.taskJSONLocked(t, true)}}
		}
		s.mu.Unlock()
		if err == nil {
			err = s.KillTask(taskID, KillOptions{NoRestart: scale})
		}
		if err != nil {
			writeJSON(w, http.StatusNotFound, obj{{"message", "Task '" + taskID + "' does not exist"}})
			return
		}
		if scale {
			body = s.deploymentRef(appPart)
		}
		writeJSON(w, http.StatusOK, body)
		return
	}
	id := canonicalID(rest)
	if err := s.DeleteApp(id); err != nil {
		writeJSON(w, http.StatusNotFound, noApp(id))
		return
	}
	writeJSON(w, http.StatusOK, s.deploymentRef(id))
}

// serveScale is PUT /v2/apps/{id} with {"instances": n}; other fields are ignored.
func (s *Server) serveScale(w http.ResponseWriter, r *http.Request, rest string) {
	var body struct {
		Instances *int `json:"instances"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body); err != nil || body.Instances == nil {
		writeJSON(w, http.StatusUnprocessableEntity, obj{{"message", "Object is not valid"},
			{"details", []obj{{{"path", "/instances"}, {"errors", []string{"the simulator only changes instances"}}}}}})
		return
	}
	id := canonicalID(rest)
	if err := s.Scale(id, *body.Instances); err != nil {
		if errors.Is(err, ErrUnknownApp) {
			writeJSON(w, http.StatusNotFound, noApp(id))
			return
		}
		writeJSON(w, http.StatusUnprocessableEntity, obj{{"message", err.Error()}})
		return
	}
	writeJSON(w, http.StatusOK, s.deploymentRef(id))
}

// deploymentRef is the {"version","deploymentId"} answer of a write. The
// simulator's deployments finish before the answer, so the id is only shaped
// like Marathon's.
func (s *Server) deploymentRef(appID string) obj {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := obj{{"deploymentId", newUUID()}}
	if a, ok := s.apps[canonicalID(appID)]; ok {
		return append(obj{{"version", stamp(a.version)}}, v...)
	}
	return v
}

func (s *Server) serveTasks(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	want := map[string]bool{}
	for _, st := range append(q["status"], q["status[]"]...) {
		switch st {
		case "running":
			want["TASK_RUNNING"] = true
		case "staging":
			want["TASK_STAGING"] = true
		}
	}
	s.mu.Lock()
	tasks := []obj{}
	for _, a := range s.sortedAppsLocked() {
		for _, t := range a.tasks {
			if len(want) == 0 || want[t.state] {
				tasks = append(tasks, s.taskJSONLocked(t, true))
			}
		}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, obj{{"tasks", tasks}})
}
