package marathon

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
)

// Default bounds for one SSE line and one event. Marathon 1.5 to 1.6 can
// still send "heavy" deployment plans (whole root groups, often megabytes)
// when plan-format=light is not honoured, so the bounds are generous; they
// exist so that a broken or hostile peer cannot make pacer grow without limit.
const (
	defaultMaxLine  = 16 << 20
	defaultMaxEvent = 16 << 20
)

// errEventTooLarge is returned by sseReader.Next when a line or an event
// exceeds its bound. It is recoverable: the reader has skipped the rest of
// the offending event and the next call continues with the following one.
// The caller has lost an event and should resync.
var errEventTooLarge = errors.New("sse: event too large")

// sseEvent is one dispatched server-sent event.
type sseEvent struct {
	Name string // the "event:" field; empty on Marathon 0.9/0.10, which sends none
	Data []byte // the "data:" lines joined with "\n"; valid until the next call to Next
}

// sseReader parses a text/event-stream (WHATWG HTML, "Server-sent events")
// from a bufio.Reader. It accepts CR, LF and CRLF line ends, including a CR
// at the end of one read whose LF arrives in the next: Jetty's heartbeat is
// "\r" and "\n" written and flushed separately, and treating them as two
// line ends would be harmless here but wrong in general.
type sseReader struct {
	r        *bufio.Reader
	maxLine  int
	maxEvent int

	line        []byte
	data        []byte
	name        []byte
	skipLF      bool // the previous line ended in CR: a leading LF belongs to it
	tooLarge    bool // skipping the rest of an oversize event
	discardLine bool // the current line overflowed: drop bytes up to its end
}

func newSSEReader(r *bufio.Reader) *sseReader {
	return &sseReader{r: r, maxLine: defaultMaxLine, maxEvent: defaultMaxEvent}
}

// Next returns the next event with a non-empty data buffer. It returns
// errEventTooLarge (recoverable) for an oversize event and any error from the
// underlying reader (io.EOF at a clean end; an unterminated last event is
// discarded, as the SSE specification requires).
func (p *sseReader) Next() (sseEvent, error) {
	for {
		line, err := p.readLine()
		if err != nil {
			return sseEvent{}, err
		}
		if len(line) == 0 {
			// A blank line dispatches. An empty data buffer (the heartbeat)
			// dispatches nothing.
			tooLarge := p.tooLarge
			p.tooLarge = false
			if tooLarge {
				p.data, p.name = p.data[:0], p.name[:0]
				continue
			}
			if len(p.data) == 0 {
				p.name = p.name[:0]
				continue
			}
			data := p.data[:len(p.data)-1] // drop the final "\n"
			ev := sseEvent{Name: string(p.name), Data: data}
			p.data, p.name = p.data[:0], p.name[:0]
			return ev, nil
		}
		if p.tooLarge || line[0] == ':' {
			continue // inside an event being skipped, or a comment
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(field) {
		case "event":
			p.name = append(p.name[:0], value...)
		case "data":
			if len(p.data)+len(value)+1 > p.maxEvent {
				p.tooLarge = true
				p.data = p.data[:0]
				return sseEvent{}, fmt.Errorf("%w: event data over %d bytes", errEventTooLarge, p.maxEvent)
			}
			p.data = append(p.data, value...)
			p.data = append(p.data, '\n')
		}
		// "id" and "retry" are ignored: Marathon sends neither and has no replay.
	}
}

// readLine returns the next line without its terminator; the slice is valid
// until the next call. A line over maxLine returns errEventTooLarge, and the
// next call first discards the rest of that line.
func (p *sseReader) readLine() ([]byte, error) {
	p.line = p.line[:0]
	for {
		buf, err := p.r.Peek(1)
		if err != nil {
			return nil, err
		}
		if p.skipLF {
			p.skipLF = false
			if buf[0] == '\n' {
				_, _ = p.r.Discard(1)
				continue
			}
		}
		buf, _ = p.r.Peek(p.r.Buffered())
		i := bytes.IndexAny(buf, "\r\n")
		if p.discardLine {
			if i < 0 {
				_, _ = p.r.Discard(len(buf))
				continue
			}
			p.discardLine = false
			p.skipLF = buf[i] == '\r'
			_, _ = p.r.Discard(i + 1)
			p.line = p.line[:0]
			continue
		}
		n := i
		if n < 0 {
			n = len(buf)
		}
		if len(p.line)+n > p.maxLine {
			// Leave the terminator (if any) for the discarding pass.
			_, _ = p.r.Discard(n)
			p.discardLine = true
			p.tooLarge = true
			p.line = p.line[:0]
			p.data = p.data[:0]
			return nil, fmt.Errorf("%w: line over %d bytes", errEventTooLarge, p.maxLine)
		}
		p.line = append(p.line, buf[:n]...)
		if i < 0 {
			_, _ = p.r.Discard(n)
			continue
		}
		p.skipLF = buf[i] == '\r'
		_, _ = p.r.Discard(i + 1)
		return p.line, nil
	}
}
