// Package redact hides credentials in URLs that pacer cannot parse, or
// has not validated yet, before they reach an error or a log line.
package redact

import "strings"

// Userinfo removes what may be user info from raw, a URL or what was meant
// to be one: everything between the scheme (if any) and the last '@'. It
// errs on the side of hiding: a password may hold any character, '/' and
// '@' included, so the last '@' is the only safe end of it, and a scheme
// pacer does not take (a typo) hides the password all the same.
func Userinfo(raw string) string {
	at := strings.LastIndex(raw, "@")
	if at < 0 {
		return raw
	}
	scheme := ""
	if i := strings.Index(raw[:at], "://"); i >= 0 {
		scheme = raw[:i+3]
	}
	return scheme + "redacted@" + raw[at+1:]
}
