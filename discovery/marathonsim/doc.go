// Package marathonsim is an in-process fake Marathon for pacer's tests and for
// `lb demo`.
//
// A Server speaks Marathon's wire format on a real socket: the REST endpoints
// pacer reads (/ping, /v2/info, /v2/leader, /v2/apps, /v2/apps/{id},
// /v2/apps/{id}/tasks, /v2/tasks) and the /v2/events server-sent-event stream
// with Jetty's exact framing (CRLF lines, a heartbeat written as "\r" and "\n"
// in two writes, no chunking). shared/reference/marathon-api.md is the
// specification; comments cite its sections.
//
// Apps are declared in Go (CreateApp, UpdateApp, Scale, DeleteApp,
// KillTask). Every task is a real process-like goroutine (a TaskFunc)
// serving on its own loopback listener, so a client of the simulator
// reaches real backends at the host and ports the REST API and the events
// report. When a TaskFunc returns, the
// task has exited: the simulator reports TASK_FINISHED and, after
// Config.RestartDelay, launches a replacement with a new task id and port,
// as Marathon does.
//
// Config.Version selects the behaviour of one Marathon release: task id format
// (1.8+ instance ids), app JSON shape (0.8 or 1.x), SSE event names (0.11+),
// event_type filtering (1.3.7+), slow-consumer handling (1.8+ closes the
// stream) and what a standby does with /v2/events (1.7+ redirects).
// Versions between 0.8 and 1.10 are approximations assembled from those
// switches.
//
// Tests get failure hooks Marathon users meet in production: Silently (state
// changes whose events are lost), DropStreams, EmitRaw (malformed events),
// Intercept (answer any request by hand), abrupt task death with no event,
// and a standby Server that redirects or proxies to its leader.
//
// Concurrency: every method is safe for concurrent use. All state lives behind
// one mutex; events are framed under it and handed to each stream's bounded
// queue without blocking, so a stuck client can never stall the simulator
// (it is disconnected instead, as Marathon 1.8+ does). Close stops the HTTP
// server, every stream and every task and waits for all goroutines the
// Server started.
package marathonsim
