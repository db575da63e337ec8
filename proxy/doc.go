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
// scale or a task replacement never closes a listening socket. Nor does a
// service that changes mode: its port's socket passes between this plane and
// the HTTP plane through a Handoff (handoff.go), and clients connecting
// meanwhile wait in its backlog.
//
// Each accepted connection starts on the goroutine of the accept loop that
// took it (startConn, conn.go; a port has one loop per P): it reads the
// current snapshot with one atomic load and no lock, reads what the client
// sent already, picks a backend (round robin by default, see balance.go),
// dials it with those bytes, and starts both directions' relays in
// fastconn's poller (fastconn.RelayBothFunc), which copies small messages,
// passes the first FIN on, and at the second FIN closes the connection on
// the poller's goroutine: a connection that takes one message each way has
// no goroutine of its own. Whatever must wait moves to a goroutine from a
// pool that keeps their grown stacks (workers.go): a handshake still in
// flight, a service with no backend yet, and a connection that outlives
// its first idle window, moves bulk data or meets a slow reader. That one
// relays again while it waits (relayBoth, fastconn.RelayBoth), or gets a
// goroutine per direction (pipe, copyWindow), with bulk data moved by
// fastconn.Splice: splice(2), socket to pipe to socket inside the kernel,
// with raw calls. The forwarding path allocates nothing, and an idle
// connection holds no buffer.
//
// The connections open across every service port are capped (ConnLimit:
// pacer's --max-conns, derived from the descriptor limit by default, one
// budget the HTTP plane's listeners share; see limit.go): at the cap the
// accept loops stop accepting and new connections wait in the listen
// backlog until one ends, on either plane, so that a flood cannot take the
// descriptors the other listeners of the process need.
// Counting is an atomic compare-and-swap per connection and an add at its
// end; only a loop waiting at the cap takes a lock.
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
