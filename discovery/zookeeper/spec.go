package zookeeper

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/internal/redact"
)

// ServiceSpec is one --zk-service: the members under Path form service Name,
// served on ServicePort (0: DNS only, no TCP listener).
type ServiceSpec struct {
	Name        string
	Path        string
	ServicePort int
}

// String prints the spec as the flag takes it.
func (s ServiceSpec) String() string {
	if s.ServicePort == 0 {
		return s.Name + "=" + s.Path
	}
	return s.Name + "=" + s.Path + ":" + strconv.Itoa(s.ServicePort)
}

// ParseServiceSpec reads "NAME=/path[:SERVICEPORT]", e.g. "kafka=/kafka/brokers:9092".
// NAME must already be a valid DNS label, because it is one
// (NAME.zk.<domain>); the error says what to change.
func ParseServiceSpec(s string) (ServiceSpec, error) {
	const want = "want NAME=/path[:SERVICEPORT], e.g. kafka=/nerve/kafka:9092"
	name, rest, ok := strings.Cut(strings.TrimSpace(s), "=")
	if !ok {
		return ServiceSpec{}, fmt.Errorf("%q: no '=': %s", s, want)
	}
	spec := ServiceSpec{Name: name, Path: rest}
	if name == "" {
		return ServiceSpec{}, fmt.Errorf("%q: empty NAME: %s", s, want)
	}
	if l := discovery.Label(name); l != name {
		return ServiceSpec{}, fmt.Errorf("%q: NAME %q is not a DNS label (lower-case letters, digits and '-', at most 63): try %q", s, name, l)
	}
	if i := strings.LastIndexByte(rest, ':'); i >= 0 {
		port, err := strconv.Atoi(rest[i+1:])
		if err != nil || port < 1 || port > 65535 {
			return ServiceSpec{}, fmt.Errorf("%q: SERVICEPORT %q is not a port 1-65535", s, rest[i+1:])
		}
		spec.Path, spec.ServicePort = rest[:i], port
	}
	if err := validatePath(spec.Path); err != nil {
		return ServiceSpec{}, fmt.Errorf("%q: %w: %s", s, err, want)
	}
	return spec, nil
}

// validatePath applies ZooKeeper's path rules (PathUtils.validatePath):
// absolute, no empty, "." or ".." segment, no trailing slash, no control
// characters.
func validatePath(p string) error {
	switch {
	case p == "":
		return errors.New("empty path")
	case p[0] != '/':
		return fmt.Errorf("path %q does not start with '/'", p)
	case p == "/":
		return nil
	case strings.HasSuffix(p, "/"):
		return fmt.Errorf("path %q ends with '/'", p)
	}
	for _, seg := range strings.Split(p[1:], "/") {
		switch seg {
		case "":
			return fmt.Errorf("path %q has an empty segment", p)
		case ".", "..":
			return fmt.Errorf("path %q has a relative segment %q", p, seg)
		}
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f || (r >= 0xd800 && r <= 0xf8ff) || (r >= 0xfff0 && r <= 0xffff) {
			return fmt.Errorf("path %q has an invalid character %U", p, r)
		}
	}
	return nil
}

// ParseServers reads a ZooKeeper ensemble, "host:port[,host:port...]" (the
// --zk flag). A server without a port gets 2181.
func ParseServers(s string) ([]string, error) {
	var out []string
	for _, hp := range strings.Split(s, ",") {
		hp = strings.TrimSpace(hp)
		if hp == "" {
			continue
		}
		host, port, err := net.SplitHostPort(hp)
		if err != nil {
			// No port: ZooKeeper's default client port.
			host, port = strings.Trim(hp, "[]"), "2181"
		}
		if host == "" {
			return nil, fmt.Errorf("server %q: no host", hp)
		}
		if err := validHost(host); err != nil {
			return nil, fmt.Errorf("server %q: %w", hp, err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("server %q: bad port", hp)
		}
		out = append(out, net.JoinHostPort(host, port))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%q: no servers: want host:port[,host:port]", s)
	}
	return out, nil
}

// IsMarathonZK reports whether a --marathon value names ZooKeeper rather
// than Marathon itself.
func IsMarathonZK(s string) bool { return strings.HasPrefix(strings.TrimSpace(s), "zk://") }

// ParseMarathonZK reads --marathon zk://[user:pass@]host:port[,host:port]/marathon,
// Marathon's own --zk syntax. user:pass is ZooKeeper digest auth (Marathon
// then creates its nodes readable only by that identity). Errors never show
// the password.
func ParseMarathonZK(s string) (LeaderConfig, error) {
	s = strings.TrimSpace(s)
	const want = "want zk://[user:pass@]host:port[,host:port]/marathon"
	rest, ok := strings.CutPrefix(s, "zk://")
	if !ok {
		return LeaderConfig{}, fmt.Errorf("%q: %s", redact.Userinfo(s), want)
	}
	var cfg LeaderConfig
	slash := strings.IndexByte(rest, '/')
	if slash < 0 {
		return LeaderConfig{}, fmt.Errorf("%q: no path: %s", redact.Userinfo(s), want)
	}
	hosts, path := rest[:slash], rest[slash:]
	if strings.Contains(path, "@") {
		// "zk://user:a/b@host/marathon": the password's tail looks like
		// the path. Marathon's root never holds an '@'.
		return LeaderConfig{}, fmt.Errorf("%q: '@' after the servers: write a '/' in the user name or password as %%2F: %s", redact.Userinfo(s), want)
	}
	if at := strings.LastIndexByte(hosts, '@'); at >= 0 {
		user, err := url.PathUnescape(hosts[:at])
		if err != nil || !strings.Contains(user, ":") {
			return LeaderConfig{}, fmt.Errorf("%q: credentials must be user:pass: %s", redact.Userinfo(s), want)
		}
		cfg.Auth, hosts = user, hosts[at+1:]
	}
	servers, err := ParseServers(hosts)
	if err != nil {
		return LeaderConfig{}, fmt.Errorf("%q: %w", redact.Userinfo(s), err)
	}
	path = strings.TrimRight(path, "/")
	if path == "" {
		path = "/"
	}
	if err := validatePath(path); err != nil {
		return LeaderConfig{}, fmt.Errorf("%q: %w", redact.Userinfo(s), err)
	}
	cfg.Servers, cfg.Path = servers, path
	return cfg, nil
}
