package marathonsim

import "testing"

// FuzzParseVersion: Config.Version is whatever a test or `lb demo` passes;
// never a panic, and what is accepted compares with itself.
func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{"1.10.17", "0.8", "1.3.7-RC1", "", "1.2.3.4", "-1", "1..2", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := parseVersion(s)
		if err != nil {
			return
		}
		for _, n := range v {
			if n < 0 {
				t.Fatalf("%q: %v", s, v)
			}
		}
		if !v.atLeast(v[0], v[1], v[2]) {
			t.Fatalf("%q: %v is not at least itself", s, v)
		}
	})
}

// FuzzParseLeader: a leader URL is http[s] with a host, or refused.
func FuzzParseLeader(f *testing.F) {
	for _, s := range []string{"http://127.0.0.1:8080/", "https://m:8443", "m:8080", "", "http://", "ftp://m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := parseLeader(s)
		if err != nil {
			return
		}
		if u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			t.Fatalf("%q: accepted as %v", s, u)
		}
	})
}
