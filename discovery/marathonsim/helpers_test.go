package marathonsim

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// waitTimeout bounds every wait in these tests; nothing sleeps and hopes.
const waitTimeout = 10 * time.Second

// tsRE is Marathon's timestamp: UTC with exactly three millisecond digits.
const tsRE = `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z`

func startSim(t *testing.T, cfg Config) *Server {
	t.Helper()
	s := New(cfg)
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

func mustCreate(t *testing.T, s *Server, spec AppSpec) []TaskInfo {
	t.Helper()
	if err := s.CreateApp(spec); err != nil {
		t.Fatalf("CreateApp(%s): %v", spec.ID, err)
	}
	return s.Tasks(spec.ID)
}

// waitUntil polls cond until it holds or waitTimeout passes.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// sseConn is a raw TCP client of /v2/events, so tests see the exact bytes.
type sseConn struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
	head string // status line and headers
}

// dialEvents sends GET /v2/events?query with the given Accept headers and
// reads the response head.
func dialEvents(t *testing.T, base, query string, accept ...string) *sseConn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatalf("dialing %s: %v", base, err)
	}
	t.Cleanup(func() { conn.Close() })
	target := "/v2/events"
	if query != "" {
		target += "?" + query
	}
	req := "GET " + target + " HTTP/1.1\r\nHost: " + strings.TrimPrefix(base, "http://") + "\r\n"
	for _, a := range accept {
		req += "Accept: " + a + "\r\n"
	}
	req += "\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatalf("writing request: %v", err)
	}
	c := &sseConn{t: t, conn: conn, br: bufio.NewReader(conn)}
	c.deadline()
	var head strings.Builder
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading response head: %v (so far %q)", err, head.String())
		}
		head.WriteString(line)
		if line == "\r\n" {
			break
		}
	}
	c.head = head.String()
	return c
}

func (c *sseConn) deadline() { _ = c.conn.SetReadDeadline(time.Now().Add(waitTimeout)) }

// readFrame returns the next event's raw bytes, skipping heartbeats (a bare
// CRLF between events).
func (c *sseConn) readFrame() string {
	c.t.Helper()
	c.deadline()
	var b strings.Builder
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			c.t.Fatalf("reading event: %v (so far %q)", err, b.String())
		}
		if line == "\r\n" {
			if b.Len() == 0 {
				continue // heartbeat
			}
			b.WriteString(line)
			return b.String()
		}
		b.WriteString(line)
	}
}

type event struct {
	name string         // the SSE event: name, "" if absent
	json string         // the data line
	data map[string]any // decoded
}

func (e event) str(k string) string { s, _ := e.data[k].(string); return s }

func (e event) String() string { return fmt.Sprintf("%s %s", e.name, e.json) }

func parseFrame(t *testing.T, raw string) event {
	t.Helper()
	var ev event
	for _, line := range strings.Split(strings.TrimSuffix(raw, "\r\n\r\n"), "\r\n") {
		switch {
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.json = strings.TrimPrefix(line, "data: ")
		default:
			t.Fatalf("unexpected line %q in frame %q", line, raw)
		}
	}
	if err := json.Unmarshal([]byte(ev.json), &ev.data); err != nil {
		t.Fatalf("event data %q: %v", ev.json, err)
	}
	return ev
}

func (c *sseConn) next() event {
	c.t.Helper()
	return parseFrame(c.t, c.readFrame())
}

// waitEvent reads events until match accepts one, and returns it; reading
// fails the test at the deadline.
func (c *sseConn) waitEvent(what string, match func(event) bool) event {
	c.t.Helper()
	c.t.Logf("waiting for %s", what)
	for {
		ev := c.next()
		if match(ev) {
			return ev
		}
	}
}

// status matches a status_update_event for taskID ("" for any task) in state.
func status(taskID, state string) func(event) bool {
	return func(e event) bool {
		return e.str("eventType") == "status_update_event" && e.str("taskStatus") == state &&
			(taskID == "" || e.str("taskId") == taskID)
	}
}

func named(typ string) func(event) bool {
	return func(e event) bool { return e.str("eventType") == typ }
}

// getJSON GETs url and decodes its JSON body.
func getJSON(t *testing.T, url string, into any) *http.Response {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	if into != nil {
		if err := json.Unmarshal(body, into); err != nil {
			t.Fatalf("GET %s: decoding %q: %v", url, body, err)
		}
	}
	return resp
}

func getBody(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp, string(body)
}

// readAllFrom connects to a task port and reads until EOF.
func readAllFrom(t *testing.T, port int) string {
	t.Helper()
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("dialing task port %d: %v", port, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(waitTimeout))
	b, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("reading from task port %d: %v", port, err)
	}
	return string(b)
}

func mustMatch(t *testing.T, re, s string) {
	t.Helper()
	if !regexp.MustCompile(re).MatchString(s) {
		t.Errorf("%q does not match %s", s, re)
	}
}
