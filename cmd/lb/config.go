package main

import (
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pacer-lb/pacer/discovery"
	"github.com/pacer-lb/pacer/discovery/zookeeper"
	"github.com/pacer-lb/pacer/internal/redact"
)

// config is everything the command line and the environment decide.
type config struct {
	marathon []string
	// marathonZK is set when --marathon is zk://...: the Marathon leader is
	// found in ZooKeeper instead of at fixed URLs.
	marathonZK      *zookeeper.LeaderConfig
	zkServers       []string
	zkServices      []zookeeper.ServiceSpec
	zkAnnounce      string
	marathonToken   string
	marathonCA      string
	groups          []string
	bind            string
	portMin         int
	portMax         int
	admin           string
	dns             string
	domain          string
	dnsTTL          time.Duration
	advertise       netip.Addr
	advertiseNote   string // why $HOST was not taken, if it was set
	drainTimeout    time.Duration
	shutdownDelay   time.Duration
	waitForBackend  time.Duration
	dialTimeout     time.Duration
	idleTimeout     time.Duration
	maxConns        int // 0: proxy.DefaultMaxConns
	keepUnreachable bool
	httpAddr        string
	trustForwarded  bool
	ioUring         bool
	healthInterval  time.Duration
	healthTimeout   time.Duration
	healthRise      int
	healthFall      int
	selfAppID       string
	logLevel        string
	logFormat       string
}

// errHelp is returned when the user asked for --help; usage was printed.
var errHelp = errors.New("help requested")

const usageHead = `lb: pacer, a service-discovery load balancer for Mesos + Marathon.

Usage:
  lb [flags]        follow Marathon and route its apps' service ports
  lb demo [flags]   the same against a built-in Marathon simulator with demo apps
  lb version        print the version

Every flag can also come from the environment as PACER_<FLAG> (upper case,
dashes to underscores, e.g. PACER_MARATHON); a flag on the command line wins.

Examples:
  lb --marathon http://marathon-1:8080,http://marathon-2:8080
  lb --marathon http://user:pass@marathon:8080 --ports 10000-10100 --group external
  PACER_MARATHON=http://marathon.mesos:8080 lb --dns :53 --domain mesos

`

// flagGroups orders --help output by topic.
var flagGroups = []struct {
	title string
	names []string
}{
	{"Marathon", []string{"marathon", "marathon-token", "marathon-ca", "group", "keep-unreachable"}},
	{"ZooKeeper", []string{"zk", "zk-service", "zk-announce"}},
	{"Service ports", []string{"bind", "ports", "max-conns", "wait-for-backend", "dial-timeout", "idle-timeout", "drain-timeout", "shutdown-delay"}},
	{"HTTP", []string{"http", "trust-forwarded"}},
	{"DNS", []string{"dns", "domain", "dns-ttl", "advertise"}},
	{"Health checks", []string{"health-interval", "health-timeout", "health-rise", "health-fall"}},
	{"Operations", []string{"admin", "log-level", "log-format", "io-uring"}},
}

// parseConfig reads flags from args and PACER_* variables from lookupEnv
// (os.LookupEnv): a variable set empty sets its flag empty (PACER_DNS=
// turns DNS off, as --dns "" does).
func parseConfig(name string, args []string, lookupEnv func(string) (string, bool), out io.Writer) (*config, error) {
	getenv := func(k string) string { v, _ := lookupEnv(k); return v }
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	marathonDefault := "http://127.0.0.1:8080"
	if v := getenv("MARATHON_URL"); v != "" {
		marathonDefault = v
	}
	adminDefault := ":9090"
	if p := getenv("PORT0"); p != "" { // run by Marathon: the admin port is the app's first port
		adminDefault = ":" + p
	}
	fs.String("marathon", marathonDefault, "comma-separated Marathon URLs, http[s]://[user:pass@]host:port, or zk://host:port[,host:port]/marathon to find the leader in ZooKeeper (env MARATHON_URL is also read)")
	fs.String("marathon-ca", "", "PEM file of the certificate authorities that sign Marathon's https certificate (default: the system's)")
	fs.String("marathon-token", "", "DC/OS token sent as 'Authorization: token=...'")
	fs.String("group", "*", "serve only apps whose GROUP label matches (comma list; * = all)")
	fs.Bool("keep-unreachable", true, "keep routing to TASK_UNREACHABLE/TASK_LOST tasks (marathon-lb compatible)")
	fs.String("bind", "0.0.0.0", "address the service-port listeners bind")
	fs.String("ports", "8000-8100", "service ports this instance may bind, MIN-MAX")
	fs.Int("max-conns", 0, "most client connections open at once, TCP and HTTP together: every service port, TCP or HTTP mode, and --http; at the cap pacer stops accepting and new connections wait in the listen backlog (0: derived from the descriptor limit, as HAProxy's global maxconn)")
	fs.Duration("wait-for-backend", 3*time.Second, "how long a new connection waits for a backend when a service has none")
	fs.Duration("dial-timeout", time.Second, "timeout for connecting to a backend")
	fs.Duration("idle-timeout", time.Hour, "close a proxied TCP connection, or an upgraded HTTP one (WebSocket), idle in both directions this long")
	fs.Duration("drain-timeout", 30*time.Second, "how long removed backends and a stopping pacer let connections finish")
	fs.Duration("shutdown-delay", 0, "on SIGTERM, keep accepting this long after /healthz fails and this instance is withdrawn from ZooKeeper and DNS, so that clients and load balancers move away first (a second SIGTERM or ^C ends it)")
	fs.String("zk", "", "ZooKeeper ensemble host:port[,host:port] for --zk-service and --zk-announce")
	fs.Var(&listFlag{}, "zk-service", "repeatable NAME=/path[:SERVICEPORT]: members under /path (nerve or serverset JSON) form service NAME")
	fs.String("zk-announce", "", "register this instance as an ephemeral serverset member under this ZooKeeper path")
	fs.String("http", "", "one HTTP listener routing by Host header (and path) across all HTTP-mode apps, e.g. :80; empty turns it off")
	fs.Bool("trust-forwarded", false, "keep the X-Forwarded-Proto (with its X-Forwarded-Port), X-Real-IP and Forwarded headers clients send (REDIRECT_TO_HTTPS then trusts X-Forwarded-Proto): only when every client comes through a proxy you run, such as a TLS terminator, since clients can forge them")
	fs.String("dns", ":8053", "DNS listener, UDP and TCP; empty turns DNS off")
	fs.String("domain", "mesos", "DNS zone, as mesos-dns's domain")
	fs.Duration("dns-ttl", 5*time.Second, "TTL of DNS answers")
	fs.String("advertise", "", "this instance's address in lb.<domain> records (default $HOST, else the first non-loopback IPv4)")
	fs.Duration("health-interval", time.Second, "interval between two active probes of one backend (label PACER_{n}_HEALTHCHECK_INTERVAL overrides it per app)")
	fs.Duration("health-timeout", time.Second, "timeout of one active probe (at most the interval)")
	fs.Int("health-rise", 2, "consecutive passing probes that bring a backend back")
	fs.Int("health-fall", 2, "consecutive failing probes that take a backend out")
	fs.String("admin", adminDefault, "admin HTTP listener (/healthz, /v1/services, /metrics, status page)")
	fs.String("log-level", "info", "debug, info, warn or error")
	fs.String("log-format", "", "console or json (default console on a terminal, else json)")
	fs.Bool("io-uring", true, "batch the data plane's socket reads and writes through io_uring where the kernel allows it (plain system calls otherwise, or with false); the start line says which")
	fs.VisitAll(sayWhatItAccepts)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(fs, out)
			return nil, errHelp
		}
		return nil, fmt.Errorf("%v (see lb --help)", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (see lb --help)", fs.Arg(0))
	}
	// The environment fills in every flag not given on the command line.
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var envErr error
	fromEnv := map[string]string{} // flag name -> variable that set it
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || envErr != nil {
			return
		}
		key := "PACER_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := lookupEnv(key); ok {
			if err := f.Value.Set(v); err != nil {
				envErr = fmt.Errorf("%s=%q: invalid value for --%s: %v (see lb --help)", key, v, f.Name, err)
			}
			fromEnv[f.Name] = key
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	c, err := validate(fs, getenv)
	if err != nil {
		// Name the variable when the bad value came from the environment.
		for name, key := range fromEnv {
			if strings.HasPrefix(err.Error(), "--"+name+":") {
				return nil, fmt.Errorf("%v (set by %s)", err, key)
			}
		}
		return nil, err
	}
	return c, nil
}

// validate turns parsed flags into a config, checking every value.
func validate(fs *flag.FlagSet, getenv func(string) string) (*config, error) {
	str := func(name string) string { return fs.Lookup(name).Value.String() }
	dur := func(name string) time.Duration { return fs.Lookup(name).Value.(flag.Getter).Get().(time.Duration) }
	boolean := func(name string) bool { return fs.Lookup(name).Value.(flag.Getter).Get().(bool) }
	integer := func(name string) int { return fs.Lookup(name).Value.(flag.Getter).Get().(int) }
	var (
		marathon  = str("marathon")
		group     = str("group")
		ports     = str("ports")
		advertise = str("advertise")
	)

	c := &config{
		marathonToken:   str("marathon-token"),
		marathonCA:      str("marathon-ca"),
		bind:            str("bind"),
		admin:           str("admin"),
		dns:             str("dns"),
		httpAddr:        str("http"),
		trustForwarded:  boolean("trust-forwarded"),
		ioUring:         boolean("io-uring"),
		domain:          strings.Trim(strings.ToLower(str("domain")), "."),
		dnsTTL:          dur("dns-ttl"),
		drainTimeout:    dur("drain-timeout"),
		shutdownDelay:   dur("shutdown-delay"),
		waitForBackend:  dur("wait-for-backend"),
		dialTimeout:     dur("dial-timeout"),
		idleTimeout:     dur("idle-timeout"),
		maxConns:        integer("max-conns"),
		healthInterval:  dur("health-interval"),
		healthTimeout:   dur("health-timeout"),
		healthRise:      integer("health-rise"),
		healthFall:      integer("health-fall"),
		keepUnreachable: boolean("keep-unreachable"),
		selfAppID:       getenv("MARATHON_APP_ID"),
		logLevel:        str("log-level"),
		logFormat:       str("log-format"),
	}
	if zookeeper.IsMarathonZK(marathon) {
		lc, err := zookeeper.ParseMarathonZK(marathon)
		if err != nil {
			return nil, fmt.Errorf("--marathon: %v", err)
		}
		c.marathonZK = &lc
	} else {
		for _, u := range strings.Split(marathon, ",") {
			if u = strings.TrimSpace(u); u == "" {
				continue
			}
			if err := checkMarathonURL(u); err != nil {
				return nil, fmt.Errorf("--marathon: %v", err)
			}
			c.marathon = append(c.marathon, u)
		}
	}
	if len(c.marathon) == 0 && c.marathonZK == nil {
		return nil, errors.New("--marathon: no URL given; pass e.g. --marathon http://marathon:8080")
	}
	if c.marathonCA != "" {
		if err := checkCAFile(c.marathonCA); err != nil {
			return nil, fmt.Errorf("--marathon-ca: %v", err)
		}
	}
	// "*" stays in the list: the Marathon source reads a list naming it
	// as every app, so "--group external,*" serves every app, not only
	// external's.
	for _, g := range strings.Split(group, ",") {
		if g = strings.TrimSpace(g); g != "" {
			c.groups = append(c.groups, g)
		}
	}
	var err error
	if zkFlag := str("zk"); zkFlag != "" {
		if c.zkServers, err = zookeeper.ParseServers(zkFlag); err != nil {
			return nil, fmt.Errorf("--zk: %v", err)
		}
	}
	for _, spec := range fs.Lookup("zk-service").Value.(*listFlag).values {
		zs, err := zookeeper.ParseServiceSpec(spec)
		if err != nil {
			return nil, fmt.Errorf("--zk-service: %v", err)
		}
		c.zkServices = append(c.zkServices, zs)
	}
	c.zkAnnounce = str("zk-announce")
	if (len(c.zkServices) > 0 || c.zkAnnounce != "") && len(c.zkServers) == 0 {
		return nil, errors.New("--zk: --zk-service and --zk-announce need the ZooKeeper ensemble, e.g. --zk zk-1:2181,zk-2:2181")
	}
	if c.portMin, c.portMax, err = parsePortRange(ports); err != nil {
		return nil, fmt.Errorf("--ports: %v", err)
	}
	if net.ParseIP(c.bind) == nil {
		return nil, fmt.Errorf("--bind: %q is not an IP address; use e.g. 0.0.0.0 or 127.0.0.1", c.bind)
	}
	if err := checkListenAddr(c.admin); err != nil {
		return nil, fmt.Errorf("--admin: %v", err)
	}
	if c.httpAddr != "" {
		if err := checkListenAddr(c.httpAddr); err != nil {
			return nil, fmt.Errorf("--http: %v", err)
		}
	}
	if c.dns != "" {
		if err := checkListenAddr(c.dns); err != nil {
			return nil, fmt.Errorf("--dns: %v", err)
		}
	}
	if c.domain == "" {
		return nil, errors.New("--domain: must not be empty; the default is mesos")
	}
	// A host name without the underscores some hosts carry: the zone's
	// names are RFC 1123 labels (discovery.Label).
	if !discovery.IsHostname(c.domain) || strings.Contains(c.domain, "_") {
		return nil, fmt.Errorf("--domain: %q is not a DNS name: use labels of letters, digits and '-' joined by dots, such as mesos or dc1.example.com", str("domain"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"--wait-for-backend", c.waitForBackend}, {"--dial-timeout", c.dialTimeout}, {"--idle-timeout", c.idleTimeout}, {"--drain-timeout", c.drainTimeout}, {"--dns-ttl", c.dnsTTL},
		{"--health-interval", c.healthInterval}, {"--health-timeout", c.healthTimeout}} {
		if d.v <= 0 {
			return nil, fmt.Errorf("%s: must be a positive duration such as 3s", d.name)
		}
	}
	if c.maxConns < 0 {
		return nil, fmt.Errorf("--max-conns: must not be negative (got %d); 0 derives it from the descriptor limit", c.maxConns)
	}
	if c.shutdownDelay < 0 {
		return nil, errors.New("--shutdown-delay: must not be negative; 0 stops accepting at once")
	}
	if c.healthRise < 1 || c.healthFall < 1 {
		return nil, fmt.Errorf("--health-rise, --health-fall: must be at least 1 (got %d, %d)", c.healthRise, c.healthFall)
	}
	if c.advertise, c.advertiseNote, err = advertiseAddr(advertise, getenv); err != nil {
		return nil, fmt.Errorf("--advertise: %v", err)
	}
	switch c.logLevel {
	case "debug", "info", "warn", "error":
	default:
		return nil, fmt.Errorf("--log-level: %q is not one of debug, info, warn, error", c.logLevel)
	}
	switch c.logFormat {
	case "", "console", "json":
	default:
		return nil, fmt.Errorf("--log-format: %q is not one of console, json", c.logFormat)
	}
	return c, nil
}

// checkCAFile reads --marathon-ca at start, as every other flag is checked:
// found only when the Marathon source starts, a wrong path stopped pacer
// with exit status 1, which systemd's RestartPreventExitStatus=2 (for a
// configuration that a restart cannot fix) does not catch.
func checkCAFile(path string) error {
	pem, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%v; want a PEM file of the CA certificates", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		return fmt.Errorf("%s: no PEM certificate in it; want a PEM file of the CA certificates", path)
	}
	return nil
}

// hintedValue is a flag value whose parse error says what the flag
// accepts: the flag package's own says only "parse error".
type hintedValue struct {
	flag.Getter
	hint string
}

func (h hintedValue) Set(s string) error {
	if err := h.Getter.Set(s); err != nil {
		return errors.New(h.hint)
	}
	return nil
}

// hintedBool is a hintedValue of a boolean flag, which --name alone sets.
type hintedBool struct{ hintedValue }

func (hintedBool) IsBoolFlag() bool { return true }

// sayWhatItAccepts wraps a duration, integer or boolean flag's value so
// that a bad value, on the command line or in PACER_*, is reported with
// what the flag accepts.
func sayWhatItAccepts(f *flag.Flag) {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return
	}
	switch g.Get().(type) {
	case time.Duration:
		f.Value = hintedValue{g, "want a duration such as 3s, 500ms or 1m"}
	case int:
		f.Value = hintedValue{g, "want a whole number"}
	case bool:
		f.Value = hintedBool{hintedValue{g, "want true or false"}}
	}
}

// listFlag is a repeatable string flag; from the environment its value is a
// comma-separated list.
type listFlag struct{ values []string }

func (l *listFlag) String() string { return strings.Join(l.values, ",") }

func (l *listFlag) Set(v string) error {
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			l.values = append(l.values, item)
		}
	}
	return nil
}

func printUsage(fs *flag.FlagSet, out io.Writer) {
	fmt.Fprint(out, usageHead)
	for _, g := range flagGroups {
		fmt.Fprintf(out, "%s:\n", g.title)
		for _, n := range g.names {
			f := fs.Lookup(n)
			def := ""
			if f.DefValue != "" {
				// --marathon's default comes from $MARATHON_URL, which
				// may carry a password: help goes to terminals and CI logs.
				def = fmt.Sprintf(" (default %s)", redactUserinfo(f.DefValue))
			}
			fmt.Fprintf(out, "  --%-18s %s%s\n", f.Name, f.Usage, def)
		}
		fmt.Fprintln(out)
	}
}

// redactUserinfo replaces the password in each URL of s, a comma-separated
// list of URLs (http, https or zk), with xxxxx, as url.URL.Redacted does.
// A password may hold '/', ':' or '@' itself: the user info ends at the
// last '@', the user name at the first ':'.
func redactUserinfo(s string) string {
	parts := strings.Split(s, ",")
	for i, u := range parts {
		scheme, rest, ok := strings.Cut(u, "://")
		at := strings.LastIndex(rest, "@")
		if !ok || at < 0 {
			continue
		}
		if user, _, hasPass := strings.Cut(rest[:at], ":"); hasPass {
			parts[i] = scheme + "://" + user + ":xxxxx@" + rest[at+1:]
		}
	}
	return strings.Join(parts, ",")
}

// checkMarathonURL accepts http[s]://[user:pass@]host:port[/path]. Errors
// never repeat the password.
func checkMarathonURL(raw string) error {
	if !strings.Contains(raw, "://") && strings.Contains(raw, "@") {
		// What is left of a URL whose password holds a ',' once the list
		// was split at it: the rest of the password, '@', the host.
		return fmt.Errorf("%q: not a URL; a ',' in a user name or password must be written %%2C (expected http[s]://[user:pass@]host:port)", redact.Userinfo(raw))
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("cannot parse a URL (expected http[s]://[user:pass@]host:port)")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%q: scheme must be http or https (expected http[s]://[user:pass@]host:port)", redact.Userinfo(raw))
	}
	if u.Host == "" {
		return fmt.Errorf("%q: no host (expected http[s]://[user:pass@]host:port)", u.Redacted())
	}
	return nil
}

func parsePortRange(s string) (lo, hi int, err error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		b = a
	}
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi, err2 := strconv.Atoi(strings.TrimSpace(b))
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("%q is not a range; use MIN-MAX, e.g. 8000-8100", s)
	}
	if lo < 1 || hi > 65535 {
		return 0, 0, fmt.Errorf("%q: ports must be between 1 and 65535", s)
	}
	if lo > hi {
		return 0, 0, fmt.Errorf("%q: MIN is above MAX; use e.g. %d-%d", s, hi, lo)
	}
	return lo, hi, nil
}

func checkListenAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port; use e.g. :9090 or 127.0.0.1:9090", addr)
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		return fmt.Errorf("%q: host must be an IP address or empty", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q: port must be a number from 0 to 65535", addr)
	}
	return nil
}

// advertiseAddr picks the address this instance announces in lb.<domain>:
// --advertise as given (an address, or a name that must resolve); else $HOST,
// which Marathon sets to the agent's host name and which must resolve, unless
// it resolves only to loopback (Debian's /etc/hosts maps the host name to
// 127.0.1.1); else the first non-loopback IPv4 address. note says why $HOST
// was passed over, for the log. A $HOST that does not resolve stops pacer:
// guessing an interface would put a wrong address in DNS and ZooKeeper for
// the life of the process, where a restart will likely resolve it.
func advertiseAddr(flagValue string, getenv func(string) string) (addr netip.Addr, note string, err error) {
	if flagValue != "" {
		a, err := resolveAddr(flagValue)
		return a, "", err
	}
	if host := getenv("HOST"); host != "" {
		a, err := resolveAddr(host)
		switch {
		case err != nil:
			return netip.Addr{}, "", fmt.Errorf("$HOST: %v, or set --advertise", err)
		case a.IsLoopback():
			note = fmt.Sprintf("$HOST %q resolves only to loopback (%v)", host, a)
		default:
			return a, "", nil
		}
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() {
				if v4 := n.IP.To4(); v4 != nil {
					return netip.AddrFrom4([4]byte(v4)), note, nil
				}
			}
		}
	}
	return netip.AddrFrom4([4]byte{127, 0, 0, 1}), note, nil
}

// resolveAddr parses an IP address or resolves a host name, preferring a
// non-loopback address and IPv4 over IPv6.
func resolveAddr(name string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(name); err == nil {
		return a, nil
	}
	ips, err := net.LookupIP(name)
	if err != nil || len(ips) == 0 {
		return netip.Addr{}, fmt.Errorf("cannot resolve %q; pass an IP address", name)
	}
	var addrs []netip.Addr
	for _, ip := range ips {
		if a, ok := netip.AddrFromSlice(ip); ok {
			addrs = append(addrs, a.Unmap())
		}
	}
	rank := func(a netip.Addr) int {
		r := 0
		if a.IsLoopback() {
			r += 2
		}
		if !a.Is4() {
			r++
		}
		return r
	}
	slices.SortStableFunc(addrs, func(a, b netip.Addr) int { return rank(a) - rank(b) })
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("cannot resolve %q; pass an IP address", name)
	}
	return addrs[0], nil
}
