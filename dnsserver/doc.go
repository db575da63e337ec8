// Package dnsserver is pacer's authoritative DNS responder: it answers
// mesos-dns compatible names for the zone <domain> (default "mesos") from the
// routing table, so answers change the moment the table does and only
// routable (healthy) tasks are ever served.
//
// # Names
//
// <name> is discovery.AppName of the app id ("/shop/web" gives "web-shop").
// Apps whose Source is "zookeeper" live under zk.<domain>, every other app
// under marathon.<domain>. Examples for zone "mesos":
//
//	web-shop.marathon.mesos                A/AAAA  addresses of routable tasks
//	_web-shop._tcp.marathon.mesos          SRV     one per routable task port (_udp for UDP ports)
//	_http._web-shop._tcp.marathon.mesos    SRV     the same for the port named "http"
//	web-shop-k3x7q.marathon.slave.mesos    A/AAAA  one task (the SRV target), see below
//	_web-shop._tcp.lb.mesos                SRV     this instance (lb.mesos) and the service port
//	_http._web-shop._tcp.lb.mesos          SRV     the same for a named port
//	lb.mesos, ns1.mesos                    A/AAAA  Config.Advertise
//	kafka.zk.mesos, _kafka._tcp.zk.mesos   A, SRV  ZooKeeper services (targets under zk.slave.mesos)
//	mesos                                  SOA, NS (NS is ns1.mesos)
//
// SRV targets name one task, in mesos-dns's style: <name>-<hash>.marathon.slave.<domain>,
// where <hash> is five base-32 characters of a hash of the task id (the
// <name> part is cut so the label stays within 63 bytes; an SRV name needs a
// <name> of at most 62 bytes, for its "_"). Their A/AAAA
// records ride in the Additional section. ZooKeeper members get
// <name>-<hash>.zk.slave.<domain>.
//
// An app the load balancer does not route because pacer cannot read one of
// its labels or checks (discovery.App.Problem) keeps its marathon names, as
// in mesos-dns, which reads no label: A/AAAA and SRV records of its healthy
// tasks on the ports its port definitions name (discovery.App.DNSOnly), but
// no lb record. A label typo costs an app its load balancing, not its names.
//
// Unknown names in the zone get NXDOMAIN with the SOA in the authority
// section; known names asked for another type, and the structural names
// (marathon.<domain>, _tcp.marathon.<domain>, slave.<domain>, ...), get NODATA
// (NOERROR, SOA in authority), so resolvers that cut below an NXDOMAIN
// (RFC 8020) and QNAME minimisation (RFC 9156) keep working. Names outside
// the zone, other classes and zone transfers get REFUSED: the server never
// recurses. Names match without regard to case and the question is echoed as
// asked. The SOA serial moves whenever the table does.
//
// # How a query is served
//
// Each UDP socket (Config.UDPSockets of them, bound with SO_REUSEPORT, 4 MB
// buffers) has one goroutine, worker.serveUDPBatch, that reads every queued
// datagram with one recvmmsg(2) and sends the answers with one sendmmsg(2)
// (one datagram per call on other systems). On Linux each answer leaves from
// the address its query was sent to (IP_PKTINFO, IPV6_PKTINFO), as resolvers
// require, also when the socket is on a wildcard address and the route back
// prefers another. For each query it parses only the
// header and question (and the EDNS0 OPT record), and looks the answer up in an LRU of
// packed answers keyed by (lower-cased name, type, class). An answer is packed
// once per table version and name, with compression pointers only into the
// question, so serving it copies bytes, rotates the answer records (a new
// start for every query), patches the id, flags, counts and the Additional
// section's pointers, and fits it to the client's size: 512 bytes without
// EDNS0, at most 1232 (what the server advertises) with it, 65535 over TCP.
// An answer that does not fit first loses the Additional records that do not
// fit, then is cut with TC set, to whole records of the rotated answer:
// over TCP too, when the answer records alone pass 64 KB (some 1,450 SRV
// records), though the client has nowhere else to ask. Past 16 KB, where
// compression pointers do not reach, an Additional owner is written as its
// first label and a pointer to the rest of the name in the first answer
// record. A cached answer allocates nothing. Anything the quick parser
// does not handle (compressed questions, other opcodes, several records)
// takes the slow path through miekg/dns's unpacker; malformed queries get
// FORMERR when their header can be read, otherwise nothing, and responses are
// never answered.
//
// TCP connections are served one goroutine each, several queries per
// connection, closed after an idle timeout. A connection keeps only a 4 KB
// query buffer; the 64 KB answer buffer is borrowed from a pool while one
// query is answered.
//
// The server reads the table through discovery.Table.Snapshot and never
// locks it; the only shared mutable state is the answer cache, which checks
// every entry's table version and is purged when the table changes.
package dnsserver
