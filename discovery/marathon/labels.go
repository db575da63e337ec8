package marathon

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/pacer-lb/pacer/discovery"
)

// Label prefixes, in order of precedence. marathon-lb's HAPROXY_* labels are
// read too so that its users switch without relabelling.
const (
	prefixPacer   = "PACER_"
	prefixHAProxy = "HAPROXY_"
)

// lookupLabel returns the value of PACER_<name>, else HAPROXY_<name>, and the
// key it came from (for messages).
func lookupLabel(labels map[string]string, name string) (value, key string, ok bool) {
	if v, ok := labels[prefixPacer+name]; ok {
		return v, prefixPacer + name, true
	}
	if v, ok := labels[prefixHAProxy+name]; ok {
		return v, prefixHAProxy + name, true
	}
	return "", "", false
}

// appGroups returns the app's GROUP label as a list (comma separated, as
// marathon-lb's HAPROXY_GROUP) and the raw value.
func appGroups(labels map[string]string) ([]string, string) {
	v, _, ok := lookupLabel(labels, "GROUP")
	if !ok {
		return nil, ""
	}
	var out []string
	for g := range strings.SplitSeq(v, ",") {
		if g = strings.TrimSpace(g); g != "" {
			out = append(out, g)
		}
	}
	return out, strings.TrimSpace(v)
}

// portLabels is what the labels say about one port index.
type portLabels struct {
	Disabled        bool
	Port            int    // 0: not set
	Mode            string // "", "tcp" or "http"
	VHosts          []string
	Paths           []string
	PathsFold       bool
	Balance         discovery.Balance
	Sticky          bool
	RedirectToHTTPS bool
}

// parsePortLabels reads the {n}_* labels of port index n. An invalid value is
// an error naming the label, so the app can be shown with the reason.
func parsePortLabels(labels map[string]string, n int) (portLabels, error) {
	var pl portLabels
	if len(labels) == 0 {
		return pl, nil
	}
	name := func(s string) string { return strconv.Itoa(n) + "_" + s }

	if v, key, ok := lookupLabel(labels, name("ENABLED")); ok {
		b, err := parseBool(v)
		if err != nil {
			return pl, labelError(key, v, "want true or false (or yes/no)")
		}
		pl.Disabled = !b
	}
	if v, key, ok := lookupLabel(labels, name("PORT")); ok {
		p, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || p < 1 || p > 65535 {
			return pl, labelError(key, v, "want a port number 1-65535")
		}
		pl.Port = p
	}
	if v, key, ok := lookupLabel(labels, name("MODE")); ok {
		switch m := strings.ToLower(strings.TrimSpace(v)); m {
		case "tcp", "http":
			pl.Mode = m
		default:
			return pl, labelError(key, v, "want tcp or http")
		}
	}
	if v, key, ok := lookupLabel(labels, name("VHOST")); ok {
		for h := range strings.SplitSeq(v, ",") {
			h = strings.ToLower(strings.TrimSpace(h))
			if h == "" {
				continue
			}
			if strings.ContainsAny(h, " /\t") {
				return pl, labelError(key, v, "want a comma-separated list of host names")
			}
			pl.VHosts = append(pl.VHosts, h)
		}
	}
	if v, key, ok := lookupLabel(labels, name("PATH")); ok {
		// marathon-lb writes the value into HAProxy's path_beg ACL: prefixes
		// separated by spaces, and -i for a match in any case.
		for _, f := range strings.Fields(v) {
			switch {
			case f == "-i":
				pl.PathsFold = true
			case f[0] == '/':
				pl.Paths = append(pl.Paths, f)
			default:
				return pl, labelError(key, v, "want path prefixes starting with /, separated by spaces, optionally after -i")
			}
		}
		if pl.PathsFold && len(pl.Paths) == 0 {
			return pl, labelError(key, v, "want path prefixes starting with /, separated by spaces, optionally after -i")
		}
	}
	if v, key, ok := lookupLabel(labels, name("BALANCE")); ok {
		// marathon-lb hands the value to HAProxy's balance. static-rr is
		// roundrobin without HAProxy's dynamic weights, which pacer has not
		// got; random is HAProxy's random(2), the better of two random
		// picks by load, which is pacer's leastconn on many backends.
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "roundrobin", "static-rr", "":
			pl.Balance = discovery.BalanceRoundRobin
		case "leastconn", "random":
			pl.Balance = discovery.BalanceLeastConn
		case "source":
			pl.Balance = discovery.BalanceSource
		default:
			return pl, labelError(key, v, "want roundrobin, leastconn or source (static-rr and random are read as roundrobin and leastconn; HAProxy's other algorithms have no pacer equivalent)")
		}
	}
	if v, key, ok := lookupLabel(labels, name("STICKY")); ok {
		b, err := parseBool(v)
		if err != nil {
			return pl, labelError(key, v, "want true or false (or yes/no)")
		}
		pl.Sticky = b
	}
	if v, key, ok := lookupLabel(labels, name("REDIRECT_TO_HTTPS")); ok {
		b, err := parseBool(v)
		if err != nil {
			return pl, labelError(key, v, "want true or false (or yes/no)")
		}
		pl.RedirectToHTTPS = b
	}
	return pl, nil
}

// parseBool reads a boolean label in any case. marathon-lb takes true, t,
// yes and y for true and anything else for false; pacer takes those, their
// opposites, 1/0 and on/off, and calls anything else an error rather than
// guess (a typo in ENABLED would otherwise silently take a port out).
func parseBool(v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "t", "yes", "y", "on", "1":
		return true, nil
	case "false", "f", "no", "n", "off", "0":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean", v)
}

func labelError(key, value, want string) error {
	if len(value) > 64 {
		value = value[:64] + "..."
	}
	return fmt.Errorf("label %s=%q: %s", key, value, want)
}
