package marathon

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/pacer-lb/pacer/discovery"
)

// netMode is how an app's tasks are reached (marathon-lb utils.py
// get_task_ip_and_ports, and DESIGN.md "From Marathon apps to routes").
type netMode uint8

const (
	modeHost      netMode = iota // agent host + task host ports
	modeBridge                   // agent host + task host ports (mapped by Docker)
	modeContainer                // IP-per-task: task IP + container ports
)

// networkMode decides the mode the way marathon-lb does: Marathon 1.5+
// "networks" (last entry wins), else the up-to-1.4 docker network, else
// the up-to-1.4 ipAddress (IP-per-task), else host.
func networkMode(a *appDef) (netMode, error) {
	if len(a.Networks) > 0 {
		switch m := a.Networks[len(a.Networks)-1].Mode; m {
		case "host":
			return modeHost, nil
		case "container/bridge":
			return modeBridge, nil
		case "container", "":
			// Marathon defaults a network without a mode to "container".
			return modeContainer, nil
		default:
			return modeHost, fmt.Errorf("unknown network mode %q", m)
		}
	}
	if a.Container != nil && a.Container.Docker != nil {
		switch strings.ToUpper(a.Container.Docker.Network) {
		case "USER":
			return modeContainer, nil
		case "BRIDGE":
			return modeBridge, nil
		}
	}
	if a.IPAddress != nil {
		return modeContainer, nil
	}
	return modeHost, nil
}

// portSpec is one port index of an app, before labels.
type portSpec struct {
	servicePort   int
	containerPort int // IP-per-task only
	name          string
	protocol      discovery.Protocol
}

// appPorts lists the app's ports by index. The list that defines how many
// ports there are depends on the mode; the service port of index n is then
// the first of portMappings[n].servicePort (non-host modes),
// portDefinitions[n].port and ports[n] that is set (labels come later).
func appPorts(a *appDef, mode netMode) []portSpec {
	var pms []portMapping
	if mode != modeHost && a.Container != nil {
		pms = a.Container.PortMappings // 1.5+
		if len(pms) == 0 && a.Container.Docker != nil {
			pms = a.Container.Docker.PortMappings // up to 1.4
		}
	}
	var out []portSpec
	switch {
	case len(pms) > 0:
		out = make([]portSpec, len(pms))
		for i, pm := range pms {
			out[i] = portSpec{servicePort: pm.ServicePort, containerPort: pm.ContainerPort, name: pm.Name, protocol: protocolOf(pm.Protocol)}
		}
	case mode == modeContainer && a.IPAddress != nil && a.IPAddress.Discovery != nil && len(a.IPAddress.Discovery.Ports) > 0:
		dps := a.IPAddress.Discovery.Ports
		out = make([]portSpec, len(dps))
		for i, dp := range dps {
			out[i] = portSpec{containerPort: dp.Number, name: dp.Name, protocol: protocolOf(dp.Protocol)}
		}
	case len(a.PortDefinitions) > 0:
		out = make([]portSpec, len(a.PortDefinitions))
		for i, pd := range a.PortDefinitions {
			out[i] = portSpec{name: pd.Name, protocol: protocolOf(pd.Protocol)}
		}
	default:
		out = make([]portSpec, len(a.Ports))
	}
	for i := range out {
		if out[i].servicePort != 0 {
			continue
		}
		switch {
		case i < len(a.PortDefinitions) && a.PortDefinitions[i].Port != 0:
			out[i].servicePort = a.PortDefinitions[i].Port
		case i < len(a.Ports) && a.Ports[i] != 0:
			out[i].servicePort = a.Ports[i]
		}
	}
	return out
}

// protocolOf maps Marathon's "tcp", "udp" and "udp,tcp" to a protocol: only a
// pure UDP port is UDP.
func protocolOf(p string) discovery.Protocol {
	p = strings.ToLower(p)
	switch udp, tcp := strings.Contains(p, "udp"), strings.Contains(p, "tcp"); {
	case udp && tcp:
		return discovery.ProtoTCPUDP
	case udp:
		return discovery.ProtoUDP
	}
	return discovery.ProtoTCP
}

// builder turns the source's private app state into discovery.App values.
type builder struct {
	resolve         func(host string) (netip.Addr, error)
	keepUnreachable bool
	// healthy remembers, per task id, the last complete health verdict, so a
	// task already seen healthy stays routable when Marathon forgets its
	// results (leader failover).
	healthy *lru.Cache[string, bool]
}

// build decides services and task states for one app. It never fails: what
// cannot be understood becomes App.Problem.
func (b *builder) build(a *appDef, tasks []*task) *discovery.App {
	_, group := appGroups(a.Labels)
	app := &discovery.App{
		ID:      a.ID,
		Source:  sourceName,
		Version: a.Version,
		Group:   group,
	}
	slices.SortFunc(tasks, func(x, y *task) int { return cmp.Compare(x.ID, y.ID) })

	mode, err := networkMode(a)
	if err != nil {
		// How tasks are reached, and which ports they have, depends on the
		// mode: there is nothing DNS could answer either.
		app.Problem = err.Error()
		app.Tasks = make([]discovery.TaskState, len(tasks))
		for i, t := range tasks {
			app.Tasks[i] = taskState(t, false, "app not routed: "+app.Problem)
		}
		return app
	}
	ports := appPorts(a, mode)
	labels, checks, err := portSettings(a, len(ports))
	if err != nil {
		// The load balancer must not guess routes from what it could not
		// read, but DNS needs none of it: mesos-dns answers every app's
		// tasks and ports without reading a label, and an app losing its
		// names over a label typo is a far bigger outage than losing its
		// load balancing.
		app.Problem = err.Error()
		app.DNSOnly = b.addTasks(app, a, tasks, mode, ports, dnsOnlyServices(a.ID, ports))
		return app
	}
	app.Services = b.addTasks(app, a, tasks, mode, ports, routedServices(a, ports, labels, checks))
	return app
}

// portSettings reads what the labels and checks say about each of the nports
// port indexes, or the first error.
func portSettings(a *appDef, nports int) ([]portLabels, []*discovery.HealthCheck, error) {
	labels := make([]portLabels, nports)
	for n := range labels {
		var err error
		if labels[n], err = parsePortLabels(a.Labels, n); err != nil {
			return nil, nil, err
		}
	}
	checks, err := healthChecks(a, nports) // checks.go
	if err != nil {
		return nil, nil, err
	}
	return labels, checks, nil
}

// routedServices are the services the proxies route, one per port index the
// labels do not disable (nil there), without backends yet.
func routedServices(a *appDef, ports []portSpec, labels []portLabels, checks []*discovery.HealthCheck) []*discovery.Service {
	services := make([]*discovery.Service, len(ports))
	for n, p := range ports {
		pl := labels[n]
		if pl.Disabled {
			continue
		}
		s := &discovery.Service{
			Key:             discovery.ServiceKey{App: a.ID, PortIndex: n},
			Name:            discovery.AppName(a.ID),
			PortName:        p.name,
			ServicePort:     p.servicePort,
			Protocol:        p.protocol,
			Balance:         pl.Balance,
			VHosts:          pl.VHosts,
			Paths:           pl.Paths,
			PathsFold:       pl.PathsFold,
			Sticky:          pl.Sticky,
			RedirectToHTTPS: pl.RedirectToHTTPS,
			Check:           checks[n],
		}
		if pl.Port != 0 {
			s.ServicePort = pl.Port
		}
		switch {
		case pl.Mode == "tcp":
			// An explicit mode wins over what VHOST or a check would imply.
		case pl.Mode == "http", len(pl.VHosts) > 0, httpCheckOn(a, n):
			s.Mode = discovery.ModeHTTP
		}
		services[n] = s
	}
	return services
}

// dnsOnlyServices are the ports of an app with a Problem as DNS names them:
// from the port definitions or mappings alone (name, protocol), as mesos-dns
// does, with no service port, label or check, without backends yet.
func dnsOnlyServices(appID string, ports []portSpec) []*discovery.Service {
	services := make([]*discovery.Service, len(ports))
	for n, p := range ports {
		services[n] = &discovery.Service{
			Key:      discovery.ServiceKey{App: appID, PortIndex: n},
			Name:     discovery.AppName(appID),
			PortName: p.name,
			Protocol: p.protocol,
		}
	}
	return services
}

// addTasks decides every task's state into app.Tasks, adds the tasks that
// may take traffic to services (nil entries are skipped) as backends, and
// returns the non-nil services. When app has a Problem no task is routable,
// but those that would be still get their Addr and backends, for DNS.
func (b *builder) addTasks(app *discovery.App, a *appDef, tasks []*task, mode netMode, ports []portSpec, services []*discovery.Service) []*discovery.Service {
	notReady := map[string]bool{}
	for _, r := range a.Readiness {
		if !r.Ready {
			notReady[r.TaskID] = true
		}
	}

	app.Tasks = make([]discovery.TaskState, 0, len(tasks))
	for _, t := range tasks {
		ok, reason := b.taskVerdict(a, t, notReady[t.ID])
		var addr netip.Addr
		if ok {
			addr, reason = b.taskAddr(t, mode)
			ok = reason == ""
		}
		if app.Problem != "" {
			reason = "app not routed: " + app.Problem
		}
		ts := taskState(t, ok && app.Problem == "", reason)
		if ok {
			ts.Addr = addr
		}
		app.Tasks = append(app.Tasks, ts)
		if !ok {
			continue
		}
		for n, s := range services {
			if s == nil {
				continue
			}
			port := 0
			switch {
			case mode == modeContainer:
				port = ports[n].containerPort
			case n < len(t.Ports):
				port = t.Ports[n]
			}
			if port <= 0 || port > 65535 {
				continue
			}
			s.Backends = append(s.Backends, discovery.Backend{
				TaskID: t.ID,
				Host:   t.Host,
				Addr:   netip.AddrPortFrom(addr, uint16(port)),
			})
		}
	}
	var out []*discovery.Service
	for _, s := range services {
		if s == nil {
			continue
		}
		// Tasks are sorted by id already; sort again so the order never
		// depends on how the tasks were collected.
		slices.SortStableFunc(s.Backends, func(x, y discovery.Backend) int {
			if c := cmp.Compare(x.TaskID, y.TaskID); c != 0 {
				return c
			}
			return x.Addr.Compare(y.Addr)
		})
		out = append(out, s)
	}
	return out
}

// taskVerdict decides whether a task may take traffic, before its address.
func (b *builder) taskVerdict(a *appDef, t *task, notReady bool) (bool, string) {
	state := taskStateName(t)
	ok, reason := true, ""
	switch state {
	case "TASK_RUNNING":
	case "TASK_UNREACHABLE", "TASK_LOST":
		if !b.keepUnreachable {
			ok, reason = false, state+" (unreachable tasks are not kept)"
		}
	default:
		ok, reason = false, state
	}
	if len(a.HealthChecks) > 0 {
		hok, hreason := b.health(a, t)
		if ok && !hok {
			ok, reason = false, hreason
		}
	}
	if ok && notReady {
		ok, reason = false, "readiness check not passed"
	}
	return ok, reason
}

// health applies DESIGN.md: every check's latest result alive; no (or
// missing) results mean "not yet", unless the task was seen healthy before.
func (b *builder) health(a *appDef, t *task) (bool, string) {
	res := t.HealthCheckResults
	for _, r := range res {
		if !r.Alive {
			b.healthy.Add(t.ID, false)
			return false, "health check failing"
		}
	}
	if len(res) >= len(a.HealthChecks) {
		b.healthy.Add(t.ID, true)
		return true, ""
	}
	if was, ok := b.healthy.Get(t.ID); ok && was {
		return true, ""
	}
	return false, fmt.Sprintf("waiting for health check results (%d of %d)", len(res), len(a.HealthChecks))
}

// taskAddr returns the address backends of the task use, or why there is none.
func (b *builder) taskAddr(t *task, mode netMode) (netip.Addr, string) {
	if mode == modeContainer {
		if len(t.IPAddresses) == 0 || t.IPAddresses[0].IPAddress == "" {
			return netip.Addr{}, "no task IP address yet"
		}
		ip, err := netip.ParseAddr(t.IPAddresses[0].IPAddress)
		if err != nil {
			return netip.Addr{}, fmt.Sprintf("bad task IP address %q", t.IPAddresses[0].IPAddress)
		}
		return ip.Unmap(), ""
	}
	if t.Host == "" {
		return netip.Addr{}, "no agent host"
	}
	ip, err := b.resolve(t.Host)
	if err != nil {
		return netip.Addr{}, "resolving agent host: " + err.Error()
	}
	return ip, ""
}

// taskStateName is the task's Mesos state. Marathon before 0.11 has no state:
// a started task counts as running.
func taskStateName(t *task) string {
	if t.State != "" {
		return t.State
	}
	if t.StartedAt != nil && *t.StartedAt != "" {
		return "TASK_RUNNING"
	}
	return "TASK_STAGING"
}

func taskState(t *task, routable bool, reason string) discovery.TaskState {
	return discovery.TaskState{
		ID:       t.ID,
		Host:     t.Host,
		State:    taskStateName(t),
		Ports:    slices.Clone(t.Ports),
		Routable: routable,
		Reason:   reason,
	}
}
