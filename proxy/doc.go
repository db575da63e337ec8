// Package proxy holds pacer's data planes: the TCP proxy on every service
// port (this file set: tcp.go, listeners.go, conn.go, balance.go, drain.go)
// and the HTTP proxy, and what both share: PortSet (portset.go), which
// decides when a service port's listener opens and closes, PortStatus, and
// SourceHash for "source" balancing.
//
// # TCP
//
// cmd/lb builds one TCP with NewTCP, runs TCP.Run on its own goroutine and
// calls TCP.Shutdown when it stops; the admin listener reads TCP.Ports.
//
// Run follows the discovery.Table: it waits on Snapshot.Changed, never polls,
// and on each new snapshot opens a listener for every service port that a
// TCP-mode service claims inside [PortMin, PortMax], closes the listeners of
// ports nobody claims any more, and starts draining connections whose backend
// left. Listeners stay open across every other change: the service behind a
// port is looked up per connection from the current snapshot, so a deploy, a
// scale or a task replacement never closes a listening socket.
//
// Each accepted connection runs on a goroutine of its own, taken from a
// pool that keeps their grown stacks (workers.go). It reads the current
// snapshot with one atomic load and no lock, picks a backend (round robin
// by default, see balance.go), dials it, and then forwards (conn.go): both
// directions' small messages are copied by fastconn's poller while the
// goroutine waits once for both (relayBoth, fastconn.RelayBoth), which
// also passes the first FIN on; a connection that moves bulk data or meets
// a slow reader gets a goroutine per direction from there on (pipe,
// copyWindow), with bulk data moved by fastconn.Splice: splice(2), socket
// to pipe to socket inside the kernel, with raw calls. The forwarding path
// allocates nothing, and an idle connection holds no buffer.
//
// Each connection tells TCPConfig.Report (the health checker's passive
// detection) how its backend did, once: a refused or timed-out connect per
// dial, and at the end whether the backend sent bytes or broke the
// connection before sending any.
//
// What the per-connection path must never do: take a lock on the byte path,
// copy bulk data through user space, or log at Info. The one shared
// structure it touches is the per-port connection tracker in drain.go, once
// when a connection is established and once when it closes.
package proxy
