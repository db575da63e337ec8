package marathon

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/pacer-lb/pacer/discovery"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testBuilder resolves the hosts the fixtures use without DNS.
func testBuilder(keepUnreachable bool) *builder {
	healthy, _ := lru.New[string, bool](1024)
	return &builder{
		resolve: func(host string) (netip.Addr, error) {
			if a, err := netip.ParseAddr(host); err == nil {
				return a, nil
			}
			if host == "unresolvable.example" {
				return netip.Addr{}, errors.New("no such host")
			}
			// A stable fake address per name: 192.0.2.<len>.
			return netip.AddrFrom4([4]byte{192, 0, 2, byte(len(host))}), nil
		},
		keepUnreachable: keepUnreachable,
		healthy:         healthy,
	}
}

// summary renders an app's services compactly for comparisons:
// "idx :port mode [name] [vhosts] -> task@addr ...".
func summary(a *discovery.App) []string {
	var out []string
	if a.Problem != "" {
		out = append(out, "problem: "+a.Problem)
	}
	for _, s := range a.Services {
		line := fmt.Sprintf("%d :%d %s/%s", s.Key.PortIndex, s.ServicePort, s.Mode, s.Protocol)
		if s.PortName != "" {
			line += " name=" + s.PortName
		}
		if len(s.VHosts) > 0 {
			line += " vhosts=" + strings.Join(s.VHosts, ",")
		}
		if spec := s.PathSpec(); spec != "" {
			line += " path=" + spec
		}
		if s.Balance != discovery.BalanceRoundRobin {
			line += " balance=" + s.Balance.String()
		}
		if s.Sticky {
			line += " sticky"
		}
		if s.RedirectToHTTPS {
			line += " https"
		}
		line += " ->"
		for _, b := range s.Backends {
			line += " " + b.TaskID + "@" + b.Addr.String()
		}
		out = append(out, line)
	}
	return out
}

// taskSummary renders task states: "id state routable|reason".
func taskSummary(a *discovery.App) []string {
	var out []string
	for _, t := range a.Tasks {
		v := "ok"
		if !t.Routable {
			v = "no: " + t.Reason
		}
		out = append(out, t.ID+" "+t.State+" "+v)
	}
	return out
}

func buildDecoded(t *testing.T, b *builder, d decodedApp) *discovery.App {
	t.Helper()
	if d.Def == nil {
		return &discovery.App{ID: d.ID, Problem: d.Problem}
	}
	return b.build(d.Def, slices.Clone(d.Def.Tasks))
}

func TestDecodeFixtures(t *testing.T) {
	t.Parallel()
	type want struct {
		services []string
		tasks    []string
		group    string
	}
	tests := []struct {
		name    string
		file    string
		apps    int
		checks  map[string]want
		wantErr bool
	}{
		{
			name: "0.11 app_list with ports",
			file: "marathon-docs-app_list.json",
			apps: 1,
			checks: map[string]want{"/myapp": {services: []string{
				"0 :10013 tcp/tcp ->",
				"1 :10015 tcp/tcp ->",
			}}},
		},
		{
			name: "1.5 bridge (marathon-lb marathon15_apps)",
			file: "marathon-lb-marathon15_apps.json",
			apps: 1,
			checks: map[string]want{"/pywebserver": {
				group: "external",
				// Bridge: agent host + host port, never the 172.17 bridge IP.
				services: []string{"0 :10101 http/tcp name=test vhosts=myvhost.com -> pywebserver.8cad6a69-6ca8-11e7-beb2-0e2beceebfcc@10.0.2.148:1565"},
				tasks:    []string{"pywebserver.8cad6a69-6ca8-11e7-beb2-0e2beceebfcc TASK_RUNNING ok"},
			}},
		},
		{
			name: "0.15 docker BRIDGE, health results with taskId (zdd_apps)",
			file: "marathon-lb-zdd_apps.json",
			apps: 2,
			checks: map[string]want{
				"/nginx-green": {
					group: "external",
					// HAPROXY_0_PORT, HTTP check => http; tasks without state but started.
					services: []string{"0 :10000 http/tcp -> " +
						"nginx-green.0dbabba6-c931-11e5-9836-026ee08d9f6f@10.0.6.25:31184 " +
						"nginx-green.1883a887-c931-11e5-9836-026ee08d9f6f@10.0.6.25:16916 " +
						"nginx-green.23532518-c931-11e5-9836-026ee08d9f6f@10.0.6.25:23336"},
				},
				"/nginx-blue": {
					group: "external",
					// The label (10000) wins over servicePort 10001.
					services: []string{"0 :10000 http/tcp -> nginx-blue.3a58a46a-c937-11e5-9836-026ee08d9f6f@10.0.1.147:25724"},
					tasks:    []string{"nginx-blue.3a58a46a-c937-11e5-9836-026ee08d9f6f TASK_RUNNING ok"},
				},
			},
		},
		{
			name: "0.15 single app with ports (zdd_app_blue)",
			file: "marathon-lb-zdd_app_blue.json",
			apps: 1,
			checks: map[string]want{"/nginx-green": {group: "external", services: []string{"0 :10000 http/tcp -> " +
				"nginx-green.0dbabba6-c931-11e5-9836-026ee08d9f6f@10.0.6.25:31184 " +
				"nginx-green.1883a887-c931-11e5-9836-026ee08d9f6f@10.0.6.25:16916 " +
				"nginx-green.23532518-c931-11e5-9836-026ee08d9f6f@10.0.6.25:23336"}}},
		},
		{
			name: "1.5 MESOS_HTTP, health results with instanceId",
			file: "marathon-lb-zdd_app_blue_marathon1.5.json",
			apps: 1,
			checks: map[string]want{"/nginx-green": {group: "external", services: []string{"0 :10000 http/tcp -> " +
				"nginx-green.01bf22d4-68a7-11e7-a229-e6a514ca0c21@10.0.6.25:23336 " +
				"nginx-green.01da9a15-68a7-11e7-a229-e6a514ca0c21@10.0.6.25:16916 " +
				"nginx-green.01dc95e6-68a7-11e7-a229-e6a514ca0c21@10.0.6.25:31184"}}},
		},
		{
			name:   "real 1000-app group tree",
			file:   "marathon-bench-real-groups-1000.json",
			apps:   1000,
			checks: map[string]want{"/cudcos/mactest1": {services: []string{"0 :10003 tcp/tcp name=default ->"}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			apps, skipped, err := decodeApps(readTestdata(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if skipped != 0 || len(apps) != tt.apps {
				t.Fatalf("decoded %d apps (%d skipped), want %d", len(apps), skipped, tt.apps)
			}
			b := testBuilder(true)
			byID := map[string]*discovery.App{}
			for _, d := range apps {
				a := buildDecoded(t, b, d)
				if a.Problem != "" {
					t.Errorf("%s: problem %q", a.ID, a.Problem)
				}
				byID[a.ID] = a
			}
			for id, w := range tt.checks {
				a := byID[id]
				if a == nil {
					t.Fatalf("app %s missing", id)
				}
				if got := summary(a); !slices.Equal(got, w.services) {
					t.Errorf("%s services:\n got %q\nwant %q", id, got, w.services)
				}
				if w.tasks != nil {
					if got := taskSummary(a); !slices.Equal(got, w.tasks) {
						t.Errorf("%s tasks:\n got %q\nwant %q", id, got, w.tasks)
					}
				}
				if a.Group != w.group {
					t.Errorf("%s group = %q, want %q", id, a.Group, w.group)
				}
				if a.Services != nil && a.Services[0].Name != discovery.AppName(id) {
					t.Errorf("%s name = %q", id, a.Services[0].Name)
				}
			}
		})
	}
}

// The docs' app.json is hand-edited: docker BRIDGE and a legacy ipAddress at
// once. marathon-lb's rule (docker network before ipAddress) makes it
// bridge. Its HTTP check has no results yet, so its tasks wait.
func TestDecodeDocsAppWithTasks(t *testing.T) {
	t.Parallel()
	d := decodeOneApp(readTestdata(t, "marathon-docs-app.json"))
	if d.Def == nil {
		t.Fatal(d.Problem)
	}
	var tasks struct {
		Tasks []*task `json:"tasks"`
	}
	for _, f := range []string{"marathon-docs-app_tasks.json", "marathon-docs-tasks.json"} {
		if err := json.Unmarshal(readTestdata(t, f), &tasks); err != nil {
			t.Fatal(err)
		}
		d.Def.Tasks = append(d.Def.Tasks, tasks.Tasks...)
		tasks.Tasks = nil
	}
	if m, _ := networkMode(d.Def); m != modeBridge {
		t.Fatalf("mode = %v, want bridge", m)
	}
	a := testBuilder(true).build(d.Def, d.Def.Tasks)
	if got, want := summary(a), []string{"0 :10019 http/tcp name=http ->"}; !slices.Equal(got, want) {
		t.Errorf("services = %q, want %q", got, want)
	}
	want := []string{
		"frontend-foosball.083be411-5d1f-11e5-88f7-56b91e7a505b TASK_RUNNING no: waiting for health check results (0 of 1)",
		"minecraft_survival-world.instance-564bd685-4c30-11e5-98c1-be5b2935a987 TASK_STAGING no: TASK_STAGING",
		"tools_docker_registry.002b4d28-46b9-11e5-b731-525400cce7ed TASK_RUNNING no: waiting for health check results (0 of 1)",
	}
	if got := taskSummary(a); !slices.Equal(got, want) {
		t.Errorf("tasks:\n got %q\nwant %q", got, want)
	}
}

// Shapes no fixture covers, written as Marathon's serializers write them
// (reference §3.1).
func TestDecodeShapes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		app      string
		keep     bool
		services []string
		tasks    []string
	}{
		{
			name: "0.8 ports, task without state: routable once started",
			app: `{"id":"/old","ports":[10000],"tasks":[
				{"id":"old.1","host":"10.0.0.1","ports":[31000],"startedAt":"2015-01-01T00:00:00.000Z"},
				{"id":"old.2","host":"10.0.0.2","ports":[31001],"startedAt":null}]}`,
			services: []string{"0 :10000 tcp/tcp -> old.1@10.0.0.1:31000"},
			tasks:    []string{"old.1 TASK_RUNNING ok", "old.2 TASK_STAGING no: TASK_STAGING"},
		},
		{
			name: "1.4 IP-per-task: ipAddress discovery ports, task IP",
			app: `{"id":"/ipt","ports":[],"ipAddress":{"groups":[],"labels":{},"discovery":{"ports":[{"number":8080,"name":"web","protocol":"tcp"}]},"networkName":"dcos"},
				"labels":{"HAPROXY_0_PORT":"10500"},
				"tasks":[{"id":"ipt.1","host":"agent-1","ports":[],"state":"TASK_RUNNING","ipAddresses":[{"ipAddress":"9.0.0.7","protocol":"IPv4"}]},
				         {"id":"ipt.2","host":"agent-1","ports":[],"state":"TASK_RUNNING","ipAddresses":[]}]}`,
			services: []string{"0 :10500 tcp/tcp name=web -> ipt.1@9.0.0.7:8080"},
			tasks:    []string{"ipt.1 TASK_RUNNING ok", "ipt.2 TASK_RUNNING no: no task IP address yet"},
		},
		{
			name: "1.5+ container network: portMappings containerPort + task IP",
			app: `{"id":"/c/api","networks":[{"mode":"container","name":"dcos"}],
				"container":{"type":"MESOS","portMappings":[{"containerPort":80,"servicePort":10010,"name":"http","protocol":"tcp"},{"containerPort":53,"servicePort":10011,"name":"dns","protocol":"udp"}]},
				"tasks":[{"id":"c_api.instance-a._app.1","host":"agent-2","ports":[],"state":"TASK_RUNNING","ipAddresses":[{"ipAddress":"9.0.1.2","protocol":"IPv4"}]}]}`,
			services: []string{
				"0 :10010 tcp/tcp name=http -> c_api.instance-a._app.1@9.0.1.2:80",
				"1 :10011 tcp/udp name=dns -> c_api.instance-a._app.1@9.0.1.2:53",
			},
		},
		{
			// marathon-lb tests/test_utils.py test_get_task_ip_and_ports_ip_per_task_marathon13.
			name: "1.3 IP-per-task: docker USER network, ipAddress {}, docker.portMappings containerPort",
			app: `{"id":"/ippc13","ipAddress":{},"container":{"type":"DOCKER","docker":{"network":"USER",
				"portMappings":[{"containerPort":80,"servicePort":10000},{"containerPort":81,"servicePort":10001}]}},
				"tasks":[{"id":"ippc13.1","host":"agent-1","ports":[31000,31001],"state":"TASK_RUNNING","ipAddresses":[{"ipAddress":"1.2.3.4"}]},
				         {"id":"ippc13.2","host":"agent-1","state":"TASK_RUNNING"}]}`,
			services: []string{"0 :10000 tcp/tcp -> ippc13.1@1.2.3.4:80", "1 :10001 tcp/tcp -> ippc13.1@1.2.3.4:81"},
			tasks:    []string{"ippc13.1 TASK_RUNNING ok", "ippc13.2 TASK_RUNNING no: no task IP address yet"},
		},
		{
			// marathon-lb tests/test_utils.py test_get_task_ip_and_ports_ip_per_task:
			// ipAddress.discovery.ports, no service ports (so none bound).
			name: "1.4 IP-per-task: discovery ports only",
			app: `{"id":"/ippc14","ipAddress":{"discovery":{"ports":[{"number":123},{"number":234}]}},
				"tasks":[{"id":"ippc14.1","state":"TASK_RUNNING","ipAddresses":[{"ipAddress":"1.2.3.4"}]}]}`,
			services: []string{"0 :0 tcp/tcp -> ippc14.1@1.2.3.4:123", "1 :0 tcp/tcp -> ippc14.1@1.2.3.4:234"},
		},
		{
			// Marathon defaults a network's mode to "container".
			name: "1.5+ container network without a mode",
			app: `{"id":"/nomode","networks":[{"name":"dcos"}],"container":{"type":"MESOS","portMappings":[{"containerPort":8080,"servicePort":10700}]},
				"tasks":[{"id":"nomode.1","host":"agent-9","state":"TASK_RUNNING","ipAddresses":[{"ipAddress":"9.9.9.9","protocol":"IPv4"}]}]}`,
			services: []string{"0 :10700 tcp/tcp -> nomode.1@9.9.9.9:8080"},
		},
		{
			// marathon-api.md §3.1's full example (1.9/1.10, Docker bridge,
			// Marathon HTTP check, one healthy and one failing task): host
			// and host port, never the 172.17 bridge address; HTTP mode
			// from the check.
			name: "1.10 bridge with an HTTP check: agent host + host port, never ipAddresses",
			app: `{"id":"/shop/web","container":{"type":"DOCKER","docker":{"image":"nginx:1.17"},"volumes":[],
				"portMappings":[{"containerPort":80,"hostPort":0,"labels":{},"name":"http","protocol":"tcp","servicePort":10004}]},
				"healthChecks":[{"gracePeriodSeconds":30,"intervalSeconds":10,"maxConsecutiveFailures":3,"path":"/healthz","portIndex":0,"protocol":"HTTP","ipProtocol":"IPv4","timeoutSeconds":5,"delaySeconds":15}],
				"labels":{"HAPROXY_GROUP":"external"},"networks":[{"mode":"container/bridge"}],"version":"2020-03-05T10:14:50.512Z",
				"tasks":[
				 {"appId":"/shop/web","healthCheckResults":[{"alive":true,"consecutiveFailures":0,"firstSuccess":"2020-03-05T10:15:21.004Z","instanceId":"shop_web.instance-5e1c0f2a-5ec9-11ea-9a3f-0242ac110004","lastSuccess":"2020-03-05T11:02:41.118Z"}],
				  "host":"10.0.3.21","id":"shop_web.instance-5e1c0f2a-5ec9-11ea-9a3f-0242ac110004._app.1","ipAddresses":[{"ipAddress":"172.17.0.4","protocol":"IPv4"}],"ports":[31874],"servicePorts":[],"state":"TASK_RUNNING"},
				 {"appId":"/shop/web","healthCheckResults":[{"alive":false,"consecutiveFailures":2,"instanceId":"shop_web.instance-5e1c5d4b-5ec9-11ea-9a3f-0242ac110004","lastFailureCause":"503 Service Unavailable"}],
				  "host":"10.0.3.22","id":"shop_web.instance-5e1c5d4b-5ec9-11ea-9a3f-0242ac110004._app.1","ipAddresses":[{"ipAddress":"172.17.0.2","protocol":"IPv4"}],"ports":[31207],"servicePorts":[],"state":"TASK_RUNNING"}]}`,
			services: []string{"0 :10004 http/tcp name=http -> shop_web.instance-5e1c0f2a-5ec9-11ea-9a3f-0242ac110004._app.1@10.0.3.21:31874"},
			tasks: []string{
				"shop_web.instance-5e1c0f2a-5ec9-11ea-9a3f-0242ac110004._app.1 TASK_RUNNING ok",
				"shop_web.instance-5e1c5d4b-5ec9-11ea-9a3f-0242ac110004._app.1 TASK_RUNNING no: health check failing",
			},
		},
		{
			name: "1.5+ host portDefinitions, hostname agent, labels PACER_ before HAPROXY_",
			app: `{"id":"/web","networks":[{"mode":"host"}],"portDefinitions":[{"port":10020,"protocol":"tcp","name":"http"},{"port":10021,"protocol":"tcp"}],
				"labels":{"PACER_0_VHOST":"Web.Example.com, www.example.com","HAPROXY_0_VHOST":"ignored.example","HAPROXY_0_PATH":"/api","PACER_0_BALANCE":"leastconn","HAPROXY_0_STICKY":"TRUE","HAPROXY_0_REDIRECT_TO_HTTPS":"true","HAPROXY_1_ENABLED":"false"},
				"tasks":[{"id":"web.2","host":"agent-b","ports":[31002,31003],"state":"TASK_RUNNING"},{"id":"web.1","host":"agent-a","ports":[31000,31001],"state":"TASK_RUNNING"}]}`,
			services: []string{"0 :10020 http/tcp name=http vhosts=web.example.com,www.example.com path=/api balance=leastconn sticky https -> web.1@192.0.2.7:31000 web.2@192.0.2.7:31002"},
		},
		{
			// marathon-lb's users write these; marathon-lb accepts them.
			name: "marathon-lb's boolean spellings and balance algorithms",
			app: `{"id":"/mlb","portDefinitions":[{"port":10022},{"port":10023},{"port":10024}],
				"labels":{"HAPROXY_0_STICKY":"yes","HAPROXY_0_REDIRECT_TO_HTTPS":"Y","HAPROXY_0_BALANCE":"static-rr","HAPROXY_0_MODE":"http",
					"HAPROXY_1_ENABLED":"no","HAPROXY_2_BALANCE":"random"},
				"tasks":[{"id":"mlb.1","host":"10.0.0.1","ports":[1,2,3],"state":"TASK_RUNNING"}]}`,
			services: []string{"0 :10022 http/tcp sticky https -> mlb.1@10.0.0.1:1", "2 :10024 tcp/tcp balance=leastconn -> mlb.1@10.0.0.1:3"},
		},
		{
			name: "PATH as marathon-lb writes it: prefixes separated by spaces, -i",
			app: `{"id":"/p","portDefinitions":[{"port":10027},{"port":10028}],
				"labels":{"HAPROXY_0_VHOST":"p.example.com","HAPROXY_0_PATH":" /api  /v2 ","HAPROXY_1_VHOST":"p.example.com","HAPROXY_1_PATH":"-i /Admin"},"tasks":[]}`,
			services: []string{"0 :10027 http/tcp vhosts=p.example.com path=/api /v2 ->", "1 :10028 http/tcp vhosts=p.example.com path=-i /Admin ->"},
		},
		{
			name:     "PATH that is not a path",
			app:      `{"id":"/q","ports":[10029],"labels":{"HAPROXY_0_VHOST":"q.example.com","HAPROXY_0_PATH":"api"},"tasks":[]}`,
			services: []string{`problem: label HAPROXY_0_PATH="api": want path prefixes starting with /, separated by spaces, optionally after -i`},
		},
		{
			name:     "protocols: udp, and udp,tcp (both)",
			app:      `{"id":"/dns","portDefinitions":[{"port":10031,"protocol":"udp"},{"port":10032,"protocol":"udp,tcp"},{"port":10033,"protocol":"tcp"}],"tasks":[]}`,
			services: []string{"0 :10031 tcp/udp ->", "1 :10032 tcp/udp,tcp ->", "2 :10033 tcp/tcp ->"},
		},
		{
			name:     "a balance algorithm pacer has not got",
			app:      `{"id":"/uri","ports":[10025],"labels":{"HAPROXY_0_BALANCE":"uri"},"tasks":[]}`,
			services: []string{`problem: label HAPROXY_0_BALANCE="uri": want roundrobin, leastconn or source (static-rr and random are read as roundrobin and leastconn; HAProxy's other algorithms have no pacer equivalent)`},
		},
		{
			name:     "a boolean that is neither",
			app:      `{"id":"/typo","ports":[10026],"labels":{"HAPROXY_0_ENABLED":"ture"},"tasks":[]}`,
			services: []string{`problem: label HAPROXY_0_ENABLED="ture": want true or false (or yes/no)`},
		},
		{
			name: "MODE=tcp beats an HTTP check; MODE=http without checks",
			app: `{"id":"/m","portDefinitions":[{"port":10030},{"port":10031}],"healthChecks":[{"protocol":"HTTP","portIndex":0}],
				"labels":{"HAPROXY_0_MODE":"tcp","HAPROXY_1_MODE":"HTTP"},"tasks":[]}`,
			services: []string{"0 :10030 tcp/tcp ->", "1 :10031 http/tcp ->"},
		},
		{
			name: "health: failing check, complete results, no results",
			app: `{"id":"/h","portDefinitions":[{"port":10040}],"healthChecks":[{"protocol":"TCP"},{"protocol":"COMMAND"}],
				"tasks":[{"id":"h.1","host":"10.0.0.1","ports":[1],"state":"TASK_RUNNING","healthCheckResults":[{"alive":true,"taskId":"h.1"},{"alive":true,"taskId":"h.1"}]},
				         {"id":"h.2","host":"10.0.0.1","ports":[2],"state":"TASK_RUNNING","healthCheckResults":[{"alive":true,"instanceId":"h.marathon-2"},{"alive":false,"instanceId":"h.marathon-2"}]},
				         {"id":"h.3","host":"10.0.0.1","ports":[3],"state":"TASK_RUNNING","healthCheckResults":[]},
				         {"id":"h.4","host":"10.0.0.1","ports":[4],"state":"TASK_RUNNING","healthCheckResults":[{"alive":true}]}]}`,
			services: []string{"0 :10040 tcp/tcp -> h.1@10.0.0.1:1"},
			tasks: []string{
				"h.1 TASK_RUNNING ok",
				"h.2 TASK_RUNNING no: health check failing",
				"h.3 TASK_RUNNING no: waiting for health check results (0 of 2)",
				"h.4 TASK_RUNNING no: waiting for health check results (1 of 2)",
			},
		},
		{
			name: "states: unreachable kept by default, killing and staging not routed",
			keep: true,
			app: `{"id":"/s","ports":[10050],"tasks":[
				{"id":"s.1","host":"10.0.0.1","ports":[1],"state":"TASK_UNREACHABLE"},
				{"id":"s.2","host":"10.0.0.1","ports":[2],"state":"TASK_KILLING"},
				{"id":"s.3","host":"10.0.0.1","ports":[3],"state":"TASK_STARTING"},
				{"id":"s.4","host":"unresolvable.example","ports":[4],"state":"TASK_RUNNING"},
				{"id":"s.5","host":"","ports":[5],"state":"TASK_RUNNING"}]}`,
			services: []string{"0 :10050 tcp/tcp -> s.1@10.0.0.1:1"},
			tasks: []string{
				"s.1 TASK_UNREACHABLE ok",
				"s.2 TASK_KILLING no: TASK_KILLING",
				"s.3 TASK_STARTING no: TASK_STARTING",
				"s.4 TASK_RUNNING no: resolving agent host: no such host",
				"s.5 TASK_RUNNING no: no agent host",
			},
		},
		{
			name:     "unreachable dropped when configured",
			app:      `{"id":"/u","ports":[10060],"tasks":[{"id":"u.1","host":"10.0.0.1","ports":[1],"state":"TASK_LOST"}]}`,
			services: []string{"0 :10060 tcp/tcp ->"},
			tasks:    []string{"u.1 TASK_LOST no: TASK_LOST (unreachable tasks are not kept)"},
		},
		{
			name:     "readiness not passed",
			app:      `{"id":"/r","ports":[10070],"tasks":[{"id":"r.1","host":"10.0.0.1","ports":[1],"state":"TASK_RUNNING"}],"readinessCheckResults":[{"name":"ready","taskId":"r.1","ready":false}]}`,
			services: []string{"0 :10070 tcp/tcp ->"},
			tasks:    []string{"r.1 TASK_RUNNING no: readiness check not passed"},
		},
		{
			name:     "invalid label: problem, no services, tasks explain",
			app:      `{"id":"/bad","ports":[10080],"labels":{"HAPROXY_0_PORT":"eighty"},"tasks":[{"id":"bad.1","host":"10.0.0.1","ports":[1],"state":"TASK_RUNNING"}]}`,
			services: []string{`problem: label HAPROXY_0_PORT="eighty": want a port number 1-65535`},
			tasks:    []string{`bad.1 TASK_RUNNING no: app not routed: label HAPROXY_0_PORT="eighty": want a port number 1-65535`},
		},
		{
			name:     "unknown network mode",
			app:      `{"id":"/n","networks":[{"mode":"overlay"}],"tasks":[]}`,
			services: []string{`problem: unknown network mode "overlay"`},
		},
		{
			name:     "wrong JSON types: problem, id kept",
			app:      `{"id":"/t","ports":"10090","tasks":[]}`,
			services: []string{"problem: cannot decode app: json: cannot unmarshal string into Go struct field appDef.ports of type []int"},
		},
		{
			name:     "nulls everywhere (Marathon up to 1.5)",
			app:      `{"id":"nulls","ports":null,"portDefinitions":null,"container":null,"ipAddress":null,"labels":null,"healthChecks":null,"tasks":[null,{"id":"nulls.1","host":"10.0.0.1","ports":null,"state":"TASK_RUNNING","healthCheckResults":null,"ipAddresses":null}]}`,
			services: nil,
			tasks:    []string{"nulls.1 TASK_RUNNING ok"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := decodeOneApp(json.RawMessage(tt.app))
			if d.ID == "" {
				t.Fatalf("no id: %s", d.Problem)
			}
			a := buildDecoded(t, testBuilder(tt.keep), d)
			if got := summary(a); !slices.Equal(got, tt.services) {
				t.Errorf("services:\n got %q\nwant %q", got, tt.services)
			}
			if tt.tasks != nil {
				if got := taskSummary(a); !slices.Equal(got, tt.tasks) {
					t.Errorf("tasks:\n got %q\nwant %q", got, tt.tasks)
				}
			}
		})
	}
}

// An app with no ports offers no service, but its routable tasks carry
// their addresses, which DNS answers for the app's name, as mesos-dns does;
// a task not routable carries none.
func TestPortlessAppTasksHaveAddresses(t *testing.T) {
	t.Parallel()
	d := decodeOneApp(json.RawMessage(`{"id":"/worker","portDefinitions":[],"tasks":[
		{"id":"w.1","host":"10.0.0.8","ports":[],"state":"TASK_RUNNING"},
		{"id":"w.2","host":"10.0.0.9","ports":[],"state":"TASK_STAGING"}]}`))
	a := buildDecoded(t, testBuilder(true), d)
	if len(a.Services) != 0 || len(a.Tasks) != 2 {
		t.Fatalf("app = %+v", a)
	}
	if got := a.Tasks[0]; !got.Routable || got.Addr != netip.MustParseAddr("10.0.0.8") {
		t.Errorf("running task = %+v, want routable at 10.0.0.8", got)
	}
	if got := a.Tasks[1]; got.Routable || got.Addr.IsValid() {
		t.Errorf("staging task = %+v, want no address", got)
	}
}

// A task seen healthy keeps its verdict when Marathon forgets the results
// (leader failover), but not after a failing result.
func TestHealthMemorySurvivesFailover(t *testing.T) {
	t.Parallel()
	b := testBuilder(true)
	def := func(results string) *appDef {
		d := decodeOneApp(json.RawMessage(`{"id":"/h","ports":[1],"healthChecks":[{"protocol":"HTTP"}],"tasks":[{"id":"h.1","host":"10.0.0.1","ports":[31000],"state":"TASK_RUNNING","healthCheckResults":` + results + `}]}`))
		return d.Def
	}
	routable := func(a *appDef) bool { return b.build(a, a.Tasks).Tasks[0].Routable }
	if routable(def(`[]`)) {
		t.Fatal("no results yet: routable")
	}
	if !routable(def(`[{"alive":true}]`)) {
		t.Fatal("alive: not routable")
	}
	if !routable(def(`[]`)) {
		t.Fatal("results vanished after failover: verdict not kept")
	}
	if routable(def(`[{"alive":false}]`)) {
		t.Fatal("failing: routable")
	}
	if routable(def(`[]`)) {
		t.Fatal("results vanished after a failure: routable")
	}
}

func TestDecodeAppsRejectsNonSnapshots(t *testing.T) {
	t.Parallel()
	for _, body := range []string{
		``, `{`, `{"apps":[{"id":"/a"}`, `<html>502 Bad Gateway</html>`,
		`{"message":"Could not determine the current leader"}`, `{"apps":null}`, `[]`,
	} {
		if _, _, err := decodeApps([]byte(body)); err == nil {
			t.Errorf("decodeApps(%q) succeeded", body)
		}
	}
	apps, skipped, err := decodeApps([]byte(`{"apps":[{"id":"/ok"},{"id":17},{"ports":[1]},"junk",{"id":"/bad","labels":{"a":1}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if skipped != 3 || len(apps) != 2 || apps[0].Def == nil || apps[1].Problem == "" || apps[1].ID != "/bad" {
		t.Fatalf("apps = %+v, skipped = %d", apps, skipped)
	}
}

func TestPlanAppIDs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, data string
		want       []string
		ok         bool
	}{
		{"1.8 light plan", `{"eventType":"deployment_success","id":"x","plan":{"id":"x","steps":[{"actions":[{"action":"StartApplication","app":"/shop/web"}]},{"actions":[{"action":"ScaleApplication","app":"/shop/web"},{"action":"ScaleApplication","app":"/shop/api"}]}]}}`, []string{"/shop/web", "/shop/api"}, true},
		{"1.1 type key + currentStep", `{"eventType":"deployment_info","plan":{"steps":[{"actions":[{"type":"ScaleApplication","app":"/a"}]}]},"currentStep":{"actions":[{"type":"ScaleApplication","app":"/b"}]}}`, []string{"/a", "/b"}, true},
		{"old docs: action as step", `{"eventType":"deployment_step_success","plan":{"steps":[{"action":"ScaleApplication","app":"/my-app"}]}}`, []string{"/my-app"}, true},
		{"0.x: step as array", `{"eventType":"deployment_info","plan":{"steps":[[{"type":"StartApplication","app":"/c"}]]}}`, []string{"/c"}, true},
		{"0.9: no plan", `{"eventType":"deployment_success","id":"x"}`, nil, false},
		{"pods only", `{"eventType":"deployment_success","plan":{"steps":[{"actions":[{"action":"StartPod","pod":"/p"}]}]}}`, nil, true},
		{"api_post_event", `{"eventType":"api_post_event","uri":"/v2/apps/x","appDefinition":{"id":"/x","ports":[1]}}`, []string{"/x"}, true},
		{"instance_changed_event", `{"eventType":"instance_changed_event","instanceId":"i","runSpecId":"/shop/web","agentId":null,"host":null}`, []string{"/shop/web"}, true},
		{"health_status_changed_event", `{"appId":"/shop/web","instanceId":"i","alive":true,"eventType":"health_status_changed_event"}`, []string{"/shop/web"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ev event
			if err := json.Unmarshal([]byte(tt.data), &ev); err != nil {
				t.Fatal(err)
			}
			got, ok := ev.appIDs()
			if ok != tt.ok || !slices.Equal(got, tt.want) {
				t.Fatalf("appIDs = %q, %v; want %q, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}
