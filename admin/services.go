package admin

import (
	"fmt"
	"net/http"
	"net/netip"
	"strconv"

	"github.com/pacer-lb/pacer/discovery"
	healthcheck "github.com/pacer-lb/pacer/health"
	"github.com/pacer-lb/pacer/proxy"
)

// servicesView is the /v1/services body.
type servicesView struct {
	Version   uint64         `json:"table_version"`
	Apps      []appView      `json:"apps"`
	Conflicts []conflictView `json:"conflicts,omitempty"`
	Ports     []portView     `json:"ports"`
	Sources   []sourceHealth `json:"sources"`
}

type appView struct {
	ID       string                `json:"id"`
	Source   string                `json:"source"`
	Version  string                `json:"version,omitempty"`
	Group    string                `json:"group,omitempty"`
	Problem  string                `json:"problem,omitempty"`
	Services []serviceView         `json:"services"`
	Tasks    []discovery.TaskState `json:"tasks"`
}

type serviceView struct {
	PortIndex   int      `json:"port_index"`
	Name        string   `json:"dns_name"`
	PortName    string   `json:"port_name,omitempty"`
	ServicePort int      `json:"service_port"`
	Protocol    string   `json:"protocol"`
	Mode        string   `json:"mode"`
	Balance     string   `json:"balance"`
	VHosts      []string `json:"vhosts,omitempty"`
	Path        string   `json:"path,omitempty"`
	// Serving says whether this service owns its service port (another app
	// may win a conflict) and pacer has it open.
	Serving bool   `json:"serving"`
	Note    string `json:"note,omitempty"`
	// Panic is set when most backends fail pacer's health checks and all
	// stay in rotation (discovery.PanicThreshold).
	Panic bool `json:"panic,omitempty"`
	// Backends are the backends in rotation; OutOfRotation those the
	// source lists but pacer's health checker ejected.
	Backends      []backendView `json:"backends"`
	OutOfRotation []backendView `json:"out_of_rotation,omitempty"`
}

type backendView struct {
	TaskID string `json:"task_id"`
	Host   string `json:"host"`
	Addr   string `json:"addr"`
	// Health is pacer's verdict on the backend (nil without a checker).
	Health *healthcheck.Verdict `json:"health,omitempty"`
}

type conflictView struct {
	Port   int      `json:"port"`
	Winner string   `json:"winner"`
	Losers []string `json:"losers"`
}

type portView struct {
	proxy.PortStatus
	App string `json:"app,omitempty"`
}

func keyString(k discovery.ServiceKey) string {
	return k.App + "#" + strconv.Itoa(k.PortIndex)
}

func (s *Server) servicesReport() servicesView {
	snap := s.deps.Table.Snapshot()
	// By port and plane: during a mode change's drain both planes report
	// the port, and a service is served by its own mode's.
	type planePort struct {
		port  int
		plane string
	}
	ports := map[planePort]proxy.PortStatus{}
	var portList []proxy.PortStatus
	if s.deps.Ports != nil {
		portList = s.deps.Ports()
		for _, p := range portList {
			ports[planePort{p.Port, p.Plane}] = p
		}
	}
	v := servicesView{Version: snap.Version(), Apps: []appView{}, Ports: []portView{}}
	verdicts := map[netip.AddrPort]*healthcheck.Verdict{}
	if s.deps.Health != nil {
		vs := s.deps.Health()
		for i := range vs {
			verdicts[vs[i].Addr] = &vs[i]
		}
	}
	raw := map[string]*discovery.App{}
	for _, a := range snap.RawApps() {
		raw[a.ID] = a
	}
	for _, a := range snap.Apps() {
		av := appView{ID: a.ID, Source: a.Source, Version: a.Version, Group: a.Group, Problem: a.Problem, Services: []serviceView{}, Tasks: a.Tasks}
		if av.Tasks == nil {
			av.Tasks = []discovery.TaskState{}
		}
		for i, svc := range a.Services {
			sv := serviceView{
				PortIndex: svc.Key.PortIndex, Name: svc.Name, PortName: svc.PortName, ServicePort: svc.ServicePort,
				Protocol: svc.Protocol.String(), Mode: svc.Mode.String(), Balance: svc.Balance.String(),
				VHosts: svc.VHosts, Path: svc.PathSpec(), Backends: []backendView{},
			}
			owner := snap.Service(svc.ServicePort)
			plane := "tcp"
			if svc.Mode == discovery.ModeHTTP {
				plane = "http"
			}
			ps, bound := ports[planePort{svc.ServicePort, plane}]
			switch {
			case svc.ServicePort == 0:
				sv.Note = "no service port"
			case owner != svc:
				sv.Note = "service port " + strconv.Itoa(svc.ServicePort) + " is taken by " + keyString(owner.Key)
			case !svc.Protocol.HasTCP():
				sv.Note = "UDP: not proxied (DNS answers it)"
			case !bound && s.deps.Ports != nil:
				sv.Note = "service port outside --ports; not bound"
			case bound && ps.Error != "":
				sv.Note = ps.Error
			case bound:
				sv.Serving = ps.Listening
			}
			if kept := snap.EjectedKept(svc); kept > 0 {
				sv.Panic = true
				if sv.Note == "" {
					sv.Note = fmt.Sprintf("%d of %d backends fail pacer's health checks; all kept in rotation (panic threshold)", kept, len(svc.Backends))
				}
			}
			in := map[netip.AddrPort]bool{}
			for _, b := range svc.Backends {
				in[b.Addr] = true
				sv.Backends = append(sv.Backends, backendView{TaskID: b.TaskID, Host: b.Host, Addr: b.Addr.String(), Health: verdicts[b.Addr]})
			}
			// The overlay keeps the order of services: the raw app's i-th
			// service is this one before ejections.
			if r := raw[a.ID]; r != nil && i < len(r.Services) && len(r.Services[i].Backends) != len(svc.Backends) {
				for _, b := range r.Services[i].Backends {
					if !in[b.Addr] {
						sv.OutOfRotation = append(sv.OutOfRotation, backendView{TaskID: b.TaskID, Host: b.Host, Addr: b.Addr.String(), Health: verdicts[b.Addr]})
					}
				}
			}
			av.Services = append(av.Services, sv)
		}
		v.Apps = append(v.Apps, av)
	}
	for _, c := range snap.Conflicts() {
		cv := conflictView{Port: c.Port, Winner: keyString(c.Winner)}
		for _, l := range c.Losers {
			cv.Losers = append(cv.Losers, keyString(l))
		}
		v.Conflicts = append(v.Conflicts, cv)
	}
	for _, p := range portList {
		pv := portView{PortStatus: p}
		if svc := snap.Service(p.Port); svc != nil {
			pv.App = svc.Key.App
		}
		v.Ports = append(v.Ports, pv)
	}
	_, h := s.healthReport()
	v.Sources = h.Sources
	return v
}

func (s *Server) services(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.servicesReport())
}
