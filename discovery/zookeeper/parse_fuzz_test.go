package zookeeper

import (
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// A digest password may hold '/' or '@'. The error for a zk:// URL whose
// password ends the server list early must not show any of it, and one
// that happens to parse must not make the password's tail the path.
func TestParseMarathonZKPasswordWithSlash(t *testing.T) {
	t.Parallel()
	const secret = "s3cret-pw"
	for _, in := range []string{
		"zk://u:ab/" + secret + "@zk1:2181/marathon",   // servers "u:ab": bad port
		"zk://u:/" + secret + "@zk1:2181/marathon",     // servers "u:": bad port
		"zk://u:2181/" + secret + "@zk1:2181/marathon", // servers "u:2181", path "/s3cret-pw@zk1:2181/marathon"
		"zk://u:" + secret + "@@zk1:x/m",
	} {
		got, err := ParseMarathonZK(in)
		if err == nil {
			t.Errorf("ParseMarathonZK(%q) = %+v, want an error", in, got)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("ParseMarathonZK(%q): error shows the password: %v", in, err)
		}
	}
	got, err := ParseMarathonZK("zk://u:ab%2F" + secret + "@zk1:2181/marathon")
	if err != nil || got.Auth != "u:ab/"+secret || got.Path != "/marathon" || !slices.Equal(got.Servers, []string{"zk1:2181"}) {
		t.Errorf("percent-encoded '/': %+v, %v", got, err)
	}
}

// FuzzParseMarathonZK: whatever the password holds, it never shows in an
// error, the servers or the path.
func FuzzParseMarathonZK(f *testing.F) {
	for _, s := range []string{"", "a/b", "/", "@", "a@b", "%2F", "%zz", ",", ":", "1/x@y", "2181/"} {
		f.Add(s, "zk1:2181,zk2", "/marathon")
	}
	f.Add("pw", "[::1]:2181", "/")
	f.Fuzz(func(t *testing.T, pass, servers, path string) {
		const pre, post = "Pz7q", "Kx9w"
		in := "zk://user:" + pass + pre + post + "@" + servers + path
		got, err := ParseMarathonZK(in)
		if err != nil {
			if msg := err.Error(); strings.Contains(msg, pre) || strings.Contains(msg, post) {
				t.Fatalf("%q: error shows the password: %v", in, err)
			}
			return
		}
		shown := strings.Join(got.Servers, ",") + " " + got.Path
		if strings.Contains(shown, pre) || strings.Contains(shown, post) {
			t.Fatalf("%q: servers and path %q hold the password", in, shown)
		}
		if validatePath(got.Path) != nil || len(got.Servers) == 0 {
			t.Fatalf("%q: accepted as %+v", in, got)
		}
	})
}

// FuzzParseServiceSpec: an accepted --zk-service is a DNS label, a valid
// ZooKeeper path and a port, and prints back as itself.
func FuzzParseServiceSpec(f *testing.F) {
	for _, s := range []string{"kafka=/nerve/kafka:9092", "web=/services/web", "root=/:80", "k=/x:0", "=/x", "k=/a:b:1", "k=/\x00", "k=/x/../y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		sp, err := ParseServiceSpec(in)
		if err != nil {
			return
		}
		if sp.Name == "" || validatePath(sp.Path) != nil || sp.ServicePort < 0 || sp.ServicePort > 65535 {
			t.Fatalf("%q: accepted as %+v", in, sp)
		}
		if back, err := ParseServiceSpec(sp.String()); err != nil || back != sp {
			t.Fatalf("%q: %+v prints as %q, which reads back as %+v, %v", in, sp, sp.String(), back, err)
		}
	})
}

// FuzzParseServers: every server accepted is host:port with a usable port.
func FuzzParseServers(f *testing.F) {
	for _, s := range []string{"zk1:2181,zk2", "[::1]:2181", "[::1]", ":2181", "a:0", ",,", "a:b:c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		servers, err := ParseServers(in)
		if err != nil {
			return
		}
		for _, s := range servers {
			host, port, err := net.SplitHostPort(s)
			n, perr := strconv.Atoi(port)
			if err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
				t.Fatalf("%q: server %q", in, s)
			}
		}
	})
}

// FuzzParseHostPort: leader node data from ZooKeeper is host:port, or
// skipped; what is accepted reads back as itself.
func FuzzParseHostPort(f *testing.F) {
	for _, s := range []string{"m1:8080", " m1:8080\n", "[::1]:8080", "::1:8080", "m1", "m1:0", "m_1:1", "-m:1", "m:+1", "m:08080"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		hp, err := parseHostPort(in)
		if err != nil {
			return
		}
		if back, err := parseHostPort(hp); err != nil || back != hp {
			t.Fatalf("%q: %q reads back as %q, %v", in, hp, back, err)
		}
	})
}

// FuzzSeq: election node names are whatever is in ZooKeeper; ordering them
// never panics and always sorts by sequence.
func FuzzSeq(f *testing.F) {
	f.Add("_c_0a7e-latch-0000000012", "member_0000000001", "member_-1000000001")
	f.Add("latch-", "member_", "latch-99999999999999999999")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		for _, seq := range []func(string) (int64, bool){latchSeq, memberSeq} {
			got := bySeq([]string{a, b, c}, seq)
			for i := 1; i < len(got); i++ {
				if got[i-1].seq > got[i].seq {
					t.Fatalf("not sorted: %+v", got)
				}
			}
		}
	})
}

// A malformed server in --zk stops pacer at start with the reason, rather
// than being dialled in vain for ever.
func TestParseServersRejectsBadHosts(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"0]0", "zk1]:2181", "zk 1:2181", "zk1:2181,-zk2"} {
		if got, err := ParseServers(in); err == nil {
			t.Errorf("ParseServers(%q) = %v, want an error", in, got)
		}
	}
	got, err := ParseServers("zk1, 10.0.0.1:2182,[::1],zk_2.example:2181")
	if want := []string{"zk1:2181", "10.0.0.1:2182", "[::1]:2181", "zk_2.example:2181"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("ParseServers = %v, %v; want %v", got, err, want)
	}
}
