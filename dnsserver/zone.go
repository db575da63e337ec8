package dnsserver

import (
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"

	"github.com/miekg/dns"

	"github.com/pacer-lb/pacer/discovery"
)

// Frameworks, as mesos-dns calls the second label: where apps of each source live.
const (
	fwMarathon = "marathon"
	fwZK       = "zk"
	sourceZK   = "zookeeper" // discovery.App.Source of ZooKeeper services
	labelSlave = "slave"
	labelLB    = "lb"
	labelNS    = "ns1"
	// hashLen is the length of the task hash in per-task names.
	hashLen = 5
	// maxNamePart is how much of <name> a per-task label keeps: 63 bytes
	// minus "-" and the hash.
	maxNamePart = 63 - 1 - hashLen
)

// record is one answer record before packing; its owner is the query name.
type record struct {
	typ    uint16     // dns.TypeA, TypeAAAA, TypeSRV, TypeNS or TypeSOA
	addr   netip.Addr // A, AAAA
	port   uint16     // SRV
	target string     // SRV, NS: lower-case name without the trailing dot
}

// extra is an address for the Additional section.
type extra struct {
	name string // an SRV or NS target
	addr netip.Addr
}

// result is what a name resolves to, before packing.
type result struct {
	rcode  int
	answer []record
	extra  []extra
	// soa puts the zone's SOA in the authority section (NXDOMAIN, NODATA).
	soa bool
	// rotate says the answer records may be served in any order.
	rotate bool
}

// zone resolves names of one domain against a snapshot.
type zone struct {
	domain    string // lower case, no trailing dot, e.g. "mesos"
	labels    int    // number of labels in domain
	advertise netip.Addr
	withdrawn bool // lb.<domain> names answer with no record (Server.Withdraw)
	// portMin and portMax bound the service ports this instance binds; 0, 0
	// means any.
	portMin, portMax int
}

// splitName returns the labels of the lower-cased name relative to the zone,
// and whether the name is in the zone at all.
func (z *zone) splitName(name string) ([]string, bool) {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if name == z.domain {
		return nil, true
	}
	rel, ok := strings.CutSuffix(name, "."+z.domain)
	if !ok || rel == "" {
		return nil, false
	}
	return strings.Split(rel, "."), true
}

// resolve answers qtype for the labels of a name relative to the zone.
func (z *zone) resolve(snap *discovery.Snapshot, rel []string, qtype uint16) result {
	nxdomain := result{rcode: dns.RcodeNameError, soa: true}
	n := len(rel)
	if n == 0 {
		return z.apex(qtype)
	}
	switch rel[n-1] {
	case labelNS:
		if n == 1 {
			return z.self(qtype)
		}
	case labelLB:
		if z.withdrawn {
			return nodata()
		}
		switch {
		case n == 1:
			return z.self(qtype)
		case n == 2 && isProto(rel[0]):
			return nodata()
		case n == 3 || n == 4:
			return z.lbSRV(snap, rel, qtype)
		}
	case fwMarathon, fwZK:
		fw := rel[n-1]
		switch {
		case n == 1, n == 2 && isProto(rel[0]):
			return nodata()
		case n == 2:
			return hosts(qtype, z.appAddrs(snap, fw, rel[0]))
		case n == 3 || n == 4:
			return z.taskSRV(snap, fw, rel, qtype)
		}
	case labelSlave:
		switch {
		case n == 1, n == 2 && (rel[0] == fwMarathon || rel[0] == fwZK):
			return nodata()
		case n == 3 && (rel[1] == fwMarathon || rel[1] == fwZK):
			return hosts(qtype, z.taskAddrs(snap, rel[1], rel[0]))
		}
	}
	return nxdomain
}

func nodata() result { return result{soa: true} }

func isProto(l string) bool { return l == "_tcp" || l == "_udp" }

// speaks reports whether a port of protocol p answers under the SRV
// protocol label l (_tcp or _udp).
func speaks(p discovery.Protocol, l string) bool {
	if l == "_udp" {
		return p.HasUDP()
	}
	return p.HasTCP()
}

// apex answers the zone's own name.
func (z *zone) apex(qtype uint16) result {
	var r result
	if qtype == dns.TypeSOA || qtype == dns.TypeANY {
		r.answer = append(r.answer, record{typ: dns.TypeSOA})
	}
	if qtype == dns.TypeNS || qtype == dns.TypeANY {
		r.answer = append(r.answer, record{typ: dns.TypeNS, target: labelNS + "." + z.domain})
		if z.advertise.IsValid() {
			r.extra = append(r.extra, extra{name: labelNS + "." + z.domain, addr: z.advertise})
		}
	}
	r.soa = len(r.answer) == 0
	return r
}

// self answers lb.<domain> and ns1.<domain>: this instance.
func (z *zone) self(qtype uint16) result {
	var addrs []netip.Addr
	if z.advertise.IsValid() {
		addrs = append(addrs, z.advertise)
	}
	return hosts(qtype, addrs)
}

// hosts answers an address name; nil addrs means the name does not exist,
// an empty non-nil slice that it exists without addresses.
func hosts(qtype uint16, addrs []netip.Addr) result {
	if addrs == nil {
		return result{rcode: dns.RcodeNameError, soa: true}
	}
	r := result{rotate: true}
	for _, a := range addrs {
		switch {
		case a.Is4() && (qtype == dns.TypeA || qtype == dns.TypeANY):
			r.answer = append(r.answer, record{typ: dns.TypeA, addr: a})
		case a.Is6() && (qtype == dns.TypeAAAA || qtype == dns.TypeANY):
			r.answer = append(r.answer, record{typ: dns.TypeAAAA, addr: a})
		}
	}
	r.soa = len(r.answer) == 0
	return r
}

// services returns the services named name that live under framework fw.
func services(snap *discovery.Snapshot, fw, name string) []*discovery.Service {
	var out []*discovery.Service
	for _, svc := range snap.ServicesNamed(name) {
		if frameworkOf(snap, svc) == fw {
			out = append(out, svc)
		}
	}
	return out
}

func frameworkOf(snap *discovery.Snapshot, svc *discovery.Service) string {
	if a := snap.App(svc.Key.App); a != nil && a.Source == sourceZK {
		return fwZK
	}
	return fwMarathon
}

// appAddrs returns the distinct addresses of the routable tasks of every
// service named name (DNS-only services of apps with a Problem included),
// and of every app so named that has no ports (as mesos-dns answers them),
// or nil if there is no such app.
func (z *zone) appAddrs(snap *discovery.Snapshot, fw, name string) []netip.Addr {
	svcs := services(snap, fw, name)
	var portless []*discovery.App
	if fw == fwMarathon {
		portless = snap.PortlessAppsNamed(name)
	}
	if len(svcs) == 0 && len(portless) == 0 {
		return nil
	}
	addrs := []netip.Addr{}
	seen := map[netip.Addr]bool{}
	add := func(a netip.Addr) {
		if a = a.Unmap(); a.IsValid() && !seen[a] {
			seen[a] = true
			addrs = append(addrs, a)
		}
	}
	for _, svc := range svcs {
		for _, b := range svc.Backends {
			add(b.Addr.Addr())
		}
	}
	for _, a := range portless {
		for _, t := range a.Tasks {
			// Addr is set only on tasks DNS may answer: routable ones, and
			// those of an app with a Problem that would be.
			add(t.Addr)
		}
	}
	return addrs
}

// taskAddrs returns the addresses of the task whose per-task label is label.
func (z *zone) taskAddrs(snap *discovery.Snapshot, fw, label string) []netip.Addr {
	if len(label) < hashLen+2 || label[len(label)-hashLen-1] != '-' {
		return nil
	}
	name, hash := label[:len(label)-hashLen-1], label[len(label)-hashLen:]
	svcs := services(snap, fw, name)
	if len(name) == maxNamePart {
		// The name may have been cut to fit the label: look at every app.
		svcs = svcs[:0:0]
		for _, a := range snap.Apps() {
			for _, list := range [][]*discovery.Service{a.Services, a.DNSOnly} {
				for _, svc := range list {
					if strings.HasPrefix(svc.Name, name) && frameworkOf(snap, svc) == fw {
						svcs = append(svcs, svc)
					}
				}
			}
		}
	}
	var addrs []netip.Addr
	for _, svc := range svcs {
		for _, b := range svc.Backends {
			if a := b.Addr.Addr().Unmap(); taskHash(b.TaskID) == hash && !slices.Contains(addrs, a) {
				addrs = append(addrs, a)
			}
		}
	}
	return addrs
}

// taskSRV answers _<name>._<proto>.<fw> and _<port>._<name>._<proto>.<fw>.
func (z *zone) taskSRV(snap *discovery.Snapshot, fw string, rel []string, qtype uint16) result {
	svcs, ok := srvServices(snap, fw, rel)
	if !ok {
		return result{rcode: dns.RcodeNameError, soa: true}
	}
	if qtype != dns.TypeSRV && qtype != dns.TypeANY {
		return nodata()
	}
	r := result{rotate: true}
	seenRec, seenExtra := map[record]bool{}, map[extra]bool{}
	for _, svc := range svcs {
		for _, b := range svc.Backends {
			target := taskLabel(svc.Name, b.TaskID) + "." + fw + "." + labelSlave + "." + z.domain
			if rec := (record{typ: dns.TypeSRV, port: b.Addr.Port(), target: target}); !seenRec[rec] {
				seenRec[rec] = true
				r.answer = append(r.answer, rec)
			}
			if x := (extra{name: target, addr: b.Addr.Addr().Unmap()}); !seenExtra[x] {
				seenExtra[x] = true
				r.extra = append(r.extra, x)
			}
		}
	}
	r.soa = len(r.answer) == 0
	return r
}

// lbSRV answers _<name>._<proto>.lb and _<port>._<name>._<proto>.lb: this
// instance on the service port of every matching service it serves. A
// service that lost its port to another app, whose port is outside --ports,
// or that is UDP (not proxied) has none here: naming the port would send its
// clients to another app, or to a closed port.
func (z *zone) lbSRV(snap *discovery.Snapshot, rel []string, qtype uint16) result {
	var svcs []*discovery.Service
	ok := false
	for _, fw := range []string{fwMarathon, fwZK} {
		s, found := srvServices(snap, fw, rel)
		svcs, ok = append(svcs, s...), ok || found
	}
	if !ok {
		return result{rcode: dns.RcodeNameError, soa: true}
	}
	if qtype != dns.TypeSRV && qtype != dns.TypeANY {
		return nodata()
	}
	r := result{rotate: true}
	target := labelLB + "." + z.domain
	viaUDP := rel[len(rel)-2] == "_udp" // pacer proxies TCP only
	for _, svc := range svcs {
		if viaUDP || !z.serves(snap, svc) {
			continue
		}
		rec := record{typ: dns.TypeSRV, port: uint16(svc.ServicePort), target: target}
		if !slices.Contains(r.answer, rec) {
			r.answer = append(r.answer, rec)
		}
	}
	if len(r.answer) > 0 && z.advertise.IsValid() {
		r.extra = append(r.extra, extra{name: target, addr: z.advertise})
	}
	r.soa = len(r.answer) == 0
	return r
}

// serves reports whether this instance proxies svc on its service port.
func (z *zone) serves(snap *discovery.Snapshot, svc *discovery.Service) bool {
	p := svc.ServicePort
	switch {
	case p <= 0 || p > 65535, !svc.Protocol.HasTCP(), snap.Service(p) != svc:
		return false
	case z.portMax > 0 && (p < z.portMin || p > z.portMax):
		return false
	}
	return true
}

// srvServices returns the services an SRV name (relative labels ending in
// the framework) selects, and whether the name exists.
func srvServices(snap *discovery.Snapshot, fw string, rel []string) ([]*discovery.Service, bool) {
	n := len(rel)
	if !isProto(rel[n-2]) || !strings.HasPrefix(rel[n-3], "_") {
		return nil, false
	}
	proto := rel[n-2]
	name := rel[n-3][1:]
	portName := ""
	if n == 4 {
		if !strings.HasPrefix(rel[0], "_") || len(rel[0]) < 2 {
			return nil, false
		}
		portName = rel[0][1:]
	}
	var out []*discovery.Service
	for _, svc := range services(snap, fw, name) {
		if !speaks(svc.Protocol, proto) {
			continue
		}
		if portName != "" && discovery.Label(svc.PortName) != portName {
			continue
		}
		out = append(out, svc)
	}
	return out, len(out) > 0
}

// taskLabel is the per-task DNS label: <name>-<hash of the task id>.
func taskLabel(name, taskID string) string {
	if len(name) > maxNamePart {
		name = name[:maxNamePart]
	}
	return name + "-" + taskHash(taskID)
}

// taskHash is five base-32 characters of the FNV-1a hash of a task id.
func taskHash(taskID string) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	h := fnv.New64a()
	h.Write([]byte(taskID))
	v := h.Sum64()
	var b [hashLen]byte
	for i := range b {
		b[i] = alphabet[v&31]
		v >>= 5
	}
	return string(b[:])
}
