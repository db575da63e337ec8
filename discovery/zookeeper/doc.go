// Package zookeeper is pacer's ZooKeeper side: it finds the Marathon leader,
// routes services registered in ZooKeeper, and announces pacer itself.
//
// Three types, each with its own ZooKeeper session (go-zookeeper/zk), each
// built by cmd/lb with a New function that does no I/O and run on its own
// goroutine with Run(ctx), which returns when ctx ends:
//
//   - LeaderWatcher (leader.go, --marathon zk://host:port/marathon) reads
//     Marathon's Curator LeaderLatch under <path>/leader-curator (children
//     "_c_<uuid>-latch-<seq>", data "host:port"; the lowest sequence number
//     leads, ordered by number, not by name), falling back to Marathon 1.4's
//     legacy <path>/leader member_ nodes. Watch returns the leader's URL and
//     a channel closed when it changes, so the Marathon source can move its
//     event stream and resync.
//   - Source (source.go, service.go; --zk and --zk-service NAME=/path:PORT)
//     keeps a children watch on each service path and a data watch on each
//     member node, decodes nerve or serverset JSON (member.go) and applies
//     one App per service ("zk:NAME", Source "zookeeper") to the
//     discovery.Table. Each service has one goroutine, which alone touches
//     its state. Changes are applied at once, but a token bucket per
//     service (Config.Coalesce) bounds the applies a flapping member can
//     cause; the latest members always win.
//   - Announcer (announce.go, --zk-announce /path) registers this instance
//     as an ephemeral sequential serverset member.
//
// Failure: while ZooKeeper is unreachable every type keeps what it last knew
// (members in the table, the leader) and reports Connected false in Status,
// which /healthz and /metrics show as stale. go-zookeeper reconnects by
// itself and keeps watches across a short outage; after a session expiry it
// drops every watch, and these types read everything again and re-arm them
// (the Announcer re-creates its node). A malformed member node makes that
// member alone unroutable, with the reason logged and shown in the App's
// task states. Nothing here ever sleeps to wait for ZooKeeper: waits are on
// watches, session events, or a bounded backoff after a failed read.
//
// Tests run against a real ZooKeeper server (internal/zktest).
package zookeeper
