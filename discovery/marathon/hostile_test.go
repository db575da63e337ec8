package marathon

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pacer-lb/pacer/discovery"
)

// A password may hold '/', '?', '#' or '@' (generated ones often do). Where
// url.Parse then ends the host early, the rest of the password must not
// show in the error, nor become the "path" of an endpoint that logs and
// /v1/services print.
func TestURLPasswordWithDelimiters(t *testing.T) {
	t.Parallel()
	tb := discovery.NewTable()
	for _, raw := range []string{
		"http://admin:ab/" + testSecret + "@m:8080",    // url.Parse: bad port "ab"
		"http://admin:8080/" + testSecret + "@m:8080",  // parses: host admin:8080, path /s3cret-pw@m:8080
		"http://admin:/" + testSecret + "@m",           // parses: host "admin:", path /s3cret-pw@m
		"http://admin:12?" + testSecret + "@m:8080",    // parses: host admin:12, query
		"http://admin:12#" + testSecret + "@m:8080",    // parses: host admin:12, fragment
		"http:admin:" + testSecret + "@m:8080",         // opaque: no host
		"ftp://admin:" + testSecret + "/x@m:8080",      // bad scheme
		"http://admin:" + testSecret + "@m:8080/a@b/c", // '@' in a path
	} {
		s, err := New(Config{URLs: []string{raw}}, tb, nil)
		if err == nil {
			t.Errorf("New(%q) accepted it, endpoint %q", raw, s.Status().Endpoint)
			continue
		}
		if strings.Contains(err.Error(), testSecret) {
			t.Errorf("New(%q): error shows the password: %v", raw, err)
		}
	}
	// Written as RFC 3986 wants it, the same password works.
	s, err := New(Config{URLs: []string{"http://admin:ab%2F" + testSecret + "@m:8080"}}, tb, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ep := s.client.eps[0]; ep.auth != basicAuth("admin", "ab/"+testSecret) || ep.redacted != "http://m:8080" {
		t.Errorf("endpoint %+v", ep)
	}
}

// FuzzParseEndpoints: whatever surrounds a password, it never shows in an
// error or an endpoint's printed form, and an accepted URL's host is what
// follows the credentials.
func FuzzParseEndpoints(f *testing.F) {
	for _, s := range []string{"", "x", "a/b", "/", "?", "#", "@", "a@b", "%2F", "%zz", ":", "x/y@z", "12/", "8080/", "12?", "12#", "/"} {
		f.Add(s, "m:8080", "/service/marathon")
	}
	f.Add("pw", "[::1]:8080", "")
	f.Add("pw", "m:99999", "/")
	f.Fuzz(func(t *testing.T, pass, host, prefix string) {
		// The markers end the password; they cannot occur in anything but
		// it. What comes before them is free, so it may look like a port.
		const pre, post = "Pz7q", "Kx9w"
		raw := "http://admin:" + pass + pre + post + "@" + host + prefix
		eps, err := parseEndpoints([]string{raw}, "", false)
		if err != nil {
			if msg := err.Error(); strings.Contains(msg, pre) || strings.Contains(msg, post) {
				t.Fatalf("%q: error shows the password: %v", raw, err)
			}
			return
		}
		ep := eps[0]
		if strings.Contains(ep.redacted, pre) || strings.Contains(ep.redacted, post) ||
			strings.Contains(ep.base.String(), pre) || strings.Contains(ep.base.String(), post) {
			t.Fatalf("%q: endpoint %q shows the password", raw, ep.redacted)
		}
		if ep.auth == "" || ep.base.User != nil {
			t.Fatalf("%q: credentials not taken out: %+v", raw, ep)
		}
		if _, err := leaderEndpoint(ep.redacted, ep.auth); err != nil {
			t.Fatalf("%q: printed form %q does not parse back: %v", raw, ep.redacted, err)
		}
	})
}

// FuzzLeaderEndpoint: leader addresses come from headers and /v2/leader
// answers, i.e. from the network. Never a panic; never user info printed.
func FuzzLeaderEndpoint(f *testing.F) {
	for _, s := range []string{"http://leader:8080", "https://u:p@l:1/x/", "leader:8080", "", "http://", "http://[::1]:80", "http://a@b@c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		ep, err := leaderEndpoint(raw, "token=x")
		if err != nil {
			return
		}
		if ep.base.User != nil || strings.Contains(ep.base.Host, "@") {
			t.Fatalf("%q: printed as %q", raw, ep.redacted)
		}
		if ep.base.Scheme != "http" && ep.base.Scheme != "https" || ep.base.Hostname() == "" {
			t.Fatalf("%q: accepted as %q", raw, ep.redacted)
		}
	})
}

// authRecorder is an HTTP server that records the Authorization of every
// request and answers each with handler.
type authRecorder struct {
	srv  *httptest.Server
	mu   sync.Mutex
	auth []string
}

func newAuthRecorder(t *testing.T, tls bool, handler http.HandlerFunc) *authRecorder {
	a := &authRecorder{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.auth = append(a.auth, r.Header.Get("Authorization"))
		a.mu.Unlock()
		handler(w, r)
	})
	if tls {
		a.srv = httptest.NewTLSServer(h)
	} else {
		a.srv = httptest.NewServer(h)
	}
	t.Cleanup(a.srv.Close)
	return a
}

func (a *authRecorder) seen() (requests int, withAuth []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, v := range a.auth {
		if v != "" {
			withAuth = append(withAuth, v)
		}
	}
	return len(a.auth), withAuth
}

// An https Marathon redirecting to http on the same host name (another
// port) must not get the credentials sent in clear text. net/http keeps
// Authorization on a redirect to the same host name whatever the scheme,
// so pacer's own check has to look at the request as net/http built it.
func TestRedirectHTTPSToHTTPSameHost(t *testing.T) {
	t.Parallel()
	plain := newAuthRecorder(t, false, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"message":"not here"}`, http.StatusNotFound)
	})
	standby := newAuthRecorder(t, true, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.srv.URL+r.URL.RequestURI(), http.StatusFound)
	})
	if !strings.HasPrefix(plain.srv.URL, "http://127.0.0.1:") || !strings.HasPrefix(standby.srv.URL, "https://127.0.0.1:") {
		t.Fatalf("servers at %s and %s: want one host name", plain.srv.URL, standby.srv.URL)
	}
	url := strings.Replace(standby.srv.URL, "https://", "https://pacer:"+testSecret+"@", 1)
	s, _, _ := startLogged(t, Config{URLs: []string{url}, HTTPClient: standby.srv.Client()})
	waitFor(t, "the refusal, or a request over http", func() bool {
		n, _ := plain.seen()
		return n > 0 || strings.Contains(s.Status().LastError, "clear text")
	})
	if n, with := plain.seen(); len(with) > 0 {
		t.Errorf("%d of %d requests over http carried Authorization %q", len(with), n, with[0])
	}
	waitFor(t, "the refusal", func() bool { return strings.Contains(s.Status().LastError, "clear text") })
	if _, with := standby.seen(); len(with) == 0 {
		t.Error("the https standby never got the credentials")
	}
}

// A proxy in front of Marathon that redirects to a login page on another
// host must not receive Marathon's credentials: only Marathon's redirect
// to its leader (same API path, another host) carries them.
func TestRedirectToLoginPageWithholdsCredentials(t *testing.T) {
	t.Parallel()
	login := newAuthRecorder(t, false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte("<html><form>Sign in</form></html>"))
	})
	// localhost vs 127.0.0.1: another host to net/http.
	loginURL := strings.Replace(login.srv.URL, "127.0.0.1", "localhost", 1) + "/login?next="
	proxy := newAuthRecorder(t, false, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, loginURL+r.URL.Path, http.StatusFound)
	})
	url := strings.Replace(proxy.srv.URL, "http://", "http://pacer:"+testSecret+"@", 1)
	s, tb, _ := startLogged(t, Config{URLs: []string{url}})
	refused := func() bool {
		return strings.Contains(s.Status().LastError, "not sending the credentials to another host")
	}
	waitFor(t, "the refusal, or a request for the login page", func() bool {
		n, _ := login.seen()
		return n > 0 || refused()
	})
	if n, with := login.seen(); len(with) > 0 {
		t.Errorf("%d of %d requests to the login host carried Authorization %q", len(with), n, with[0])
	}
	waitFor(t, "the refusal", refused)
	if e := s.Status().LastError; !strings.Contains(e, "/login") {
		t.Errorf("LastError %q does not say where the redirect led", e)
	}
	if len(tb.Snapshot().Apps()) != 0 {
		t.Error("a login page became apps")
	}
}

// The rules of redirectAuth one by one, as net/http hands requests to it.
func TestRedirectAuthRules(t *testing.T) {
	t.Parallel()
	const auth = "Basic eA=="
	for _, tt := range []struct {
		from, to string
		keep     bool // the credentials follow, without error
	}{
		{"http://standby:8080/v2/events", "http://leader:8080/v2/events", true},
		{"https://standby:8443/v2/events", "https://leader:8443/v2/events", true},
		{"http://m/service/marathon/v2/events", "http://leader:8080/v2/events", true},
		{"http://standby:8080/v2/apps", "http://standby:8080/other", true}, // same server
		{"https://standby:8443/v2/events", "http://standby:8080/v2/events", false},
		{"https://mesos/v2/events", "http://m1.mesos:8080/v2/events", false},
		{"http://standby:8080/v2/events", "http://sso:80/login", false},
		{"http://standby:8080/v2/events", "http://standby:9000/login", false},
		{"http://m.corp/v2/apps", "http://sub.m.corp/login", false}, // net/http keeps it for a subdomain
		{"http://standby:8080/v2/apps", "http://leader:8080/", false},
	} {
		from, _ := http.NewRequest("GET", tt.from, nil)
		from.Header.Set("Authorization", auth)
		to, _ := http.NewRequest("GET", tt.to, nil)
		to.Header.Set("Authorization", auth) // the worst net/http may do
		err := redirectAuth(to, []*http.Request{from})
		if got := to.Header.Get("Authorization") == auth && err == nil; got != tt.keep {
			t.Errorf("%s -> %s: kept = %v (err %v), want %v", tt.from, tt.to, got, err, tt.keep)
		}
		if !tt.keep && to.Header.Get("Authorization") != "" {
			t.Errorf("%s -> %s: refused but Authorization left on the request", tt.from, tt.to)
		}
	}
	// Without credentials, redirects are net/http's business.
	from, _ := http.NewRequest("GET", "https://a/v2/events", nil)
	to, _ := http.NewRequest("GET", "http://b/login", nil)
	if err := redirectAuth(to, []*http.Request{from}); err != nil {
		t.Errorf("no credentials: %v", err)
	}
}

// Events are held until the state goroutine takes them; their bytes, not
// only their number, are bounded (an event may be 16 MiB).
func TestQueueOverflowByBytes(t *testing.T) {
	t.Parallel()
	q := newEventQueue()
	ev := make([]byte, 1<<20) // shared: the test itself holds 1 MiB
	n := maxQueuedBytes/len(ev) + 3
	for range n {
		q.Push(ev)
	}
	items, overflow := q.Take()
	held := 0
	for _, it := range items {
		held += len(it)
	}
	if !overflow || held > maxQueuedBytes {
		t.Fatalf("after %d MiB pushed: overflow %v, %d bytes held, limit %d", n, overflow, held, maxQueuedBytes)
	}
	q.Push(ev)
	if items, overflow = q.Take(); overflow || len(items) != 1 {
		t.Fatalf("after a Take: overflow %v, %d items", overflow, len(items))
	}
}

// FuzzEvent feeds arbitrary event JSON to the decoding and the state the
// stream reader's events go to: never a panic, app ids always absolute.
func FuzzEvent(f *testing.F) {
	for _, s := range []string{
		`{"eventType":"status_update_event","appId":"/a","taskId":"a.1","taskStatus":"TASK_RUNNING","host":"10.0.0.1","ports":[31000],"version":"2020-01-01T00:00:00.000Z"}`,
		`{"eventType":"status_update_event","appId":"a","taskId":"a.1","taskStatus":"TASK_KILLING","ports":[-1,70000]}`,
		`{"eventType":"deployment_info","plan":{"steps":[{"actions":[{"action":"ScaleApplication","app":"/a"}]}]},"currentStep":[{"type":"StartApplication","app":"b"}]}`,
		`{"eventType":"deployment_success","plan":{"steps":[{"action":"RestartApplication","pod":"/p"}]}}`,
		`{"eventType":"api_post_event","appDefinition":{"id":"/x y/../z"}}`,
		`{"eventType":"instance_changed_event","runSpecId":"/a","instanceId":"a.marathon-1"}`,
		`{"eventType":"app_terminated_event","appId":"/a"}`,
		`{"eventType":"deployment_info","currentStep":null}`,
	} {
		f.Add([]byte(s))
	}
	raw := readTestdata(f, "marathon-lb-zdd_apps.json")
	f.Fuzz(func(t *testing.T, data []byte) {
		var ev event
		if json.Unmarshal(data, &ev) != nil {
			return
		}
		_ = relevant(ev.EventType)
		if ids, _ := ev.appIDs(); slices.ContainsFunc(ids, func(id string) bool { return id == "" || id[0] != '/' }) {
			t.Fatalf("app ids %q", ids)
		}
		apps, _, err := decodeApps(raw)
		if err != nil {
			t.Fatal(err)
		}
		s := newState()
		s.applyFull(apps, s.next())
		var id string
		switch {
		case isHealthEvent(ev.EventType):
			id, _, _ = s.applyHealth(&ev, s.next())
		case ev.EventType == evStatusUpdate:
			id, _, _ = s.applyStatus(&ev, s.next())
		default:
			return
		}
		if id != "" && id[0] != '/' {
			t.Fatalf("app id %q", id)
		}
		b := testBuilder(true)
		for _, a := range s.apps {
			if a.def == nil {
				continue
			}
			var tasks []*task
			for _, e := range a.tasks {
				tasks = append(tasks, e.t)
			}
			for _, svc := range b.build(a.def, tasks).Services {
				for _, be := range svc.Backends {
					if !be.Addr.IsValid() || be.Addr.Port() == 0 {
						t.Fatalf("bad backend %+v", be)
					}
				}
			}
		}
	})
}

// FuzzDecodeAppResponse: GET /v2/apps/{id} answers, whatever they hold.
func FuzzDecodeAppResponse(f *testing.F) {
	f.Add([]byte(`{"app":` + string(readTestdata(f, "marathon-docs-app.json")) + `}`))
	f.Add([]byte(`{"app":null}`))
	f.Add([]byte(`{"app":{"id":"x","tasks":[null,{"id":""},{"id":"t","ports":[1,2,3]}]}}`))
	f.Add([]byte(`<html>login</html>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := decodeAppResponse(data)
		if err != nil {
			return
		}
		if d.ID == "" || d.ID[0] != '/' {
			t.Fatalf("bad id %q", d.ID)
		}
		if d.Def != nil {
			for _, tk := range d.Def.Tasks {
				if tk == nil || tk.ID == "" {
					t.Fatal("a task without an id survived decoding")
				}
			}
			a := testBuilder(true).build(d.Def, d.Def.Tasks)
			if a.Problem != "" && len(a.Services) > 0 {
				t.Fatal("app with a problem has services")
			}
		}
	})
}

// FuzzParsePortLabels: labels are typed by people; a value is accepted
// only in a shape the data planes can use.
func FuzzParsePortLabels(f *testing.F) {
	for _, s := range [][2]string{
		{"PORT", "10000"}, {"PORT", "-1"}, {"PORT", "99999999999999999999"}, {"MODE", "HTTP"},
		{"VHOST", "a.example.com, b.example.com"}, {"VHOST", "a b"}, {"PATH", "-i /api /v2"}, {"PATH", "-i"},
		{"BALANCE", "source"}, {"STICKY", "yes"}, {"ENABLED", "0"}, {"REDIRECT_TO_HTTPS", "maybe"},
	} {
		f.Add(s[0], s[1], true)
	}
	f.Fuzz(func(t *testing.T, name, value string, pacer bool) {
		prefix := prefixHAProxy
		if pacer {
			prefix = prefixPacer
		}
		labels := map[string]string{prefix + "0_" + name: value, prefix + "GROUP": value}
		_, _ = appGroups(labels)
		pl, err := parsePortLabels(labels, 0)
		if err != nil {
			if !strings.Contains(err.Error(), prefix+"0_") {
				t.Fatalf("error %v does not name the label", err)
			}
			return
		}
		if pl.Port < 0 || pl.Port > 65535 {
			t.Fatalf("port %d", pl.Port)
		}
		for _, h := range pl.VHosts {
			if h == "" || strings.ContainsAny(h, " /\t") || strings.ToLower(h) != h {
				t.Fatalf("vhost %q", h)
			}
		}
		for _, p := range pl.Paths {
			if p == "" || p[0] != '/' {
				t.Fatalf("path %q", p)
			}
		}
		if pl.PathsFold && len(pl.Paths) == 0 {
			t.Fatal("-i without paths")
		}
	})
}

// Event types come from the wire and become metric labels: a peer sending
// long or odd ones gets them counted as "other", not kept and printed on
// every scrape.
func TestOddEventTypesCountedAsOther(t *testing.T) {
	t.Parallel()
	f := newFakeMarathon(t, webApp())
	s, tb := startSource(t, Config{URLs: []string{f.srv.URL}})
	waitBackends(t, tb, "/shop/web", "shop_web.1@10.0.0.1:31001")
	st := f.stream(0)
	long := strings.Repeat("x", 1<<20)
	for _, typ := range []string{long, "a\"b\nc", "Status_Update_Event", "deployment_info"} {
		st.send(typ, map[string]any{})
	}
	waitFor(t, "four events counted", func() bool {
		n := uint64(0)
		for _, v := range s.EventsByType() {
			n += v
		}
		return n >= 4
	})
	got := s.EventsByType()
	for k := range got {
		if k != eventTypeKey(k) || len(k) > maxEventTypeLen {
			t.Errorf("counted under %.60q", k)
		}
	}
	if got["other"] != 3 || got[evDeploymentInfo] != 1 {
		t.Errorf("EventsByType = %v", got)
	}
}

// An error page that echoes the request's headers (a debugging proxy)
// must not put the basic-auth credentials into LastError or the logs.
func TestEchoedCredentialsScrubbed(t *testing.T) {
	t.Parallel()
	echo := newAuthRecorder(t, false, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "upstream failed; request had Authorization: "+r.Header.Get("Authorization"), http.StatusBadGateway)
	})
	url := strings.Replace(echo.srv.URL, "http://", "http://pacer:"+testSecret+"@", 1)
	s, _, _ := startLogged(t, Config{URLs: []string{url}})
	waitFor(t, "the 502", func() bool { return strings.Contains(s.Status().LastError, "502") })
	if e := s.Status().LastError; strings.Contains(e, "cGFjZXI6") || !strings.Contains(e, "<redacted>") {
		t.Errorf("LastError = %q", e)
	}
}
