package main

import (
	"slices"
	"testing"
)

// A password may hold '/', ':' or '@': the user info runs to the last '@'.
func TestRedactUserinfoOddPasswords(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"http://admin:se/cret@marathon:8080":                "http://admin:xxxxx@marathon:8080",
		"http://admin:a:b@c@marathon:8080/x,http://m2:8080": "http://admin:xxxxx@marathon:8080/x,http://m2:8080",
		"zk://u:p/w@zk1:2181,zk2:2181/marathon":             "zk://u:xxxxx@zk1:2181,zk2:2181/marathon",
		"http://token@marathon:8080":                        "http://token@marathon:8080",
	} {
		if got := redactUserinfo(in); got != want {
			t.Errorf("redactUserinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

// The "pacer running" line names the Marathon URLs with the same
// redaction.
func TestRedactAll(t *testing.T) {
	t.Parallel()
	got := redactAll([]string{"http://admin:se/cret@m1:8080", "https://m2:8443"})
	if want := []string{"http://admin:xxxxx@m1:8080", "https://m2:8443"}; !slices.Equal(got, want) {
		t.Fatalf("redactAll = %q, want %q", got, want)
	}
}
