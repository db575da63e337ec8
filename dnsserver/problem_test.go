package dnsserver

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/pacer-lb/pacer/discovery"
)

// An app that pacer stops understanding (a load-balancer label typo) and
// understands again keeps its marathon names over real sockets at every
// step, answering only healthy tasks; only its lb names follow routing.
func TestProblemAppKeepsDNSAcrossFixes(t *testing.T) {
	t.Parallel()
	tb := discovery.NewTable()
	_, udp, _ := runServer(t, tb)
	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}

	api1, api2 := backend("api.1", "10.0.2.1:31000"), backend("api.2", "10.0.2.2:31001")
	routed := func() *discovery.App {
		return &discovery.App{ID: "/api", Services: []*discovery.Service{
			service("/api", 0, 10010, "http", discovery.ProtoTCP, api1, api2)}}
	}
	// With the typo api.2 is also unhealthy: DNS must drop it.
	typo := func() *discovery.App { return problemApp("/api", api1) }

	t1, t2 := target("api", "api.1", "marathon"), target("api", "api.2", "marathon")
	type answer struct {
		rcode  int
		answer []string
	}
	nx := answer{rcode: dns.RcodeNameError}
	healthyBoth := map[string]answer{
		"api.marathon.mesos. A":               {answer: []string{"A 10.0.2.1", "A 10.0.2.2"}},
		"_api._tcp.marathon.mesos. SRV":       {answer: []string{"SRV 0 1 31000 " + t1, "SRV 0 1 31001 " + t2}},
		"_http._api._tcp.marathon.mesos. SRV": {answer: []string{"SRV 0 1 31000 " + t1, "SRV 0 1 31001 " + t2}},
		t1 + " A":                             {answer: []string{"A 10.0.2.1"}},
		t2 + " A":                             {answer: []string{"A 10.0.2.2"}},
		"_api._tcp.lb.mesos. SRV":             {answer: []string{"SRV 0 1 10010 lb.mesos."}},
	}
	problem := map[string]answer{
		"api.marathon.mesos. A":               {answer: []string{"A 10.0.2.1"}},
		"_api._tcp.marathon.mesos. SRV":       {answer: []string{"SRV 0 1 31000 " + t1}},
		"_http._api._tcp.marathon.mesos. SRV": {answer: []string{"SRV 0 1 31000 " + t1}},
		t1 + " A":                             {answer: []string{"A 10.0.2.1"}},
		t2 + " A":                             nx,
		"_api._tcp.lb.mesos. SRV":             {}, // NODATA: pacer does not serve it
	}
	gone := map[string]answer{}
	for q := range healthyBoth {
		gone[q] = nx
	}

	steps := []struct {
		name string
		app  *discovery.App
		want map[string]answer
	}{
		{"routed", routed(), healthyBoth},
		{"label typo", typo(), problem},
		{"label fixed", routed(), healthyBoth},
		{"typo again", typo(), problem},
		{"removed", nil, gone},
	}
	for _, st := range steps {
		u := discovery.Update{Source: "marathon", Apps: []*discovery.App{st.app}}
		if st.app == nil {
			u = discovery.Update{Source: "marathon", Removed: []string{"/api"}}
		}
		tb.Apply(u)
		for q, want := range st.want {
			name, typ := splitQuery(q)
			r, _, err := c.Exchange(question(name, typ), udp)
			if err != nil {
				t.Fatalf("%s: %s: %v", st.name, q, err)
			}
			if got := (answer{r.Rcode, rdatas(r.Answer)}); got.rcode != want.rcode || !slices.Equal(got.answer, want.answer) {
				t.Errorf("%s: %s = %s %q, want %s %q", st.name, q,
					dns.RcodeToString[got.rcode], got.answer, dns.RcodeToString[want.rcode], want.answer)
			}
		}
	}
}

// splitQuery splits "name TYPE".
func splitQuery(q string) (string, uint16) {
	i := len(q) - 1
	for q[i] != ' ' {
		i--
	}
	return q[:i], dns.StringToType[q[i+1:]]
}

// An app with a Problem and a name too long for a per-task label keeps its
// SRV targets resolvable: they are found through the cut name too.
func TestProblemAppLongNameTargets(t *testing.T) {
	t.Parallel()
	id := "/" + strings.Repeat("a", 62) // the longest an SRV name takes; cut to 57 in task labels
	tb := discovery.NewTable()
	tb.Apply(discovery.Update{Source: "marathon", Apps: []*discovery.App{problemApp(id, backend("long.1", "10.0.3.1:31000"))}})
	_, udp, _ := runServer(t, tb)
	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	r, _, err := c.Exchange(question("_"+strings.Repeat("a", 62)+"._tcp.marathon.mesos.", dns.TypeSRV), udp)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Answer) != 1 {
		t.Fatalf("SRV answer = %v", r.Answer)
	}
	tgt := r.Answer[0].(*dns.SRV).Target
	if r, _, err = c.Exchange(question(tgt, dns.TypeA), udp); err != nil {
		t.Fatal(err)
	}
	if got := rdatas(r.Answer); !slices.Equal(got, []string{"A 10.0.3.1"}) {
		t.Errorf("%s A = %s %q, want A 10.0.3.1", tgt, dns.RcodeToString[r.Rcode], got)
	}
}
