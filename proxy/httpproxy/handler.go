package httpproxy

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/health"
	"github.com/pacer-lb/pacer/internal/fastconn"
)

const (
	// streamAbove: request bodies up to this size are read in full before
	// the handler runs (fasthttp's MaxRequestBodySize with
	// StreamRequestBody), and such a body can be replayed on a retry;
	// larger ones stream. Response bodies up to it are copied, larger ones
	// stream.
	streamAbove = 64 << 10
	// copyBuf is the buffer size for streaming request bodies.
	copyBuf = 32 << 10
)

var copyPool = fastconn.NewPool(copyBuf)

// outcome classifies a failed attempt.
type outcome uint8

const (
	okAnswer   outcome = iota
	failDial           // nothing sent: any request may go elsewhere
	failConn           // the connection broke before any response byte
	failTime           // connect or response header timed out: 504
	failBad            // anything else: 502
	failClient         // the client's body broke or was too large: no answer to send
)

// serveVHost is the handler of the --http listener.
func (p *Proxy) serveVHost(ctx *fasthttp.RequestCtx) {
	if p.resume(ctx) {
		return
	}
	if !p.precheck(ctx) {
		return
	}
	idx := p.routes()
	host := ctx.Request.Header.Host()
	uri := ctx.Request.Header.RequestURI()
	absolute := isAbsolute(uri)
	if absolute {
		host = ctx.Request.URI().Host()
	}
	r, known := idx.lookupHost(host, pathOf(ctx, uri, absolute))
	if r == nil {
		if absolute && !known {
			p.refuse(ctx, fasthttp.StatusForbidden, "pacer is not a forward proxy: it does not serve this host\n")
			return
		}
		p.totals.notFound.Add(1)
		p.plain(ctx, fasthttp.StatusNotFound, "pacer: no service for this host and path\n")
		return
	}
	if absolute {
		toOriginForm(ctx)
	}
	p.serve(ctx, r)
}

// servePort returns the handler of one run of a service port's listener.
func (p *Proxy) servePort(lr *listenRun) fasthttp.RequestHandler {
	hp := lr.hp
	return func(ctx *fasthttp.RequestCtx) {
		if p.resume(ctx) {
			return
		}
		if !p.precheck(ctx) {
			return
		}
		r := p.routes().byPort[hp.port]
		if r == nil {
			hp.failed.Add(1)
			p.plain(ctx, fasthttp.StatusServiceUnavailable, "pacer: no service on this port any more\n")
			// The listener closes, or has closed: a client that kept the
			// connection would be held to it, and to its draining server,
			// for good.
			ctx.SetConnectionClose()
			return
		}
		if uri := ctx.Request.Header.RequestURI(); isAbsolute(uri) {
			// Absolute form only for a host the service serves: pacer is not
			// an open proxy.
			var buf [maxHost]byte
			h, ok := normalizeHost(buf[:0], ctx.Request.URI().Host())
			if !ok || !servesHost(r, h) {
				p.refuse(ctx, fasthttp.StatusForbidden, "pacer is not a forward proxy: it does not serve this host\n")
				return
			}
			toOriginForm(ctx)
		}
		p.serve(ctx, r)
	}
}

// resume serves a request the poller sent already and gave back with its
// answer unread (exchange.go), on the route it was sent for; it reports
// whether ctx's request was one.
func (p *Proxy) resume(ctx *fasthttp.RequestCtx) bool {
	c, r, first, start := takeResume(ctx)
	if c == nil {
		return false
	}
	p.serveFrom(ctx, r, c, first, start)
	return true
}

// precheck refuses CONNECT, bodies over the limit and bodies of ambiguous
// length; it reports whether the request goes on.
func (p *Proxy) precheck(ctx *fasthttp.RequestCtx) bool {
	if ambiguousLength(&ctx.Request.Header) {
		// The body may hold what another parser reads as a request: the
		// connection cannot be trusted past it.
		p.plain(ctx, fasthttp.StatusBadRequest, "pacer: malformed request: ambiguous body length\n")
		ctx.SetConnectionClose()
		return false
	}
	if ctx.Request.Header.IsConnect() {
		p.refuse(ctx, fasthttp.StatusMethodNotAllowed, "pacer is not a forward proxy: CONNECT is not allowed\n")
		return false
	}
	if max := p.cfg.MaxRequestBodySize; max > 0 && int64(ctx.Request.Header.ContentLength()) > max {
		p.plain(ctx, fasthttp.StatusRequestEntityTooLarge, "pacer: request body too large\n")
		ctx.SetConnectionClose() // the body was not read
		return false
	}
	return true
}

func (p *Proxy) refuse(ctx *fasthttp.RequestCtx, status int, msg string) {
	p.totals.refused.Add(1)
	p.plain(ctx, status, msg)
	ctx.SetConnectionClose()
}

// serve proxies one request to r's service.
func (p *Proxy) serve(ctx *fasthttp.RequestCtx, r *route) { p.serveFrom(ctx, r, nil, 0, 0) }

// serveFrom is serve, for a request that sent is nil for, or that was sent
// already on sent, a connection to r.backends[first], whose answer it then
// reads first.
//
// start is when the poller read a request it sent (fastconn.Mono), or 0:
// the request's latency runs from there, not from fasthttp's hand-over.
func (p *Proxy) serveFrom(ctx *fasthttp.RequestCtx, r *route, sent *bconn, first int, start time.Duration) {
	st := r.st
	st.active.Add(1)
	streamed := false
	// Read before rewriteRequest drops the hop-by-hop headers; fasthttp
	// read it too, before the handler, and closes after the answer.
	closing := ctx.Request.Header.ConnectionClose()
	// The backend gets HTTP/1.1 whatever the client speaks (rewriteRequest);
	// fasthttp reads the client's version after the handler, to answer an
	// HTTP/1.0 client's keep-alive in kind, so it gets it back.
	http10 := !ctx.Request.Header.IsHTTP11()
	defer func() {
		if http10 {
			ctx.Request.Header.SetProtocolBytes(http10Proto)
		}
		if !streamed {
			st.active.Add(-1)
			if closing {
				lastAnswer(ctx)
			}
		}
		if start != 0 {
			st.observe(ctx.Response.StatusCode(), fastconn.Mono()-start)
		} else {
			st.observe(ctx.Response.StatusCode(), time.Since(ctx.Time()))
		}
	}()

	var xffBuf [256]byte
	info := p.rewriteRequest(ctx, xffBuf[:])
	if r.svc.RedirectToHTTPS && !info.https {
		p.redirectHTTPS(ctx)
		return
	}
	n := len(r.backends)
	if n == 0 {
		p.noBackend(ctx, r)
		return
	}
	if info.upgrade {
		streamed = p.upgrade(ctx, r)
		return
	}

	if sent == nil {
		first = stickyPick(ctx, r, p.cfg.StickyCookie)
	}
	if first < 0 {
		first = takePick(ctx, r)
	}
	if first < 0 {
		first = r.pick(ctx.RemoteAddr())
	}

	// What a retry may do: a connect failure sent nothing, so any request
	// goes on to the next backend (up to three); a connection that broke
	// before any response byte is retried on the next backend too, but only
	// for an idempotent request whose body (if any) is held in memory. Two
	// tasks that died together without a word can sit side by side in the
	// rotation, so two broken connections in a row must not end a GET.
	cl := ctx.Request.Header.ContentLength()
	var body []byte
	replayable := cl == 0 || cl == -2
	if cl > 0 && cl <= streamAbove {
		body = ctx.Request.Body()
		if len(body) != cl {
			// Body hides the read's error: the client closed or stalled
			// before it sent what it announced. Forwarded, the backend
			// would wait for the rest, and the pooled connection would
			// fall out of step.
			ctx.SetConnectionClose()
			ctx.SetStatusCode(fasthttp.StatusBadRequest)
			return
		}
		replayable = true
	}
	idempotent := isIdempotent(&ctx.Request.Header)
	ctx.Request.Header.SetNoDefaultContentType(true)

	var (
		err error
		out outcome
		b   *backend
	)
	for attempt := 0; attempt < min(3, max(n, 2)); attempt++ {
		b = r.backends[(first+attempt)%n]
		if attempt > 0 {
			st.retries.Add(1)
		}
		// The first attempt starts when the request did (fasthttp read the
		// clock just before the handler): a time.Now is two vDSO calls, and
		// the pool and deadline checks made two of them per request
		// (bench/RESULTS.md).
		now := ctx.Time()
		if attempt > 0 {
			now = time.Now()
		}
		if sent != nil {
			out, streamed, err = p.receive(ctx, r, sent, http10)
			sent = nil
		} else {
			out, streamed, err = p.roundTrip(ctx, r, b, cl, body, now, http10)
		}
		if rep := p.cfg.Report; rep != nil {
			p.report(rep, b, out, ctx.Response.StatusCode(), err)
		}
		if out == okAnswer || out == failClient {
			break
		}
		if ce := p.log.Check(zap.DebugLevel, "backend attempt failed"); ce != nil {
			ce.Write(zap.String("app", r.svc.Key.App), zap.Stringer("backend", b.addr), zap.Int("attempt", attempt+1), zap.Error(err))
		}
		if out == failConn {
			b.dropIdle()
			if !idempotent || !replayable {
				break
			}
			continue
		}
		if out != failDial {
			break
		}
	}
	switch out {
	case okAnswer:
		if r.svc.Sticky {
			p.setSticky(ctx, b)
		}
	case failClient:
		ctx.Response.Reset()
		ctx.SetConnectionClose()
		if errors.Is(err, errBodyTooLarge) {
			p.plain(ctx, fasthttp.StatusRequestEntityTooLarge, "pacer: request body too large\n")
		} else {
			ctx.SetStatusCode(fasthttp.StatusBadRequest)
		}
	case failTime:
		p.failure(ctx, r, fasthttp.StatusGatewayTimeout, "backend did not answer in time", err)
	case failDial:
		if isTimeout(err) {
			p.failure(ctx, r, fasthttp.StatusGatewayTimeout, "no backend accepted a connection in time", err)
		} else {
			p.failure(ctx, r, fasthttp.StatusBadGateway, "no backend accepted a connection", err)
		}
	default:
		p.failure(ctx, r, fasthttp.StatusBadGateway, "backend failed", err)
	}
}

// stickyPick returns the index of the backend ctx's sticky cookie pins it
// to on r, or -1.
func stickyPick(ctx *fasthttp.RequestCtx, r *route, cookie string) int {
	if !r.svc.Sticky {
		return -1
	}
	if v := ctx.Request.Header.Cookie(cookie); len(v) > 0 {
		for i, b := range r.backends {
			if string(v) == b.sticky {
				return i
			}
		}
	}
	return -1
}

// untilClose sends an answer of unknown length, whose body c reads, to an
// HTTP/1.0 client, which cannot read chunks (fasthttp streams such a body
// chunked): the body as it comes, ended by the connection's end.
func (p *Proxy) untilClose(ctx *fasthttp.RequestCtx, c *bconn) {
	h := &ctx.Response.Header
	h.SetContentLength(-2) // neither a length nor chunks; Connection: close
	head := append([]byte(nil), h.Header()...)
	raw := ctx.Conn()
	if fc, ok := raw.(*fastconn.Conn); ok {
		fc.SetExchanger(nil)
	}
	p.hijack(ctx, raw, func(net.Conn) {
		if _, err := raw.Write(head); err == nil {
			_, _ = io.Copy(raw, c)
		}
		c.Close()
		raw.Close()
		p.connClosed(raw)
	}, func() { c.Close() })
}

// lastAnswer lets the answer to a client that asked for the connection to
// be closed leave with the FIN (fastconn.Conn.LastWrites): fasthttp writes
// it and closes at once. Only for an answer held whole in memory, which
// fasthttp writes without waiting on anything else.
func lastAnswer(ctx *fasthttp.RequestCtx) {
	if c, ok := ctx.Conn().(*fastconn.Conn); ok {
		c.LastWrites()
	}
}

// report tells rep the outcome of one attempt on b, which ended in err. A
// connect that failed for want of this host's own descriptors or ports
// (health.LocalShortage) is no fault of b's and is not reported: passive
// health checking would eject healthy backends, and take them out of DNS,
// whenever pacer ran short.
func (p *Proxy) report(rep func(netip.AddrPort, health.Outcome), b *backend, out outcome, status int, err error) {
	switch out {
	case okAnswer:
		if status >= 500 {
			rep(b.addr, health.ServerError)
		} else {
			rep(b.addr, health.Success)
		}
	case failDial:
		if !health.LocalShortage(err) {
			rep(b.addr, health.ConnectFailed)
		}
	case failConn, failTime, failBad:
		// Broke, timed out or answered garbage before a response.
		rep(b.addr, health.Reset)
	}
}

// roundTrip sends the request to b over a pooled connection and reads the
// response into ctx.Response; a large or chunked body is left to stream
// (streamed is then true, and the connection's Close ends the request).
func (p *Proxy) roundTrip(ctx *fasthttp.RequestCtx, r *route, b *backend, cl int, body []byte, now time.Time, http10 bool) (out outcome, streamed bool, err error) {
	// Counted from before the connect: a backend that leaves while the
	// request waits for its connection is busy, and rebuild follows it
	// (Proxy.left), so that the answer's drain ends if its address is
	// routed again.
	b.inflight.Add(1)
	c, err := b.get(now)
	if err != nil {
		// A connect that failed or timed out sent nothing: the next
		// backend may take any request.
		b.inflight.Add(-1)
		return failDial, false, err
	}
	if !c.rhSet {
		// The poller's answers (exchange.go) are written from c.rh:
		// with the server's settings (no Date of its own, no default
		// Content-Type), which only a server's header carries.
		ctx.Response.Header.CopyTo(&c.rh)
		c.rhSet = true
	}
	fail := func(o outcome, e error) (outcome, bool, error) {
		c.close()
		b.inflight.Add(-1)
		return o, false, e
	}

	c.armDeadline(now)
	h := &ctx.Request.Header
	if _, err = c.bw.Write(h.Header()); err != nil {
		return fail(failConn, err)
	}
	switch {
	case body != nil:
		_, err = c.bw.Write(body)
	case cl > 0 || cl == -1:
		err = p.copyBody(ctx, c, cl)
		if err != nil {
			if errors.Is(err, errClientBody) || errors.Is(err, errBodyTooLarge) {
				return fail(failClient, err)
			}
			if answeredEarly(c) {
				return p.receiveEarly(ctx, r, c, http10)
			}
			return fail(failBad, err)
		}
		c.deadline = time.Time{} // copyBody moved the write deadline
		c.armDeadline(time.Now())
	}
	if err == nil {
		err = c.flushRequest()
	}
	if err != nil {
		if answeredEarly(c) {
			return p.receiveEarly(ctx, r, c, http10)
		}
		if isTimeout(err) {
			return fail(failTime, err)
		}
		return fail(failConn, err)
	}
	return p.receive(ctx, r, c, http10)
}

// answeredEarly reports whether the backend, whose connection c stopped
// taking the request (a reset, a close, or silence past BodyTimeout), had
// sent something first: the answer of a server that refuses a body before
// it reads it (413, 401, 403, a redirect), then closes, which resets a
// connection the body still comes on. One peek, which does not wait.
func answeredEarly(c *bconn) bool {
	if c.br.Buffered() > 0 {
		return true
	}
	data, _ := c.nc.Pending()
	return data
}

// receiveEarly reads the answer a backend sent before it took the whole
// request (answeredEarly) and has it go to the client, as HAProxy and
// nginx do, rather than a 502 for a request the backend did answer. The
// backend connection closes after it: the rest of the request was never
// sent. So does the client's, when the rest of its body is still unread
// in it.
func (p *Proxy) receiveEarly(ctx *fasthttp.RequestCtx, r *route, c *bconn, http10 bool) (outcome, bool, error) {
	c.halfSent = true
	c.deadline = time.Time{} // copyBody moved the deadlines, and the answer is there
	c.armDeadline(time.Now())
	out, streamed, err := p.receive(ctx, r, c, http10)
	if out == okAnswer {
		closeIfBodyLeft(ctx)
	}
	return out, streamed, err
}

// receive reads the response to the request sent on c (counted in its
// backend's inflight) into ctx.Response; the rest is roundTrip's.
//
// http10 says the client speaks HTTP/1.0, which has no chunks: an answer
// of unknown length then goes to it as it comes, ended by the close.
func (p *Proxy) receive(ctx *fasthttp.RequestCtx, r *route, c *bconn, http10 bool) (out outcome, streamed bool, err error) {
	b := c.b
	defer func() {
		if !streamed {
			b.inflight.Add(-1)
		}
	}()
	fail := func(o outcome, e error) (outcome, bool, error) {
		c.close()
		return o, false, e
	}

	resp := &ctx.Response
	rh := &resp.Header
	for {
		if err = readAnswerHeader(rh, c.br); err != nil {
			switch {
			case err == io.EOF:
				return fail(failConn, errors.New("connection closed before the response"))
			case isTimeout(err):
				return fail(failTime, err)
			}
			// Garbage where an answer should begin, on a connection whose
			// last answer had no body: most likely that body, sent late (the
			// peek before reuse came first). The backend is caught, so that
			// its HEAD connections close from now on.
			b.caught(c.afterBodiless)
			return fail(failBad, err)
		}
		// Interim responses (100 Continue, 103 Early Hints) are dropped;
		// 101 without an upgrade request is nonsense.
		if s := rh.StatusCode(); s >= 200 {
			break
		} else if s == fasthttp.StatusSwitchingProtocols {
			return fail(failBad, errors.New("101 Switching Protocols to a request without Upgrade"))
		}
	}
	c.afterBodiless = false
	keep := !rewriteResponse(rh) && !c.halfSent

	status := rh.StatusCode()
	if head := ctx.Request.Header.IsHead(); head || status == fasthttp.StatusNoContent || status == fasthttp.StatusNotModified {
		resp.SkipBody = true
		p.releaseBodiless(c, keep, head)
		return okAnswer, false, nil
	}
	rcl := rh.ContentLength()
	if rcl >= 0 && rcl <= streamAbove {
		if err = readSmallBody(c, resp, rcl); err != nil {
			resp.Reset()
			return fail(failBad, err)
		}
		p.release(c, keep)
		return okAnswer, false, nil
	}
	c.startBody(rcl, keep, ctx.Conn(), r.st)
	if rcl < 0 && http10 {
		p.untilClose(ctx, c)
		return okAnswer, true, nil
	}
	size := rcl
	if size < 0 {
		size = -1 // to the client: chunked
	}
	resp.SetBodyStream(c, size)
	return okAnswer, true, nil
}

// release ends a request whose body was read in full. The deadlines stay:
// the next request pushes them forward only when they come near (see
// armDeadline), and an idle connection in the pool is not read.
func (p *Proxy) release(c *bconn, keep bool) {
	if keep {
		c.b.put(c)
	} else {
		c.close()
	}
}

// releaseBodiless is release for an answer without a body: to a HEAD, or
// a 204 or 304. Backends that send a body anyway are common, and its
// bytes, coming a moment after the header, would be read as the answer to
// the connection's next request, another client's. The connection is
// pooled, and peeked at before it carries another request however briefly
// it idled (backend.get, getIdle): one syscall on this connection's next
// request, not on every request. A peek can only find bytes that came
// before it: a backend once caught (backend.strays) has its connections
// closed after a HEAD instead, whose answer has the length of the body a
// GET gets, which such backends then send. Closing after every HEAD would
// empty the pool under HEAD-heavy traffic (monitors, revalidation) and
// leave pacer's ephemeral ports in TIME_WAIT.
func (p *Proxy) releaseBodiless(c *bconn, keep, head bool) {
	if head && c.b.strays.Load() {
		c.close()
		return
	}
	c.peekFirst, c.afterBodiless = true, true
	p.release(c, keep)
}

// readSmallBody copies a body of n bytes into resp without allocating.
func readSmallBody(c *bconn, resp *fasthttp.Response, n int) error {
	for n > 0 {
		chunk, err := c.br.Peek(min(n, c.br.Size()))
		if len(chunk) > 0 {
			resp.AppendBody(chunk)
			_, _ = c.br.Discard(len(chunk))
			n -= len(chunk)
		}
		if err != nil && n > 0 {
			if err == io.EOF {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

var (
	errClientBody   = errors.New("client request body")
	errBodyTooLarge = errors.New("request body too large")
)

// copyBody streams a request body that fasthttp did not buffer to the
// backend: cl bytes, or chunked (cl == -1), re-encoding the chunks. Every
// read and write pushes its deadline forward, so only silence longer than
// BodyTimeout ends it.
func (p *Proxy) copyBody(ctx *fasthttp.RequestCtx, c *bconn, cl int) error {
	src := ctx.RequestBodyStream()
	if src == nil {
		return nil
	}
	bp := copyPool.Get()
	defer copyPool.Put(bp)
	buf := *bp
	client := ctx.Conn()
	var total int64
	limit := p.cfg.MaxRequestBodySize
	for {
		d := time.Now().Add(p.cfg.BodyTimeout)
		_ = client.SetReadDeadline(d)
		_ = c.nc.SetWriteDeadline(d)
		want := len(buf) - 16 // room for the chunk framing
		if cl > 0 {
			want = int(min(int64(want), int64(cl)-total))
			if want == 0 {
				return nil
			}
		}
		n, rerr := src.Read(buf[:want])
		if n > 0 {
			total += int64(n)
			if limit > 0 && total > limit {
				return errBodyTooLarge
			}
			var werr error
			if cl == -1 {
				var hb [20]byte
				hdr := strconv.AppendInt(hb[:0], int64(n), 16)
				hdr = append(hdr, '\r', '\n')
				if _, werr = c.bw.Write(hdr); werr == nil {
					if _, werr = c.bw.Write(buf[:n]); werr == nil {
						_, werr = c.bw.WriteString("\r\n")
					}
				}
			} else {
				_, werr = c.bw.Write(buf[:n])
			}
			if werr != nil {
				return werr
			}
		}
		if rerr == io.EOF {
			if cl > 0 && total < int64(cl) {
				return errClientBody
			}
			if cl == -1 {
				_, err := c.bw.WriteString("0\r\n\r\n")
				return err
			}
			return nil
		}
		if rerr != nil {
			if errors.Is(rerr, fasthttp.ErrBodyTooLarge) {
				return errBodyTooLarge
			}
			return errors.Join(errClientBody, rerr)
		}
	}
}

func isIdempotent(h *fasthttp.RequestHeader) bool {
	return h.IsGet() || h.IsHead() || h.IsOptions() || h.IsTrace() || h.IsPut() || h.IsDelete()
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, fasthttp.ErrTimeout) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isAbsolute says whether a request target is in absolute form
// ("http://host/path") rather than origin form ("/path") or "*".
func isAbsolute(uri []byte) bool { return len(uri) > 0 && uri[0] != '/' && uri[0] != '*' }

// pathOf returns the path of the request target, without the query.
func pathOf(ctx *fasthttp.RequestCtx, uri []byte, absolute bool) []byte {
	if absolute {
		return ctx.Request.URI().PathOriginal()
	}
	return pathOfURI(uri)
}

// pathOfURI is the path of an origin-form request target, without the
// query.
func pathOfURI(uri []byte) []byte {
	for i, c := range uri {
		if c == '?' || c == '#' {
			return uri[:i]
		}
	}
	return uri
}

// toOriginForm turns an absolute-form request into origin form, with the
// URI's host as Host (RFC 9112 3.2.2).
func toOriginForm(ctx *fasthttp.RequestCtx) {
	u := ctx.Request.URI()
	u.DisablePathNormalizing = true
	ctx.Request.Header.SetHostBytes(u.Host())
	ctx.Request.Header.SetRequestURIBytes(u.RequestURI())
}

func servesHost(r *route, host []byte) bool {
	for _, vh := range r.svc.VHosts {
		var buf [maxHost]byte
		h, ok := normalizeHost(buf[:0], []byte(vh))
		if !ok {
			continue
		}
		if string(h) == string(host) || (len(h) > 2 && h[0] == '*' && len(host) > len(h)-1 && string(host[len(host)-len(h)+1:]) == string(h[1:])) {
			return true
		}
	}
	return false
}

// setSticky pins the client to b unless its cookie already does. An answer
// that sets the cookie says Cache-Control: private, as HAProxy's "cookie
// insert nocache" (marathon-lb's) does: a shared cache in front must not
// hand one client's pin to every other.
func (p *Proxy) setSticky(ctx *fasthttp.RequestCtx, b *backend) {
	if string(ctx.Request.Header.Cookie(p.cfg.StickyCookie)) == b.sticky {
		return
	}
	ck := fasthttp.AcquireCookie()
	ck.SetKey(p.cfg.StickyCookie)
	ck.SetValue(b.sticky)
	ck.SetPath("/")
	ck.SetHTTPOnly(true)
	ctx.Response.Header.SetCookie(ck)
	fasthttp.ReleaseCookie(ck)
	ctx.Response.Header.Add(fasthttp.HeaderCacheControl, "private")
}

func (p *Proxy) redirectHTTPS(ctx *fasthttp.RequestCtx) {
	var buf [512]byte
	loc := append(buf[:0], "https://"...)
	host := ctx.Request.Header.Host()
	if i := lastColonPort(host); i >= 0 {
		host = host[:i]
	}
	if len(host) == 0 {
		// An HTTP/1.0 request to a service port may come without Host
		// (https:///path is no URL): the address the client reached is
		// the one it knows pacer by.
		host = appendHostIP(nil, ctx.LocalIP())
	}
	loc = append(loc, host...)
	loc = append(loc, ctx.Request.Header.RequestURI()...)
	ctx.Response.Reset()
	ctx.Response.Header.SetBytesKV(hLocation, loc)
	ctx.SetStatusCode(fasthttp.StatusMovedPermanently)
	closeIfBodyLeft(ctx)
}

// appendHostIP appends ip as a URL's host: an IPv6 address in brackets.
func appendHostIP(b []byte, ip net.IP) []byte {
	if ip.To4() == nil && len(ip) == net.IPv6len {
		return append(append(append(b, '['), ip.String()...), ']')
	}
	return append(b, ip.String()...)
}

// lastColonPort returns the index of a ":port" suffix of host, or -1.
func lastColonPort(host []byte) int {
	for i := len(host) - 1; i >= 0; i-- {
		c := host[i]
		if c == ':' {
			return i
		}
		if c < '0' || c > '9' {
			return -1
		}
	}
	return -1
}

// noBackend answers 503 with Retry-After.
func (p *Proxy) noBackend(ctx *fasthttp.RequestCtx, r *route) {
	ctx.Response.Reset()
	ctx.Response.Header.SetBytesKV(hRetry, p.retryAfter)
	p.plain(ctx, fasthttp.StatusServiceUnavailable, "pacer: 503 Service Unavailable: no routable backend for "+r.label+"\n")
	r.st.ownAnswer(fasthttp.StatusServiceUnavailable)
}

// failure answers 502 or 504 naming the service.
func (p *Proxy) failure(ctx *fasthttp.RequestCtx, r *route, status int, what string, err error) {
	ctx.Response.Reset()
	p.plain(ctx, status, "pacer: "+strconv.Itoa(status)+" "+fasthttp.StatusMessage(status)+": "+what+" for "+r.label+"\n")
	r.st.ownAnswer(status)
	if ce := p.log.Check(zap.DebugLevel, "request failed"); ce != nil {
		ce.Write(zap.String("app", r.svc.Key.App), zap.Int("status", status), zap.Error(err))
	}
}

// plain sets a short text/plain answer.
func (p *Proxy) plain(ctx *fasthttp.RequestCtx, status int, msg string) {
	ctx.SetStatusCode(status)
	ctx.Response.Header.SetContentType("text/plain; charset=utf-8")
	ctx.Response.SetBodyString(msg)
	closeIfBodyLeft(ctx)
}

// closeIfBodyLeft has the connection close after pacer's own answer when
// the request's body may still be in it. fasthttp reads up to 8 KiB of a
// body before the handler runs, and leaves the rest of a body the handler
// did not read in the connection, where it would be read as the client's
// next request: a body made of a request would reach a backend unseen.
func closeIfBodyLeft(ctx *fasthttp.RequestCtx) {
	if !ctx.Request.IsBodyStream() { // read whole (Body), or never streamed
		return
	}
	if cl := ctx.Request.Header.ContentLength(); cl != 0 && cl != -2 {
		ctx.SetConnectionClose()
	}
}
