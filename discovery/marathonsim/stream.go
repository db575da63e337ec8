package marathonsim

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Heartbeat bytes. Jetty's EventSourceEmitter writes "\r", flushes, writes
// "\n", flushes (marathon-api.md §1.3), so a client may see them in two reads.
const (
	heartbeatCR = "\r"
	heartbeatLF = "\n"
)

// frame is one event, already framed for the wire.
type frame struct {
	typ string // eventType, for the event_type filter; "" for EmitRaw
	b   []byte
}

// stream is one connected /v2/events client. It owns its hijacked
// connection: only writeLoop writes to it, and close unblocks both loops.
type stream struct {
	conn   net.Conn
	remote string          // client IP, as in event_stream_attached.remoteAddress
	filter map[string]bool // event_type query; nil means every event
	queue  chan frame
	done   chan struct{}
	once   sync.Once
}

func newStream(conn net.Conn, queueLen int, filter map[string]bool) *stream {
	remote := conn.RemoteAddr().String()
	if host, _, err := net.SplitHostPort(remote); err == nil {
		remote = host
	}
	return &stream{
		conn:   conn,
		remote: remote,
		filter: filter,
		queue:  make(chan frame, queueLen),
		done:   make(chan struct{}),
	}
}

// offer queues f without blocking and reports whether it fit.
func (st *stream) offer(f frame) bool {
	select {
	case st.queue <- f:
		return true
	default:
		return false
	}
}

func (st *stream) close() {
	st.once.Do(func() {
		close(st.done)
		st.conn.Close()
	})
}

// wants applies the event_type filter. Marathon filters when it sends, after
// the per-client queue (§1.1), so filtered events still count toward it.
func (st *stream) wants(f frame) bool {
	return st.filter == nil || f.typ == "" || st.filter[f.typ]
}

// writeLoop writes the response head, then queued events and heartbeats
// until the stream closes or a write fails. Each event is one Write and each heartbeat is two, because the
// conn is unbuffered and a Write is Jetty's flush.
func (st *stream) writeLoop(head []byte, heartbeat time.Duration) {
	if len(head) > 0 {
		if _, err := st.conn.Write(head); err != nil {
			return
		}
	}
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-st.done:
			return
		case f := <-st.queue:
			if !st.wants(f) {
				continue
			}
			if _, err := st.conn.Write(f.b); err != nil {
				return
			}
		case <-tick.C:
			if _, err := io.WriteString(st.conn, heartbeatCR); err != nil {
				return
			}
			if _, err := io.WriteString(st.conn, heartbeatLF); err != nil {
				return
			}
		}
	}
}

// readLoop waits for the client to go away. The client sends nothing after
// its request, so EOF or an error means it disconnected; noticing that here
// keeps Streams accurate without waiting for the next heartbeat to fail.
func (st *stream) readLoop() {
	var buf [512]byte
	for {
		if _, err := st.conn.Read(buf[:]); err != nil {
			return
		}
	}
}

// acceptsEventStream reproduces Jetty's EventSourceServlet check: some Accept
// header value must equal "text/event-stream" exactly, so a list or a ;q=
// parameter fails (§1.1).
func acceptsEventStream(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		if v == "text/event-stream" {
			return true
		}
	}
	return false
}

// jetty405 is the page Jetty's HttpServlet answers for a method or Accept
// the servlet does not take.
func jetty405(w http.ResponseWriter, r *http.Request) {
	msg := fmt.Sprintf("HTTP method %s is not supported by this URL", r.Method)
	w.Header().Set("Content-Type", "text/html;charset=iso-8859-1")
	w.Header().Set("Cache-Control", "must-revalidate,no-cache,no-store")
	w.WriteHeader(http.StatusMethodNotAllowed)
	fmt.Fprintf(w, "<html>\n<head>\n<meta http-equiv=\"Content-Type\" content=\"text/html;charset=utf-8\"/>\n"+
		"<title>Error 405 %s</title>\n</head>\n<body><h2>HTTP ERROR 405</h2>\n"+
		"<p>Problem accessing %s. Reason:\n<pre>    %s</pre></p>\n</body>\n</html>\n",
		msg, r.URL.Path, msg)
}

// serveEvents is GET /v2/events on a leader.
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || !acceptsEventStream(r) {
		jetty405(w, r)
		return
	}
	var filter map[string]bool
	if s.feat.eventFilter {
		for _, t := range r.URL.Query()["event_type"] {
			if t == "" {
				continue
			}
			if filter == nil {
				filter = make(map[string]bool)
			}
			filter[t] = true
		}
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "marathonsim: connection cannot be hijacked", http.StatusInternalServerError)
		return
	}
	// Hijacking lets the simulator write Jetty's response byte for byte:
	// "Connection: close" and no chunked encoding, the body ends at TCP close.
	conn, _, err := hj.Hijack()
	if err != nil {
		s.logf("marathonsim: hijacking event stream: %v", err)
		return
	}
	st := newStream(conn, s.feat.queueLen, filter)

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		conn.Close()
		return
	}
	head := "HTTP/1.1 200 OK\r\n" +
		"Date: " + time.Now().UTC().Format(http.TimeFormat) + "\r\n" +
		"Content-Type: text/event-stream;charset=utf-8\r\n" +
		"X-Marathon-Leader: http://" + s.hostPortLocked() + "\r\n" +
		"X-Frame-Options: DENY\r\n" +
		"X-XSS-Protection: 1; mode=block\r\n" +
		"Cache-Control: no-cache, no-store, must-revalidate\r\n" +
		"Pragma: no-cache\r\n" +
		"Expires: 0\r\n" +
		"Connection: close\r\n\r\n"
	// The stream is registered before its head is written (writeLoop writes
	// the head first), so a client that has read the head is guaranteed to
	// get every event emitted afterwards.
	s.streams[st] = struct{}{}
	s.notifyStreamsLocked()
	// Marathon subscribes the client and then publishes its attach event to
	// every stream, so the client's own queue starts with it (§1.3).
	s.broadcastLocked(s.frameOf("event_stream_attached", obj{
		{"remoteAddress", st.remote},
		{"eventType", "event_stream_attached"},
		{"timestamp", stamp(time.Now())},
	}))
	s.wg.Add(1)
	s.mu.Unlock()

	go s.watchStream(st)
	st.writeLoop([]byte(head), s.heartbeat)
	s.removeStream(st, true)
}

// watchStream runs st.readLoop and removes st when its client leaves.
func (s *Server) watchStream(st *stream) {
	defer s.wg.Done()
	st.readLoop()
	s.removeStream(st, true)
}

// removeStream closes st and, if it was still registered and announce is
// set, tells the other streams with event_stream_detached.
func (s *Server) removeStream(st *stream, announce bool) {
	st.close()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.streams[st]; !ok {
		return
	}
	delete(s.streams, st)
	s.notifyStreamsLocked()
	if announce && !s.closed {
		s.broadcastLocked(s.frameOf("event_stream_detached", obj{
			{"remoteAddress", st.remote},
			{"eventType", "event_stream_detached"},
			{"timestamp", stamp(time.Now())},
		}))
	}
}

func (s *Server) notifyStreamsLocked() {
	close(s.streamsChanged)
	s.streamsChanged = make(chan struct{})
}

// dropStreamsLocked closes every stream without detach events: they all go
// at once, as when Marathon loses leadership.
func (s *Server) dropStreamsLocked() {
	if len(s.streams) == 0 {
		return
	}
	for st := range s.streams {
		st.close()
	}
	clear(s.streams)
	s.notifyStreamsLocked()
}

// DropStreams closes every open /v2/events connection, as a leader change or
// a proxy in between would.
func (s *Server) DropStreams() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropStreamsLocked()
}

// Streams returns the number of connected event streams.
func (s *Server) Streams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.streams)
}

// WaitStreams waits until at least n event streams are connected.
func (s *Server) WaitStreams(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		got, changed := len(s.streams), s.streamsChanged
		s.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("marathonsim: waiting for %d event streams, have %d: %w", n, got, ctx.Err())
		}
	}
}

// broadcastLocked queues f on every stream. A stream whose queue is full is
// closed (1.8+, "Closing connection for slow event consumer") or misses the
// event (before 1.8, events were dropped silently), §1.4.
func (s *Server) broadcastLocked(f frame) {
	var slow []*stream
	for st := range s.streams {
		if !st.offer(f) {
			slow = append(slow, st)
		}
	}
	if !s.feat.closeSlow {
		return
	}
	for _, st := range slow {
		s.logf("marathonsim: closing connection for slow event consumer %s", st.remote)
		st.close()
		delete(s.streams, st)
	}
	if len(slow) > 0 {
		s.notifyStreamsLocked()
	}
}
