// Package discovery is pacer's routing model and the table that publishes it.
//
// A Service is one port of one app (Marathon app id and port index, or a
// ZooKeeper-registered service); a Backend is one routable task endpoint of a
// Service. Sources (discovery/marathon, discovery/zookeeper) decode what they
// watch into App values and hand them to a Table as Updates. The Table merges
// them into an immutable, versioned Snapshot and swaps it in atomically.
//
// Readers (the proxies, the DNS server, the admin handlers) call
// Table.Snapshot and read without locks; a Snapshot is never modified after it
// is published. Snapshot.Changed lets a reader wait for the next version
// without polling. Only writers serialise, on the Table's mutex, and an Update
// rebuilds only what the apps it names touch.
package discovery
