package main

import (
	"bytes"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestConfigErrorsNameTheFlag(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string // the error must contain this
	}{
		{"range out of order", []string{"--ports", "8100-8000"}, nil, "--ports: \"8100-8000\": MIN is above MAX"},
		{"range garbage", []string{"--ports", "x"}, nil, "--ports"},
		{"bad scheme", []string{"--marathon", "ftp://m:8080"}, nil, "--marathon"},
		{"password never echoed", []string{"--marathon", "ftp://u:s3cret@m:8080"}, nil, "ftp://redacted@m:8080"},
		{"password with a comma never echoed", []string{"--marathon", "http://u:12,s3cret@m:8080"}, nil, "must be written %2C"},
		{"no scheme, password never echoed", []string{"--marathon", "mailto:u:s3cret/x@m:8080"}, nil, "redacted@m:8080"},
		{"unknown flag", []string{"--nope"}, nil, "flag provided but not defined: -nope"},
		{"bad bind", []string{"--bind", "everywhere"}, nil, "--bind"},
		{"bad admin", []string{"--admin", "9090"}, nil, "--admin"},
		{"bad env", nil, map[string]string{"PACER_PORTS": "1-2-3"}, "PACER_PORTS"},
		{"bad env duration", nil, map[string]string{"PACER_DNS_TTL": "x"}, `PACER_DNS_TTL="x": invalid value for --dns-ttl`},
		{"bad duration", []string{"--drain-timeout", "0s"}, nil, "--drain-timeout"},
		{"bad log level", []string{"--log-level", "loud"}, nil, "--log-level"},
		{"bad domain", []string{"--domain", "a..b"}, nil, "--domain: \"a..b\" is not a DNS name"},
		{"bad domain, DNS off", []string{"--domain", "my_zone", "--dns", ""}, nil, "--domain"},
		// What a bad value of each kind of flag accepts, not only "parse error".
		{"bad duration syntax", []string{"--dns-ttl", "5"}, nil, "-dns-ttl: want a duration such as 3s"},
		{"bad integer", []string{"--max-conns", "many"}, nil, "-max-conns: want a whole number"},
		{"bad boolean", []string{"--keep-unreachable=maybe"}, nil, "-keep-unreachable: want true or false"},
		{"bad env boolean", nil, map[string]string{"PACER_TRUST_FORWARDED": "nope"}, "--trust-forwarded: want true or false"},
		// A CA file that cannot serve stops pacer at start, naming the flag.
		{"missing CA file", []string{"--marathon-ca", "/nonexistent/ca.pem"}, nil, "--marathon-ca: open /nonexistent/ca.pem"},
		{"CA file without a certificate", []string{"--marathon-ca", "config_test.go"}, nil, "--marathon-ca: config_test.go: no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parseConfig("lb", tc.args, env(tc.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error leaks the password: %v", err)
			}
		})
	}
}

// The hints on bad values leave good ones alone: a boolean flag given
// alone is true, durations and integers parse, the defaults stand.
func TestConfigHintedFlagsStillParse(t *testing.T) {
	t.Parallel()
	c, err := parseConfig("lb", []string{"--marathon", "http://m:8080", "--trust-forwarded", "--keep-unreachable=false", "--dns-ttl", "7s", "--max-conns", "12"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !c.trustForwarded || c.keepUnreachable || c.dnsTTL != 7*time.Second || c.maxConns != 12 || c.healthRise != 2 || c.idleTimeout != time.Hour {
		t.Fatalf("config = %+v", c)
	}
}

func TestConfigEnvironmentAndPrecedence(t *testing.T) {
	t.Parallel()
	e := env(map[string]string{
		"PACER_PORTS":    "10000-10100",
		"PACER_MARATHON": "http://a:8080,http://b:8080",
		"PORT0":          "31005",
		"PACER_BIND":     "127.0.0.1",
	})
	c, err := parseConfig("lb", []string{"--bind", "0.0.0.0"}, e, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.portMin != 10000 || c.portMax != 10100 {
		t.Errorf("ports = %d-%d, want the environment's 10000-10100", c.portMin, c.portMax)
	}
	if len(c.marathon) != 2 {
		t.Errorf("marathon = %v, want two URLs", c.marathon)
	}
	if c.admin != ":31005" {
		t.Errorf("admin = %q, want :$PORT0 when run by Marathon", c.admin)
	}
	if c.bind != "0.0.0.0" {
		t.Errorf("bind = %q: the command line must win over PACER_BIND", c.bind)
	}
}

// A PACER_* variable set empty sets its flag empty, as the flag would:
// PACER_DNS= turns DNS off (deploy/marathon.json's way to free port 8053).
func TestConfigEmptyVariableSetsItsFlag(t *testing.T) {
	t.Parallel()
	c, err := parseConfig("lb", nil, env(map[string]string{"PACER_MARATHON": "http://m:8080", "PACER_DNS": ""}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.dns != "" {
		t.Errorf("dns = %q with PACER_DNS set empty, want DNS off", c.dns)
	}
	if c, _ := parseConfig("lb", nil, env(map[string]string{"PACER_MARATHON": "http://m:8080"}), io.Discard); c.dns != ":8053" {
		t.Errorf("dns = %q with PACER_DNS unset, want the default :8053", c.dns)
	}
}

// "*" in --group means every app, also beside other groups: dropping it
// here would narrow "--group external,*" to external's apps alone.
func TestConfigGroupStarKeepsEveryApp(t *testing.T) {
	t.Parallel()
	c, err := parseConfig("lb", []string{"--marathon", "http://m:8080", "--group", "external, *"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.groups, ",") != "external,*" {
		t.Errorf("groups = %q, want external and *", c.groups)
	}
}

func TestHelpIsGroupedWithExamples(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if _, err := parseConfig("lb", []string{"--help"}, env(nil), &out); err != errHelp {
		t.Fatalf("err = %v, want errHelp", err)
	}
	for _, want := range []string{"Examples:", "Marathon:", "--marathon", "--wait-for-backend", "PACER_<FLAG>"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

// --marathon's default comes from $MARATHON_URL, which may carry a
// password; --help shows the default, never the password.
func TestHelpHidesThePasswordOfMarathonURL(t *testing.T) {
	t.Parallel()
	for value, want := range map[string]string{
		"http://ops:s3cret@marathon-1:8080,https://ops:s3cret@marathon-2:8443/": "http://ops:xxxxx@marathon-1:8080,https://ops:xxxxx@marathon-2:8443/",
		"zk://ops:s3cret@zk-1:2181,zk-2:2181/marathon":                          "zk://ops:xxxxx@zk-1:2181,zk-2:2181/marathon",
		"http://marathon:8080": "http://marathon:8080",
	} {
		var out bytes.Buffer
		if _, err := parseConfig("lb", []string{"--help"}, env(map[string]string{"MARATHON_URL": value}), &out); err != errHelp {
			t.Fatalf("err = %v, want errHelp", err)
		}
		if strings.Contains(out.String(), "s3cret") {
			t.Errorf("MARATHON_URL=%s: --help shows the password:\n%s", value, out.String())
		}
		if !strings.Contains(out.String(), "(default "+want+")") {
			t.Errorf("MARATHON_URL=%s: --help lacks the default %s", value, want)
		}
	}
}

// Readiness holds once reached, whatever the check says after.
func TestReadinessLatches(t *testing.T) {
	t.Parallel()
	state := false
	ready := latch(func() bool { return state })
	if ready() {
		t.Fatal("ready before the check held")
	}
	state = true
	if !ready() {
		t.Fatal("not ready once the check held")
	}
	state = false // a table change the planes have not applied yet
	if !ready() {
		t.Fatal("ready went back to starting")
	}
}

// The probe timeout reaches the checker as given: it caps it by each
// check's interval, which a label may set above --health-interval.
func TestHealthTimeoutNotCappedByTheGlobalInterval(t *testing.T) {
	t.Parallel()
	c, err := parseConfig("lb", []string{"--marathon", "http://m:8080", "--health-interval", "1s", "--health-timeout", "5s"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := healthConfig(c).Timeout; got != 5*time.Second {
		t.Fatalf("checker timeout %v, want the 5s given", got)
	}
}

// Marathon sets $HOST to the agent's host name, which Debian's /etc/hosts
// maps to a loopback address: lb.<domain> must not send every client to its
// own loopback. Such a $HOST gives way to the address pacer picks with no
// $HOST at all; one that does not resolve stops pacer with the fix;
// --advertise is taken as given.
func TestAdvertiseSkipsALoopbackHOST(t *testing.T) {
	t.Parallel()
	advertise := func(args []string, env map[string]string) (netip.Addr, string) {
		t.Helper()
		c, err := parseConfig("lb", args, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		return c.advertise, c.advertiseNote
	}
	fallback, _ := advertise(nil, nil)
	for _, host := range []string{"localhost", "127.0.1.1"} {
		got, note := advertise(nil, map[string]string{"HOST": host})
		if got != fallback || note == "" {
			t.Errorf("HOST=%s: advertise %v (note %q), want %v as without $HOST, with a note", host, got, note, fallback)
		}
	}
	if _, err := parseConfig("lb", nil, env(map[string]string{"HOST": "no-such-host.invalid"}), io.Discard); err == nil || !strings.Contains(err.Error(), "--advertise") {
		t.Errorf("HOST that does not resolve: %v, want an error naming --advertise", err)
	}
	if got, note := advertise(nil, map[string]string{"HOST": "192.0.2.7"}); got != netip.MustParseAddr("192.0.2.7") || note != "" {
		t.Errorf("HOST=192.0.2.7: advertise %v (note %q)", got, note)
	}
	if got, _ := advertise([]string{"--advertise", "localhost"}, map[string]string{"HOST": "192.0.2.7"}); !got.IsLoopback() {
		t.Errorf("--advertise localhost: %v, want loopback as asked", got)
	}
}

// A readable PEM file of certificates passes --marathon-ca's check at start.
func TestConfigAcceptsAPEMCAFile(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	block := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(ca, block, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := parseConfig("lb", []string{"--marathon", srv.URL, "--marathon-ca", ca}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.marathonCA != ca {
		t.Fatalf("marathonCA = %q, want %q", c.marathonCA, ca)
	}
}
