// Package admin serves pacer's operator endpoints on the admin listener:
// /healthz (readiness for Marathon and peers), /v1/services (the routing table
// as JSON), /metrics (Prometheus text), POST /v1/resync, marathon-lb's
// /_haproxy_health_check, and a status page at /.
//
// Every handler reads the current discovery.Snapshot and the sources' status
// reports; none of them is on a data path, and none ever shows credentials.
package admin
