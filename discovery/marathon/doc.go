// Package marathon is pacer's Marathon source: it follows Marathon's event
// stream and app snapshots and keeps the routable apps in a discovery.Table.
//
// cmd/lb builds one Source with New and runs it with Run on its own
// goroutine. Run owns three kinds of goroutine:
//
//   - the stream reader (stream.go) keeps GET /v2/events open, parses the
//     server-sent events (sse.go) and pushes their data into a queue
//     (queue.go). It never waits on anything downstream: the queue is
//     unbounded up to a large cap, past which it drops its content and asks
//     for a full resync.
//   - the state goroutine (Run itself, source.go) owns the private state
//     (state.go): per app, the definition from the last fetch and its
//     tasks. It applies status_update_event as a delta at once, asks for a
//     fetch of the app(s) other events name, coalesced per app, and
//     publishes each changed app to the table (build.go decides services,
//     backends and task states; labels.go reads PACER_*/HAPROXY_* labels).
//   - fetch goroutines (client.go) GET /v2/apps or /v2/apps/{id}, decode the
//     answer (decode.go, tolerant of Marathon 0.8 to 1.10) and resolve agent
//     hosts (resolve.go), off the event path. Each fetch is bounded by
//     Config.FetchTimeout and Config.MaxBodyBytes.
//   - with Config.Leader (ZooKeeper), a watcher (stream.go) that moves the
//     event stream to each new leader and cuts the fetches still in flight
//     to the old one.
//
// The client talks to the Marathon leader directly once it knows it
// (leader.go: GET /v2/leader, X-Marathon-Leader on answers a standby
// proxied, /v2/events redirects, or Config.Leader), and falls back to the
// configured URLs when the leader stops answering. Health events
// (health.go) are applied to the instance's tasks at once, without a
// fetch; a task once seen healthy keeps that verdict when a leader
// failover empties its results.
//
// Marathon has no replay and does not promise event order, so events are
// treated as hints and snapshots as truth: after every (re)connect the
// source subscribes first, then fetches a snapshot, holding the events that
// arrive meanwhile and applying them on top. Every event and fetch takes a
// sequence number, so a fetch answer never undoes a newer event, and task
// ids seen killing or terminal are remembered so a late TASK_RUNNING does
// not resurrect them. A full resync also runs every ResyncInterval.
//
// A failing Marathon never empties the table: the last good view stays and
// the failure shows in Status (LastError) and the logs. Credentials never
// appear in either.
package marathon
