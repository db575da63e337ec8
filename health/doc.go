// Package health is pacer's own view of its backends: active probes, passive
// outlier detection, and one verdict per backend address that the proxies
// and DNS all read.
//
// Marathon's health view is slow (its checks run every few seconds to
// minutes), partial (Mesos checks, readiness) and lost on leader failover;
// it decides which tasks a source lists. A Checker watches those listed
// backends itself and takes the ones it finds dead out of rotation through
// the discovery.Table's health overlay (Table.SetEjected), so one verdict
// reaches the TCP proxy, the HTTP proxy and DNS at once.
//
// # Who calls what
//
// cmd/lb builds one Checker with New, runs Checker.Run on its own goroutine
// and passes Checker.Report to both proxies, which call it with the outcome
// of each backend attempt. The admin listener reads Checker.Verdicts and
// Checker.Stats.
//
// Run follows the table's snapshots (it waits on Snapshot.Changed, never
// polls) and reads the backends as the sources gave them
// (Snapshot.RawApps), ejected ones included, so it keeps watching what it
// took out. It keeps one target per unique backend address, however many
// services and listeners route to it, and one prober goroutine per target
// whose service has a check (discovery.Service.Check). Verdict changes are
// coalesced: the Run goroutine publishes the current ejection set with one
// SetEjected call per wakeup, and only when the set changed.
//
// # The verdict
//
// A backend is out of rotation when its active check failed Fall times in a
// row (it is back after Rise successes), or while a passive ejection lasts:
// GatewayFailures consecutive connect failures or resets before a response,
// or ServerErrors consecutive HTTP 5xx answers, eject it for EjectionTime,
// doubled for each ejection that follows within MaxEjectionTime of the
// previous one's end. A gateway ejection ends early once the active check
// (if any) passes Rise times after it began. New backends start in rotation:
// the source already vouched for them. The table's PanicThreshold keeps every
// backend of a service in rotation when most of them are ejected.
//
// # What must never happen
//
// Report is on the request path: it must not lock, allocate or log on
// success, and it locks one target only when a backend crosses its ejection
// threshold. It finds the target through an immutable map replaced whenever
// the set of addresses changes. Probes never run on a proxy goroutine.
package health
