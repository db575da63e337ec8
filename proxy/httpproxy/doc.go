// Package httpproxy is pacer's HTTP data plane, built on fasthttp: the
// service ports of HTTP-mode services, and the --http listener that routes by
// Host (and path prefix) across every HTTP-mode service.
//
// cmd/lb builds one Proxy with New, runs Proxy.Run on its own goroutine (it
// opens and closes service-port listeners as the discovery.Table changes,
// through the same proxy.PortSet as proxy.TCP), passes the --http listener,
// if any, to Proxy.ServeVHost on another goroutine, and calls Proxy.Shutdown
// when it stops. The admin listener reads Proxy.Ports and Proxy.Stats.
//
// # The request path
//
// fasthttp parses the request (header names are not normalised, the body is
// streamed once it is larger than 64 KiB; header lines may end in a bare LF,
// which the connection's exchanger turns into CRLF before fasthttp reads
// them: lineends.go). The handler then:
//
//  1. loads the table's snapshot (one atomic load) and the route index built
//     for that snapshot's version (routes.go; built once per version, on the
//     first request that needs it or by Run, whichever comes first);
//  2. finds the service: by listener port, or by Host (exact, then the
//     longest wildcard suffix, then the longest PATH prefix);
//  3. rewrites the header in place: hop-by-hop headers, and a client's
//     X-Real-IP and Forwarded, out; X-Forwarded-* in (headers.go);
//  4. picks a backend (balance.go) and sends the request over a pooled
//     keep-alive connection to it (backend.go); a connect failure is
//     retried on another backend, and so is a connection error of an
//     idempotent request whose body can be replayed;
//  5. reads the response header into the fasthttp response; a body already
//     buffered or smaller than 64 KiB is copied, a larger or chunked one is
//     streamed from the backend connection to the client, which goes back
//     to its pool when the body ends.
//
// Nothing on this path takes a lock except a backend's pool mutex (held for
// a slice push or pop, or to link an answer that streams into its
// backend's list), and nothing allocates once the pools are warm.
//
// Most keep-alive requests never reach fasthttp's goroutine: while it waits
// for the next request, fastconn's poller reads it and offers it to the
// connection's exchanger (exchange.go), which serves a plain request with
// no body over an idle pooled connection, and writes the answer back when
// the poller sees it, the same steps and the same bytes as above. Whatever
// it cannot finish goes back to fasthttp, which serves it as above. Upgrade
// requests (WebSocket) are answered by a spliced TCP tunnel (upgrade.go).
//
// # Drains
//
// As in the TCP plane, nothing already open is cut when the table changes,
// only bounded by DrainTimeout. A service port nobody claims any more stops
// listening; its requests in flight finish, each answer closing its
// connection, and what is still open at the deadline is closed. Each
// opening of a port's listener drains on its own (listenRun), so a port
// claimed again is served as usual at once. An answer streaming from a
// backend no service routes to any more, and a tunnel (WebSocket) to one,
// get DrainTimeout from then, unless the address is routed again first.
//
// # Errors
//
// Answers pacer makes itself are short text/plain bodies that name the
// service: 502 when the backend failed or answered garbage, 503 with
// Retry-After when the service has no routable backend, 504 when the backend
// did not connect or answer in time, 404 when no service matches the Host,
// 403 for absolute-form requests to hosts pacer does not serve (pacer is no
// forward proxy), 405 for CONNECT, 413, 431 and 408 for limits, 400 and a
// close for a malformed request, among them one whose body's length is
// ambiguous (Transfer-Encoding with Content-Length, or not ending in
// chunked: RFC 9112 6.3). An answer a backend sends before it took the
// whole request (a 413 to a large upload) goes to the client as it is, and
// ends both connections.
package httpproxy
