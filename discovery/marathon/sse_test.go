package marathon

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

type parsed struct{ Name, Data string }

// parseAll reads every event from r, recording oversize errors as a
// "too large" pseudo-event so tests can see where they happened.
func parseAll(r io.Reader, maxLine, maxEvent int) ([]parsed, error) {
	p := newSSEReader(bufio.NewReaderSize(r, 16))
	if maxLine > 0 {
		p.maxLine = maxLine
	}
	if maxEvent > 0 {
		p.maxEvent = maxEvent
	}
	var out []parsed
	for {
		ev, err := p.Next()
		if errors.Is(err, errEventTooLarge) {
			out = append(out, parsed{Name: "!too large"})
			continue
		}
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, parsed{ev.Name, string(ev.Data)})
	}
}

// chunkReader returns its chunks one Read at a time, as TCP segments.
type chunkReader struct{ chunks []string }

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	c.chunks[0] = c.chunks[0][n:]
	if c.chunks[0] == "" {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

func TestSSEParse(t *testing.T) {
	t.Parallel()
	status := `{"eventType":"status_update_event","taskId":"a.1"}`
	tests := []struct {
		name     string
		in       string
		maxLine  int
		maxEvent int
		want     []parsed
	}{
		{"CRLF (Jetty)", "event: e\r\ndata: " + status + "\r\n\r\n", 0, 0, []parsed{{"e", status}}},
		{"LF", "event: e\ndata: x\n\n", 0, 0, []parsed{{"e", "x"}}},
		{"CR", "event: e\rdata: x\r\r", 0, 0, []parsed{{"e", "x"}}},
		{"mixed", "data: a\r\n\ndata: b\r\rdata: c\n\r\n", 0, 0, []parsed{{"", "a"}, {"", "b"}, {"", "c"}}},
		{"heartbeats only", "\r\n\r\n\r\n", 0, 0, nil},
		{"heartbeats between events", "\r\ndata: a\r\n\r\n\r\n\r\ndata: b\r\n\r\n", 0, 0, []parsed{{"", "a"}, {"", "b"}}},
		{"0.10: data only, no event line", "data: {\"eventType\":\"x\"}\r\n\r\n", 0, 0, []parsed{{"", `{"eventType":"x"}`}}},
		{"multi-line data joined with LF", "data: one\ndata:two\ndata:  three\n\n", 0, 0, []parsed{{"", "one\ntwo\n three"}}},
		{"comments and unknown fields ignored", ": hi\nid: 7\nretry: 10\nfoo: bar\ndata: x\n\n", 0, 0, []parsed{{"", "x"}}},
		{"field without colon", "data\n\n", 0, 0, []parsed{{"", ""}}},
		{"event name resets after dispatch", "event: a\ndata: 1\n\ndata: 2\n\n", 0, 0, []parsed{{"a", "1"}, {"", "2"}}},
		{"name without data dispatches nothing", "event: a\n\ndata: 2\n\n", 0, 0, []parsed{{"", "2"}}},
		{"unterminated last event discarded", "data: a\n\ndata: b\n", 0, 0, []parsed{{"", "a"}}},
		{"oversize line skipped, next event fine", "event: big\ndata: " + strings.Repeat("x", 100) + "\r\ndata: more\r\n\r\ndata: ok\r\n\r\n", 64, 0, []parsed{{Name: "!too large"}, {"", "ok"}}},
		{"oversize line at end of event", "data: " + strings.Repeat("y", 100) + "\n\ndata: ok\n\n", 64, 0, []parsed{{Name: "!too large"}, {"", "ok"}}},
		{"oversize event from many lines", strings.Repeat("data: 0123456789\n", 20) + "\ndata: ok\n\n", 0, 100, []parsed{{Name: "!too large"}, {"", "ok"}}},
	}
	readers := map[string]func(string) io.Reader{
		"whole":   func(s string) io.Reader { return strings.NewReader(s) },
		"onebyte": func(s string) io.Reader { return iotest.OneByteReader(strings.NewReader(s)) },
		"half":    func(s string) io.Reader { return iotest.HalfReader(strings.NewReader(s)) },
		"dataerr": func(s string) io.Reader { return iotest.DataErrReader(strings.NewReader(s)) },
	}
	for _, tt := range tests {
		for rname, mk := range readers {
			t.Run(tt.name+"/"+rname, func(t *testing.T) {
				got, err := parseAll(mk(tt.in), tt.maxLine, tt.maxEvent)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got, tt.want) {
					t.Fatalf("got %q\nwant %q", got, tt.want)
				}
			})
		}
	}
}

// Jetty's heartbeat is "\r" and "\n" flushed separately: the CR alone ends
// the line, and the LF of the next read must not count as a second one.
func TestSSEHeartbeatSplitAcrossReads(t *testing.T) {
	t.Parallel()
	r := &chunkReader{chunks: []string{
		"event: a\r\ndata: 1\r\n\r", "\n", // event end split
		"\r", "\n", "\r", "\n", // two heartbeats, split
		"data: 2\r", "\n", "\r", "\n",
	}}
	got, err := parseAll(r, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := []parsed{{"a", "1"}, {"", "2"}}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// An event whose final blank line ends in CR is dispatched at once, without
// waiting for the LF that Jetty flushes separately (maybe 10 s later).
func TestSSEDispatchesOnCRWithoutWaiting(t *testing.T) {
	t.Parallel()
	pr, pw := io.Pipe()
	defer pw.Close()
	p := newSSEReader(bufio.NewReader(pr))
	go func() { _, _ = pw.Write([]byte("data: now\r\n\r")) }()
	done := make(chan sseEvent, 1)
	go func() {
		ev, err := p.Next()
		if err == nil {
			done <- ev
		}
	}()
	select {
	case ev := <-done:
		if string(ev.Data) != "now" {
			t.Fatalf("data = %q", ev.Data)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("event not dispatched before the LF arrived")
	}
}

func TestSSERealMarathonCapture(t *testing.T) {
	t.Parallel()
	data := readTestdata(t, "marathon-docs-events.txt")
	for _, crlf := range []bool{false, true} {
		in := data
		if crlf {
			in = bytes.ReplaceAll(data, []byte("\n"), []byte("\r\n"))
		}
		got, err := parseAll(iotest.OneByteReader(bytes.NewReader(in)), 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		var types []string
		for _, e := range got {
			var ev event
			if err := json.Unmarshal([]byte(e.Data), &ev); err != nil {
				t.Fatalf("event %q: %v", e.Data, err)
			}
			if ev.EventType != e.Name {
				t.Errorf("SSE name %q, eventType %q", e.Name, ev.EventType)
			}
			types = append(types, ev.EventType+"/"+ev.TaskStatus)
		}
		want := []string{"event_stream_attached/", "status_update_event/TASK_FAILED", "status_update_event/TASK_RUNNING"}
		if !slices.Equal(types, want) {
			t.Fatalf("crlf=%v: got %q, want %q", crlf, types, want)
		}
	}
}

// FuzzSSE checks that the parser never panics and that how the bytes are
// split into reads never changes the events.
func FuzzSSE(f *testing.F) {
	f.Add(readTestdata(f, "marathon-docs-events.txt"))
	f.Add([]byte("event: a\r\ndata: 1\r\n\r\n\r\n"))
	f.Add([]byte("data: a\rdata: b\r\r:comment\n\ndata\n\n"))
	f.Add([]byte("data: " + strings.Repeat("z", 80) + "\n\ndata: ok\n\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		whole, err1 := parseAll(bytes.NewReader(in), 64, 128)
		one, err2 := parseAll(iotest.OneByteReader(bytes.NewReader(in)), 64, 128)
		if err1 != nil || err2 != nil {
			t.Fatalf("errors: %v, %v", err1, err2)
		}
		if !slices.Equal(whole, one) {
			t.Fatalf("split changes events:\nwhole %q\n  one %q", whole, one)
		}
	})
}
