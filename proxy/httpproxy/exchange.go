package httpproxy

import (
	"bufio"
	"bytes"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/pacer-lb/pacer/internal/fastconn"
)

// Requests served inside fastconn's poller.
//
// fasthttp serves a connection on a goroutine of its own, and each request
// then goes through the Go scheduler's queues three times: the goroutine
// woken for the request, parked for the answer, woken for it. Connections
// overtake one another there, and pacer's keep-alive latency spread twice
// as wide as HAProxy's, whose event loop serves every ready socket in the
// order the kernel reports them. The TCP plane, whose messages the poller
// forwards itself, has HAProxy's latency to the microsecond
// (bench/RESULTS.md).
//
// So a client connection from fastconn's Listener has an exchanger
// (fastconn.Exchanger): while fasthttp's goroutine waits for the next
// request, the poller reads it and offers it here. A request this path can
// serve without waiting on anything is sent at once over an idle pooled
// connection, and the answer is read, rewritten and written back by the
// poller when it comes (bconn's Readable and WatchOver); fasthttp's
// goroutine never wakes. Anything else is declined before a byte is sent,
// and fasthttp serves it as before: a body not all in the read that brought
// the header, chunked or over streamAbove, any Transfer-Encoding, close in
// Connection (in any case) or HTTP/1.0, an Upgrade, an absolute-form URI,
// CONNECT, a target starting with "//", a Host that is not a plain name or
// IPv4 address (plainHost), an unknown host, a service with STICKY or
// REDIRECT_TO_HTTPS or
// no backend, a backend
// without an idle connection used in the last peekAfter, a route index not
// yet built, a draining listener, the rest of a request split across reads.
// fasthttp then also gets whatever follows until it reports the connection
// idle again: a body must never be taken for a request. An answer this
// path cannot finish (1xx, a
// body not all there or over streamAbove, chunked, an error, a timeout)
// goes back to fasthttp's goroutine with the request's bytes
// (ExchangeFallback), and serve reads it from the connection the request
// went out on (resume), with the usual retries, errors and streaming.
//
// The bytes on the wire are the ones fasthttp's path sends: the same header
// rewrite both ways (rewriteHeader, rewriteResponse), and the answer
// serialised as fasthttp's Response.Write would.

// exchanger serves one client connection's requests in the poller.
type exchanger struct {
	p  *Proxy
	hp *httpPort
	lr *listenRun // the run of hp's listener that accepted c
	c  *fastconn.Conn

	// The exchange in flight, written by Exchange and read by whoever
	// ends it (the order of the Conn's exchange states orders them).
	rt    *route
	b     *backend
	first int           // b's index in rt.backends
	n     int           // the request's length, for ExchangeFallback
	head  bool          // a HEAD request: the answer has no body
	start time.Duration // fastconn.Mono when the request was read

	// resume is the connection an exchange that fell back sent the
	// request on, for serve; set before ExchangeFallback, taken by the
	// handler on fasthttp's goroutine, or dropped by whoever learns first
	// that nobody will take it (Swap: exactly one of them closes it).
	resume atomic.Pointer[bconn]

	// pickRt and pick are the balancer's choice for a request declined
	// for want of an idle connection, for serve (takePick).
	pickRt *route
	pick   int

	// between is set while the connection is between requests: the next
	// bytes start one. A request this path declines, or gives back, is
	// fasthttp's until fasthttp reports the connection idle again
	// (connIdle): the bytes that follow may be its body, and a body that
	// reads as a request must never be sent as one.
	between atomic.Bool

	// lf follows the header of a request fasthttp reads, for bare LF
	// line ends (lineends.go).
	lf lfScan

	// pushed is when the read deadline was last pushed forward.
	pushed time.Duration
	// rest is the part of an answer the client's socket did not take.
	rest []byte
}

// exchangeScratch is what parsing one request or answer needs; the
// exchanges in flight on different Ps take one each from a sync.Pool.
type exchangeScratch struct {
	rd  bytes.Reader
	br  *bufio.Reader
	req fasthttp.RequestHeader
	out []byte
	xff [256]byte
}

var scratchPool = sync.Pool{New: func() any {
	s := &exchangeScratch{}
	s.br = bufio.NewReaderSize(&s.rd, backendReadBuf)
	s.req.DisableNormalizing()
	return s
}}

func (s *exchangeScratch) reader(b []byte) *bufio.Reader {
	s.rd.Reset(b)
	s.br.Reset(&s.rd)
	return s.br
}

// exchangerOf returns the exchanger of ctx's connection, if it has one.
func exchangerOf(ctx *fasthttp.RequestCtx) *exchanger { return connExchanger(ctx.Conn()) }

// connExchanger returns the exchanger of c, if it has one.
func connExchanger(c net.Conn) *exchanger {
	if fc, ok := c.(*fastconn.Conn); ok {
		x, _ := fc.Exchanger().(*exchanger)
		return x
	}
	return nil
}

// Exchange is fastconn.Exchanger's: it takes b, one read of the client, if
// it starts a request (the connection is between requests) and is one
// whole request this path serves, and sends it.
func (x *exchanger) Exchange(c *fastconn.Conn, b []byte) bool {
	if !x.between.Load() {
		// The rest of a request fasthttp is reading: its body, or more of
		// its header.
		return x.fixLF(c, b)
	}
	if x.take(c, b) {
		return true
	}
	// fasthttp reads this request, and its body if it has one, until it
	// is done with it (connIdle).
	x.between.Store(false)
	x.lf.start(cap(b) == x.p.cfg.MaxHeaderBytes)
	return x.fixLF(c, b)
}

// fixLF gives the bare LF line ends of the header fasthttp reads a CR
// (lineends.go), and hands fasthttp the bytes so rewritten; it reports
// whether it did (fasthttp gets b as it was otherwise).
func (x *exchanger) fixLF(c *fastconn.Conn, b []byte) bool {
	n, fixed := x.lf.fix(b)
	if !fixed {
		return false
	}
	// Taken, and given back at once with its new length: the Read that
	// waits gets them as if it had read them so. If the Read stopped
	// waiting meanwhile, its bytes are lost either way.
	c.ExchangeFallback(n)
	return true
}

// take sends b, a whole request, if this path serves it.
func (x *exchanger) take(c *fastconn.Conn, b []byte) bool {
	p := x.p
	x.pickRt = nil // a choice the last declined request did not take
	// fasthttp reads into the free tail of its buffer: a read into less
	// than the whole buffer continues bytes fasthttp holds already (a
	// request split across reads, or pipelined ones), which only it can
	// parse. The next request starts at an empty buffer. Nor is a read
	// that mentions "close" (Connection: close, one request on the
	// connection) worth parsing twice.
	if cap(b) != p.cfg.MaxHeaderBytes || bytes.Contains(b, lose) || bytes.Contains(b, loseUpper) {
		return false
	}
	// Counted before draining is checked: a drain that sets draining and
	// then reads the count either waits for this exchange or makes it
	// decline.
	x.lr.exchanges.Add(1)
	taken := false
	defer func() {
		if !taken {
			x.lr.exchanges.Add(-1)
		}
	}()
	if x.lr.draining.Load() {
		return false
	}
	idx := p.idx.Load()
	if idx == nil || idx.version < p.table.Snapshot().Version() {
		return false // the index is built on fasthttp's path, not here
	}
	s := scratchPool.Get().(*exchangeScratch)
	defer scratchPool.Put(s)
	h := &s.req
	br := s.reader(b)
	if err := h.Read(br); err != nil {
		return false // not a whole request header
	}
	// A body comes whole in this read, with nothing behind it (not the
	// next request): its length, up to what fasthttp's path holds in
	// memory, and within the limit. Chunked bodies (-1) are fasthttp's.
	body := br.Buffered()
	switch cl := h.ContentLength(); {
	case cl == -2 && body == 0 && (h.IsGet() || h.IsHead()):
		// No body. Other methods without a length go fasthttp's way,
		// whose Request.Write gives them "Content-Length: 0": the backend
		// must get the same bytes on either path.
	case cl >= 0 && cl == body && cl <= streamAbove && (p.cfg.MaxRequestBodySize == 0 || int64(cl) <= p.cfg.MaxRequestBodySize):
	default:
		return false
	}
	if h.IsConnect() || h.ConnectionClose() || !h.IsHTTP11() || len(h.Peek("Expect")) > 0 {
		return false
	}
	// Chunked bodies are fasthttp's (above); so is any other
	// Transfer-Encoding, which fasthttp reads as no body at all, for
	// precheck to refuse (ambiguousLength), and a close that a later
	// Connection field hid from h (asksClose).
	if f := rawFraming(h.RawHeaders()); f.te || f.close {
		return false
	}
	uri := h.RequestURI()
	// fasthttp's path reads a target that starts with "//" as a host and
	// a path, and refuses a bad host there as it refuses a bad Host: both
	// go its way (plainHost).
	if len(uri) == 0 || uri[0] != '/' || len(uri) > 1 && uri[1] == '/' || !plainHost(h.Host()) {
		return false
	}
	var rt *route
	if x.hp.vhost {
		rt, _ = idx.lookupHost(h.Host(), pathOfURI(uri))
	} else {
		rt = idx.byPort[x.hp.port]
	}
	if rt == nil || rt.svc.Sticky || rt.svc.RedirectToHTTPS || len(rt.backends) == 0 {
		return false
	}
	// A close in Connection the quick look for "lose" missed (cLoSe):
	// fasthttp's path answers it, and then closes.
	if info := p.rewriteHeader(h, c.RemoteAddr(), c.LocalAddr(), s.xff[:]); info.upgrade || info.close {
		return false
	}
	h.SetNoDefaultContentType(true)
	first := rt.pick(c.RemoteAddr())
	bk := rt.backends[first]
	now := fastconn.Mono()
	bc := bk.getIdle(now)
	if bc == nil {
		// fasthttp's path dials; the balancer's choice goes with the
		// request, or a choice made twice would skip backends.
		x.pickRt, x.pick = rt, first
		return false
	}
	bk.inflight.Add(1)
	req := h.Header()
	if body > 0 {
		// One write, as fasthttp's path flushes header and body at once.
		s.out = append(append(s.out[:0], req...), b[len(b)-body:]...)
		req = s.out
	}
	if sent, err := bc.nc.WriteNow(req); err != nil || sent < len(req) {
		// A pooled connection the backend closed (a task that died), or
		// one whose buffer is full: nothing the backend can read as a
		// request went out whole. fasthttp's path sends it again, to a
		// fresh connection or another backend.
		bk.inflight.Add(-1)
		bc.close()
		if err != nil {
			bk.dropIdle()
		}
		return false
	}
	taken = true
	x.rt, x.b, x.first, x.n, x.head, x.start = rt, bk, first, len(b), h.IsHead(), now
	rt.st.active.Add(1)
	x.pushDeadline(now)
	bc.armDeadline(time.Now())
	bc.x = x
	if err := bc.nc.WatchReply(bc); err != nil {
		bc.WatchOver(err)
	}
	return true
}

// plainHost reports whether host is a name or an IPv4 address, with a
// port or not: a Host fasthttp's path accepts as it is. fasthttp refuses
// a Host that is no URI's host (a '#', '/', '?', '\\', a space, a stray
// bracket, two ports) with a 400 before the handler runs, and the poller
// must not send what fasthttp's path refuses: a Host such as
// "evil.example#.shop.test", which a *.shop.test service's backend,
// building links from it, turns into links to evil.example. Anything else
// (an IPv6 literal, sub-delims, percent-encoding) goes fasthttp's way,
// which checks it.
func plainHost(host []byte) bool {
	i := 0
	for ; i < len(host); i++ {
		c := host[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_') {
			break
		}
	}
	if i == 0 {
		return false
	}
	if i == len(host) {
		return true
	}
	if host[i] != ':' {
		return false
	}
	for _, c := range host[i+1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// pushDeadline moves the client's read deadline, which fasthttp set for
// the request it waits for, to the idle timeout and an eighth from now:
// while the poller serves the connection, fasthttp sees no request, and
// would close a busy connection as idle. Pushed when an eighth of the
// timeout passed since the last push, so most requests touch no timer,
// and an idle connection closes between one and one and an eighth idle
// timeouts after its last request, never before.
func (x *exchanger) pushDeadline(now time.Duration) {
	idle := x.p.cfg.ClientIdleTimeout
	if idle <= 0 || now-x.pushed < idle/8 {
		return
	}
	x.pushed = now
	_ = x.c.SetReadDeadline(time.Now().Add(idle + idle/8)) // never early
}

// Readable is fastconn.ReadWatcher's, in the poller: the watch for an
// answer ends once its header is all in the buffer, or the connection
// failed, or the buffer is full.
func (c *bconn) Readable() bool {
	c.src.nowait = true
	defer func() { c.src.nowait = false }()
	for {
		if n := c.br.Buffered(); n > 0 {
			buf, _ := c.br.Peek(n)
			// The empty line that ends a header: after a CRLF, or a bare
			// LF (lineends.go), which answer leaves to receive.
			if bytes.Contains(buf, lfcrlf) || bytes.Contains(buf, lflf) || n == c.br.Size() {
				return true
			}
		}
		if _, err := c.br.Peek(c.br.Buffered() + 1); err != nil {
			return err != fastconn.ErrWouldBlock
		}
	}
}

// ReadRoom is fastconn.ReadAheadWatcher's: Readable's first read is the
// fill of Peek, into the room the buffer has once what it holds slid to
// its front, as bufio's fill does.
func (c *bconn) ReadRoom() int { return c.br.Size() - c.br.Buffered() }

var (
	lose      = []byte("lose")
	loseUpper = []byte("LOSE")
	lfcrlf    = []byte("\n\r\n")
	lflf      = []byte("\n\n")
)

// WatchOver is fastconn.ReadWatcher's: the answer's header is in, or the
// watch failed.
func (c *bconn) WatchOver(err error) {
	x := c.x
	c.x = nil
	if err == nil && x.answer(c) {
		return
	}
	x.fallBack(c)
}

// answer writes the answer whose header c holds to the client, if it is
// one this path finishes, and ends the exchange.
func (x *exchanger) answer(c *bconn) bool {
	n := c.br.Buffered()
	buf, _ := c.br.Peek(n)
	s := scratchPool.Get().(*exchangeScratch)
	defer scratchPool.Put(s)
	rh := &c.rh
	br := s.reader(buf)
	if err := rh.Read(br); err != nil {
		return false
	}
	hl := n - br.Buffered()
	status := rh.StatusCode()
	if status < 200 {
		return false
	}
	skip := x.head || status == fasthttp.StatusNoContent || status == fasthttp.StatusNotModified
	body := 0
	if !skip {
		cl := rh.ContentLength()
		if cl < 0 || cl > streamAbove || hl+cl > n {
			return false
		}
		body = cl
	}
	keep := !rewriteResponse(rh)
	if !skip {
		rh.SetContentLength(body) // as fasthttp's Response.Write does
	}
	out := rh.AppendBytes(s.out[:0])
	out = append(out, buf[hl:hl+body]...)
	s.out = out[:0]
	_, _ = c.br.Discard(hl + body)

	// The backend connection goes back before the answer goes out: the
	// client's next request may come at once, on another P's poller.
	p, b, st := x.p, x.b, x.rt.st
	if skip {
		p.releaseBodiless(c, keep, x.head)
	} else {
		p.release(c, keep)
	}
	b.inflight.Add(-1)
	st.active.Add(-1)
	now := fastconn.Mono()
	st.observe(status, now-x.start)
	if rep := p.cfg.Report; rep != nil {
		p.report(rep, b, okAnswer, status, nil)
	}
	p.totals.inPoller.Add(1)
	sent, werr := x.c.WriteNow(out)
	if werr == nil && sent < len(out) {
		// The client's socket is full: the rest goes out from a
		// goroutine, and the connection's next request waits for it.
		x.rest = append([]byte(nil), out[sent:]...)
		if h := testHookWriteRest.Load(); h != nil {
			(*h)()
		}
		go x.writeRest()
		return true
	}
	x.lr.exchanges.Add(-1)
	x.pushDeadline(now)
	x.c.ExchangeDone()
	return true
}

// testHookWriteRest, if set, runs when an answer's rest goes to
// writeRest: only a test sets it.
var testHookWriteRest atomic.Pointer[func()]

// writeRest writes what the client's socket did not take of an answer,
// within the body timeout, and ends the exchange.
func (x *exchanger) writeRest() {
	_ = x.c.SetWriteDeadline(time.Now().Add(x.p.cfg.BodyTimeout))
	_, err := x.c.Write(x.rest)
	x.rest = nil // a stalled client is rare: keep no buffer for it
	if err != nil {
		_ = x.c.Close()
	}
	x.lr.exchanges.Add(-1)
	x.c.ExchangeDone()
}

// fallBack hands an exchange whose answer this path does not finish to
// fasthttp's goroutine: the request's bytes go back to it, and serve reads
// the answer from c (resume).
func (x *exchanger) fallBack(c *bconn) {
	x.between.Store(false)
	x.rt.st.active.Add(-1)
	x.lr.exchanges.Add(-1)
	x.resume.Store(c)
	if !x.c.ExchangeFallback(x.n) {
		// The client's reader is gone (its deadline, Close): nobody will
		// take the answer.
		x.dropResume()
	}
}

// connIdle is fasthttp's report that it is done with c's request and
// waits for the next: the poller may take the next one.
func connIdle(c net.Conn) {
	if x := connExchanger(c); x != nil {
		x.dropResume()
		x.between.Store(true)
	}
}

// takeResume returns the connection a fallen-back exchange sent ctx's
// request on, the route and backend index it was sent for, and when the
// poller read the request (fastconn.Mono).
func takeResume(ctx *fasthttp.RequestCtx) (*bconn, *route, int, time.Duration) {
	x := exchangerOf(ctx)
	if x == nil {
		return nil, nil, 0, 0
	}
	c := x.resume.Swap(nil)
	if c == nil {
		return nil, nil, 0, 0
	}
	return c, x.rt, x.first, x.start
}

// dropResume closes the backend connection of an exchange that fell back
// when fasthttp will not hand its request to the handler (it refused to
// parse it, or the connection ended first): the answer has nobody to go to,
// and the connection and its count in the backend's inflight would leak.
func dropResume(c net.Conn) {
	if x := connExchanger(c); x != nil {
		x.dropResume()
	}
}

// dropResume closes the connection an exchange that fell back sent its
// request on, unless the handler took it.
func (x *exchanger) dropResume() {
	if bc := x.resume.Swap(nil); bc != nil {
		bc.close()
		bc.b.inflight.Add(-1)
	}
}

// takePick returns the backend index the poller's balancer chose for ctx's
// request on r before it declined it, or -1.
func takePick(ctx *fasthttp.RequestCtx, r *route) int {
	x := exchangerOf(ctx)
	if x == nil || x.pickRt == nil {
		return -1
	}
	rt := x.pickRt
	x.pickRt = nil
	if rt != r {
		return -1 // the routes changed since
	}
	return x.pick
}
