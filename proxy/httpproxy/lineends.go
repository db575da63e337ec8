package httpproxy

import (
	"bufio"
	"bytes"

	"github.com/valyala/fasthttp"
)

// Request headers whose lines end in a bare LF.
//
// RFC 9112 2.2 lets a recipient take a bare LF for a line's end, and
// nginx, HAProxy and Go's net/http all do: a request typed or scripted by
// hand (printf 'GET / HTTP/1.1\nHost: x\n\n' | nc) is answered. fasthttp
// reads such lines too, but finds the header's end only at a CRLF CRLF:
// without one it waits for more until ReadHeaderTimeout, and the client
// gets a 408 for a request it sent whole. So the header fasthttp reads is
// given CRLF line ends before fasthttp sees it: the connection's exchanger
// is offered every read into fasthttp's buffer (exchange.go), and puts a CR
// before each bare LF of the header, in place, in the room the read left
// in the buffer. fasthttp then parses the lines it would have parsed
// anyway (it drops a CR before an LF), and the header that reaches the
// backend is fasthttp's, serialised with CRLF as always: nothing the
// backend reads differs. The body, and whatever follows the header's empty
// line, is never touched. Only a request whose first read starts at an
// empty buffer is followed: one pipelined behind another in fasthttp's
// buffer still waits for a CRLF CRLF, as before.

// lfScan follows the header of one request across the reads fasthttp
// makes of it.
type lfScan struct {
	on      bool // a header is being read, from a read that started it
	cr      bool // the last byte scanned was a CR
	col     int  // bytes of the current line scanned so far, a CR included
	started bool // the request line was seen (empty lines before it are skipped, as fasthttp does)
}

// start begins the scan of a request whose first read starts at the
// beginning of fasthttp's buffer (a read into less continues bytes
// fasthttp holds already, which the scan has not seen).
func (s *lfScan) start(fresh bool) { *s = lfScan{on: fresh} }

// fix gives the bare LF line ends of the header in b, the next bytes read
// of it, a CR, in place, in b's spare capacity. It returns b's new length,
// and false if it left b as it was: no bare LF, or not enough room (the
// header then nearly fills fasthttp's buffer, which refuses it as too
// large). The scan ends at the header's end, or when it has no room.
func (s *lfScan) fix(b []byte) (int, bool) {
	if !s.on {
		return len(b), false
	}
	crBefore := s.cr
	bare, end := s.scan(b)
	if end >= 0 {
		s.on = false
	} else {
		end = len(b)
	}
	if bare == 0 {
		return len(b), false
	}
	n := len(b) + bare
	if n > cap(b) {
		s.on = false
		return len(b), false
	}
	out := b[:n]
	// From the back, so that nothing is overwritten before it is moved:
	// what follows the header moves by every CR, and each header byte by
	// the CRs before it.
	copy(out[end+bare:], b[end:])
	j := end + bare
	for i := end - 1; i >= 0; i-- {
		j--
		out[j] = b[i]
		if b[i] != '\n' {
			continue
		}
		if (i > 0 && b[i-1] != '\r') || (i == 0 && !crBefore) {
			j--
			out[j] = '\r'
		}
	}
	return n, true
}

// scan reads b, the next bytes of the header, and returns how many of its
// lines end in a bare LF, and where in b the header ends (past the LF of
// its empty line), or -1 if it goes on after b.
func (s *lfScan) scan(b []byte) (bare, end int) {
	for i := 0; i < len(b); {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			s.col += len(b) - i
			s.cr = b[len(b)-1] == '\r'
			return bare, -1
		}
		j += i
		cr := s.cr
		if j > i {
			cr = b[j-1] == '\r'
		}
		if !cr {
			bare++
		}
		line := s.col + j - i // the line's bytes before its LF
		s.col, s.cr = 0, false
		i = j + 1
		if line == 0 || (line == 1 && cr) {
			if s.started {
				return bare, i
			}
			continue
		}
		s.started = true
	}
	return bare, -1
}

// Answers whose lines end in a bare LF.
//
// A backend that writes its answers by hand (a shell loop over nc, a small
// embedded server) may end their lines in a bare LF, which HAProxy and
// nginx read, so marathon-lb served such an app. fasthttp's read of a
// response header waits for a CRLF CRLF that never comes: the client got
// a 504 after ResponseHeaderTimeout, or a 502 when the backend closed.

// readAnswerHeader reads a backend's response header from br into rh, as
// rh.Read does, and one whose lines end in a bare LF too. A header that
// ends in CRLF CRLF costs one search for it, and goes to rh.Read as
// before; so does one after whose empty line a CRLF CRLF comes (in its
// body), which fasthttp reads by LF's rules itself.
func readAnswerHeader(rh *fasthttp.ResponseHeader, br *bufio.Reader) error {
	for {
		buf, err := br.Peek(max(br.Buffered(), 1))
		if len(buf) == 0 || bytes.Contains(buf, crlfcrlf) {
			return rh.Read(br) // and its error: the close, a timeout
		}
		var s lfScan
		s.start(true)
		if _, end := s.scan(buf); end >= 0 {
			return readLFHeader(rh, br, buf[:end])
		}
		if err != nil || len(buf) == br.Size() {
			return rh.Read(br) // its error: the close, a timeout, a header too large
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return rh.Read(br)
		}
	}
}

// readLFHeader has rh read head, a response header at the start of br
// whose lines end in bare LFs, with CRLF line ends, which parse as
// fasthttp parses its own, and consumes it from br.
func readLFHeader(rh *fasthttp.ResponseHeader, br *bufio.Reader, head []byte) error {
	sc := scratchPool.Get().(*exchangeScratch)
	defer scratchPool.Put(sc)
	out := sc.out[:0]
	for line := range bytes.Lines(head) {
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, lf), cr)
		out = append(append(out, line...), '\r', '\n')
	}
	sc.out = out[:0]
	if err := rh.Read(sc.reader(out)); err != nil {
		return err
	}
	_, _ = br.Discard(len(head))
	return nil
}

var (
	crlfcrlf = []byte("\r\n\r\n")
	lf       = []byte("\n")
	cr       = []byte("\r")
)
