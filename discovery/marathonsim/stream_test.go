package marathonsim

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// The response head and framing are Jetty's, byte for byte (marathon-api.md §1.2, §1.3).
func TestEventStreamWire(t *testing.T) {
	t.Parallel()
	s := startSim(t, Config{Heartbeat: 20 * time.Millisecond})
	c := dialEvents(t, s.URL(), "", "text/event-stream")

	if !strings.HasPrefix(c.head, "HTTP/1.1 200 OK\r\n") {
		t.Errorf("status line: %q", c.head)
	}
	for _, h := range []string{
		"\r\nContent-Type: text/event-stream;charset=utf-8\r\n",
		"\r\nConnection: close\r\n",
		"\r\nX-Marathon-Leader: " + s.URL() + "\r\n",
		"\r\nCache-Control: no-cache, no-store, must-revalidate\r\n",
	} {
		if !strings.Contains(c.head, h) {
			t.Errorf("head lacks %q:\n%s", h, c.head)
		}
	}
	for _, h := range []string{"Transfer-Encoding", "Content-Length"} {
		if strings.Contains(c.head, h) {
			t.Errorf("head has %s:\n%s", h, c.head)
		}
	}

	// The first bytes are this client's own attach event.
	mustMatch(t, `^event: event_stream_attached\r\ndata: \{"remoteAddress":"127\.0\.0\.1","eventType":"event_stream_attached","timestamp":"`+tsRE+`"\}\r\n\r\n$`, c.readFrame())

	// Then, with nothing to send, a heartbeat: CR LF and nothing else.
	c.deadline()
	hb := make([]byte, 2)
	if _, err := io.ReadFull(c.br, hb); err != nil || string(hb) != "\r\n" {
		t.Fatalf("heartbeat: got %q, %v", hb, err)
	}

	// Emit sorts payload keys, appends eventType and timestamp, escapes no HTML.
	s.Emit("custom_event", map[string]any{"b": "<&>", "a": 1})
	mustMatch(t, `^event: custom_event\r\ndata: \{"a":1,"b":"<&>","eventType":"custom_event","timestamp":"`+tsRE+`"\}\r\n\r\n$`, c.readFrame())

	s.EmitRaw("data: {not json\r\n\r\n")
	if got := c.readFrame(); got != "data: {not json\r\n\r\n" {
		t.Errorf("EmitRaw: got %q", got)
	}
}

// Jetty writes a heartbeat as "\r", flush, "\n", flush: two writes, which a
// client may receive in two reads. net.Pipe delivers one Write per Read, so
// it shows the write boundaries.
func TestHeartbeatIsTwoWrites(t *testing.T) {
	t.Parallel()
	client, server := net.Pipe()
	defer client.Close()
	st := newStream(server, 4, nil)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		st.writeLoop(nil, 5*time.Millisecond)
	}()
	defer func() { st.close(); wg.Wait() }()

	buf := make([]byte, 64)
	_ = client.SetReadDeadline(time.Now().Add(waitTimeout))
	for _, want := range []string{"\r", "\n", "\r", "\n"} {
		n, err := client.Read(buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("read %q, %v; want %q", buf[:n], err, want)
		}
	}
}

// Jetty's EventSourceServlet compares each Accept value with equals, so
// anything but exactly text/event-stream gets HttpServlet's 405 (§1.1).
func TestEventsAcceptHeader(t *testing.T) {
	t.Parallel()
	s := startSim(t, Config{})
	tests := []struct {
		name   string
		method string
		accept []string
		want   int
	}{
		{name: "exact", method: "GET", accept: []string{"text/event-stream"}, want: 200},
		{name: "list with wildcard", method: "GET", accept: []string{"text/event-stream, */*"}, want: 405},
		{name: "quality parameter", method: "GET", accept: []string{"text/event-stream;q=1.0"}, want: 405},
		{name: "wildcard", method: "GET", accept: []string{"*/*"}, want: 405},
		{name: "none", method: "GET", want: 405},
		{name: "second header matches", method: "GET", accept: []string{"application/json", "text/event-stream"}, want: 200},
		{name: "POST", method: "POST", accept: []string{"text/event-stream"}, want: 405},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequest(tc.method, s.URL()+"/v2/events", nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range tc.accept {
				req.Header.Add("Accept", a)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
			if tc.want != 405 {
				return
			}
			body, _ := io.ReadAll(resp.Body)
			msg := "HTTP method " + tc.method + " is not supported by this URL"
			if !strings.Contains(string(body), msg) || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
				t.Errorf("405 body %q (%s), want HTML with %q", body, resp.Header.Get("Content-Type"), msg)
			}
		})
	}
}

func TestEventTypeFilter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		version string
		first   string // the first event type the client sees
	}{
		{name: "filtered since 1.3.7", version: "1.10.17", first: "status_update_event"},
		{name: "ignored before 1.3.7", version: "1.3.6", first: "event_stream_attached"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := startSim(t, Config{Version: tc.version})
			c := dialEvents(t, s.URL(), "event_type=status_update_event&event_type=app_terminated_event", "text/event-stream")
			mustCreate(t, s, AppSpec{ID: "/f", Instances: 1})
			if got := c.next(); got.str("eventType") != tc.first {
				t.Fatalf("first event %s, want %s", got, tc.first)
			}
		})
	}
}

func TestDropStreams(t *testing.T) {
	t.Parallel()
	s := startSim(t, Config{})
	c1 := dialEvents(t, s.URL(), "", "text/event-stream")
	c2 := dialEvents(t, s.URL(), "", "text/event-stream")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := s.WaitStreams(ctx, 2); err != nil {
		t.Fatal(err)
	}
	c1.next() // own attach
	s.DropStreams()
	for _, c := range []*sseConn{c1, c2} {
		c.deadline()
		// Whatever was queued may still arrive; then the stream ends.
		if _, err := io.ReadAll(c.br); err != nil {
			t.Errorf("stream did not end cleanly: %v", err)
		}
	}
	if n := s.Streams(); n != 0 {
		t.Errorf("Streams() = %d after DropStreams", n)
	}
	// Clients can reconnect at once.
	c3 := dialEvents(t, s.URL(), "", "text/event-stream")
	if ev := c3.next(); ev.str("eventType") != "event_stream_attached" {
		t.Errorf("after reconnect got %s", ev)
	}
	if err := s.WaitStreams(ctx, 1); err != nil {
		t.Fatal(err)
	}
}

// A client that leaves is noticed at once and announced to the others.
func TestStreamDetach(t *testing.T) {
	t.Parallel()
	s := startSim(t, Config{})
	c1 := dialEvents(t, s.URL(), "", "text/event-stream")
	c1.next()
	c2 := dialEvents(t, s.URL(), "", "text/event-stream")
	c1.waitEvent("c2 attach", named("event_stream_attached"))
	c2.conn.Close()
	c1.waitEvent("c2 detach", named("event_stream_detached"))
	waitUntil(t, "one stream", func() bool { return s.Streams() == 1 })
}

// Marathon 1.8+ closes a stream whose queue overflows; 1.7 drops events and
// keeps it (§1.4). The client here never reads.
func TestSlowConsumer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		version    string
		wantClosed bool
	}{
		{version: "1.10.17", wantClosed: true},
		{version: "1.7.216", wantClosed: false},
	}
	for _, tc := range tests {
		t.Run(tc.version, func(t *testing.T) {
			t.Parallel()
			s := startSim(t, Config{Version: tc.version})
			c := dialEvents(t, s.URL(), "", "text/event-stream")
			// Small socket buffers on both ends, so that a little more than
			// the 1024-event queue overflows it.
			if tcp, ok := c.conn.(*net.TCPConn); ok {
				_ = tcp.SetReadBuffer(4096)
			}
			s.mu.Lock()
			for st := range s.streams {
				_ = st.conn.(*net.TCPConn).SetWriteBuffer(4096)
			}
			s.mu.Unlock()
			pad := strings.Repeat("x", 1024)
			for i := 0; i < 3000 && s.Streams() == 1; i++ {
				s.Emit("filler", map[string]any{"pad": pad})
			}
			if closed := s.Streams() == 0; closed != tc.wantClosed {
				t.Fatalf("stream closed = %v, want %v", closed, tc.wantClosed)
			}
		})
	}
}

// Marathon before 0.11 writes only data: lines (§1.3).
func TestLegacyFramingHasNoEventLine(t *testing.T) {
	t.Parallel()
	s := startSim(t, Config{Version: "0.10.1"})
	c := dialEvents(t, s.URL(), "", "text/event-stream")
	mustMatch(t, `^data: \{"remoteAddress":"127\.0\.0\.1","eventType":"event_stream_attached","timestamp":"`+tsRE+`"\}\r\n\r\n$`, c.readFrame())
}
