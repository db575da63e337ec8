package httpproxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httputil"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/internal/fastconn"
)

// upgrade turns an Upgrade request (WebSocket, h2c, ...) into a TCP tunnel
// once the backend agreed: it connects to a backend (the client's sticky
// one if it has one, trying up to three on connect failures), sends the
// request header, and reads the backend's answer. A 101 goes to the client
// as it came, and the client connection is handed over to a pair of copies
// that run until either side closes. Any other answer is an ordinary one,
// and the client's connection closes after it: were it tunnelled, the
// client's next requests would reach that backend past the proxy's routing
// and header rewrite. It reports whether the tunnel took over the
// request's accounting.
func (p *Proxy) upgrade(ctx *fasthttp.RequestCtx, r *route) (tunnelled bool) {
	// The client asked to leave HTTP: whatever answer it gets instead of
	// a 101 (a refusal, 502, 504) is the connection's last. Set at the
	// end, since reading the backend's answer resets the header.
	defer func() {
		if !tunnelled {
			ctx.SetConnectionClose()
		}
	}()
	n := len(r.backends)
	first := stickyPick(ctx, r, p.cfg.StickyCookie)
	if first < 0 {
		first = r.pick(ctx.RemoteAddr())
	}
	var (
		nc  net.Conn
		b   *backend
		err error
	)
	for i := range min(3, n) {
		if i > 0 {
			r.st.retries.Add(1)
		}
		b = r.backends[(first+i)%n]
		if nc, err = p.dialer.Dial("tcp", b.dialTo); err == nil {
			break
		}
	}
	if err != nil {
		if isTimeout(err) {
			p.failure(ctx, r, fasthttp.StatusGatewayTimeout, "backend did not connect in time", err)
		} else {
			p.failure(ctx, r, fasthttp.StatusBadGateway, "backend refused the upgrade connection", err)
		}
		return false
	}
	backend := nc.(*net.TCPConn)
	_ = backend.SetDeadline(time.Now().Add(p.cfg.ResponseHeaderTimeout))
	if _, err := backend.Write(ctx.Request.Header.Header()); err != nil {
		backend.Close()
		p.failure(ctx, r, fasthttp.StatusBadGateway, "backend failed", err)
		return false
	}
	br := bufio.NewReaderSize(backend, backendReadBuf)
	switched, err := p.upgradeAnswer(ctx, br, backend)
	if err != nil {
		backend.Close()
		ctx.Response.Reset()
		if isTimeout(err) {
			p.failure(ctx, r, fasthttp.StatusGatewayTimeout, "backend did not answer the upgrade in time", err)
		} else {
			p.failure(ctx, r, fasthttp.StatusBadGateway, "backend answered the upgrade with garbage", err)
		}
		return false
	}
	if !switched {
		if !ctx.Response.IsBodyStream() { // else the body's Close closes it
			backend.Close()
		}
		if r.svc.Sticky {
			p.setSticky(ctx, b)
		}
		return false
	}
	_ = backend.SetDeadline(time.Time{})
	// The 101 and whatever came behind it go to the client as they came;
	// counted as 1xx.
	head, _ := br.Peek(br.Buffered())
	head = append([]byte(nil), head...)
	ctx.SetStatusCode(fasthttp.StatusSwitchingProtocols)
	st := r.st
	raw := ctx.Conn()
	if fc, ok := raw.(*fastconn.Conn); ok {
		fc.SetExchanger(nil) // the tunnel's bytes are not requests
	}
	addr := b.addr
	p.hijack(ctx, raw, func(client net.Conn) {
		p.tunnel(client, raw, backend, addr, head)
		st.active.Add(-1)
		p.connClosed(raw)
	}, func() {
		backend.Close()
		st.active.Add(-1)
	})
	return true
}

// upgradeAnswer reads the backend's answer to an upgrade request from br,
// which reads backend. On a 101 it consumes nothing and reports true: the
// answer goes to the client untouched. Otherwise it reads the answer (after
// any interim 1xx) into ctx.Response: a body up to streamAbove whole, a
// larger, chunked or until-close one as a stream (refusalBody), which
// closes backend when it ends.
func (p *Proxy) upgradeAnswer(ctx *fasthttp.RequestCtx, br *bufio.Reader, backend *net.TCPConn) (bool, error) {
	resp := &ctx.Response
	for {
		status, err := peekStatus(br)
		if err != nil {
			return false, err
		}
		if status == fasthttp.StatusSwitchingProtocols {
			return true, nil
		}
		if err := resp.Header.Read(br); err != nil {
			return false, err
		}
		if status >= 200 {
			break
		}
	}
	status := resp.Header.StatusCode()
	if status == fasthttp.StatusNoContent || status == fasthttp.StatusNotModified || ctx.Request.Header.IsHead() {
		rewriteResponse(&resp.Header)
		return false, nil
	}
	if cl := resp.Header.ContentLength(); cl >= 0 && cl <= streamAbove {
		if err := resp.ReadBody(br, streamAbove); err != nil {
			return false, err
		}
		rewriteResponse(&resp.Header)
		return false, nil
	}
	// A refusal with a large body: a backend that declines h2c, which
	// Java's HttpClient and curl --http2 ask of a GET, answers it as any
	// GET, a download included. Read whole, it was a 502.
	cl := resp.Header.ContentLength()
	body := &refusalBody{r: br, remain: int64(cl), backend: backend, client: ctx.Conn(), timeout: p.cfg.BodyTimeout}
	if cl == -1 {
		body.r = httputil.NewChunkedReader(br)
	}
	if cl < 0 {
		body.remain = -1
	}
	rewriteResponse(&resp.Header)
	resp.SetBodyStream(body, max(cl, -1)) // chunked to the client unless sized
	return false, nil
}

// refusalBody streams the body of a backend's answer other than 101 to an
// upgrade request, and closes the backend connection, which carries
// nothing after it, when it ends. Every read gives both sides BodyTimeout,
// as bconn.Read does.
type refusalBody struct {
	r       io.Reader
	remain  int64 // bytes left of a sized body; -1 if not sized
	backend *net.TCPConn
	client  net.Conn
	timeout time.Duration
}

func (b *refusalBody) Read(p []byte) (int, error) {
	if b.remain == 0 {
		return 0, io.EOF
	}
	d := time.Now().Add(b.timeout)
	_ = b.backend.SetReadDeadline(d)
	_ = b.client.SetWriteDeadline(d)
	if b.remain > 0 && int64(len(p)) > b.remain {
		p = p[:b.remain]
	}
	n, err := b.r.Read(p)
	if b.remain > 0 {
		b.remain -= int64(n)
		if err == io.EOF && b.remain > 0 {
			err = io.ErrUnexpectedEOF // cut short: the client must see it so
		}
	}
	return n, err
}

func (b *refusalBody) Close() error { return b.backend.Close() }

// peekStatus returns the status code of the answer at the head of br
// without consuming it.
func peekStatus(br *bufio.Reader) (int, error) {
	for {
		b, _ := br.Peek(br.Buffered())
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line := b[:i]
			if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
				return 0, fmt.Errorf("malformed status line %q", line)
			}
			code, err := strconv.Atoi(string(line[9:12]))
			if err != nil || code < 100 {
				return 0, fmt.Errorf("malformed status line %q", line)
			}
			return code, nil
		}
		if len(b) == br.Size() {
			return 0, errors.New("status line longer than the read buffer")
		}
		if _, err := br.Peek(len(b) + 1); err != nil { // reads more
			return 0, err
		}
	}
}

// tunnel writes head, the backend's first bytes, to the client, then copies
// both ways until both directions ended, passing a FIN on, then closes
// both. client is fasthttp's hijacked connection, which reads what
// fasthttp had buffered first; raw is the socket under it, written to
// directly so that the backend-to-client direction is spliced. addr is the
// backend's address, which the tunnel is tracked by (trackTunnel).
func (p *Proxy) tunnel(client, raw net.Conn, backend *net.TCPConn, addr netip.AddrPort, head []byte) {
	t := &tunnelConn{client: client, raw: raw, backend: backend}
	if !p.trackTunnel(t, addr, true) {
		client.Close()
		backend.Close()
		return
	}
	defer p.trackTunnel(t, addr, false)
	idle := p.cfg.TunnelIdleTimeout
	var last atomic.Int64 // fastconn.Mono when bytes last moved either way
	last.Store(int64(fastconn.Mono()))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := raw.Write(head)
		if err == nil {
			err = copyIdle(raw, backend, backend, &last, idle)
		}
		closeWrite(raw)
		if err != nil {
			raw.Close()
			backend.Close() // an idle tunnel ends both ways at once
		}
	}()
	err := copyIdle(backend, client, raw, &last, idle)
	_ = backend.CloseWrite()
	if err != nil {
		backend.Close()
		raw.Close()
	}
	<-done
	client.Close()
	backend.Close()
	if ce := p.log.Check(zap.DebugLevel, "tunnel closed"); ce != nil {
		ce.Write(zap.Stringer("client", client.RemoteAddr()), zap.Stringer("backend", backend.RemoteAddr()))
	}
}

// errTunnelIdle ends a tunnel idle in both directions for TunnelIdleTimeout.
var errTunnelIdle = errors.New("tunnel idle")

// copyIdle copies src to dst (spliced where the net package can) until
// src's EOF (nil) or an error, in windows of a quarter of idle on srcConn's
// read deadline: a window that moved bytes marks last; one that moved
// none ends the copy with errTunnelIdle once neither direction moved for
// idle.
func copyIdle(dst io.Writer, src io.Reader, srcConn net.Conn, last *atomic.Int64, idle time.Duration) error {
	window := max(min(idle/4, 10*time.Second), time.Millisecond)
	for {
		_ = srcConn.SetReadDeadline(time.Now().Add(window))
		n, err := io.Copy(dst, src)
		now := fastconn.Mono()
		if n > 0 {
			last.Store(int64(now))
		}
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, os.ErrDeadlineExceeded):
			return err
		case n == 0 && now-time.Duration(last.Load()) >= idle:
			return errTunnelIdle
		}
	}
}

func closeWrite(c net.Conn) {
	type closeWriter interface{ CloseWrite() error }
	if cw, ok := c.(closeWriter); ok {
		_ = cw.CloseWrite()
		return
	}
	c.Close()
}

// The tunnel tracker: the open tunnels grouped by backend address, so that
// a backend no service routes to any more (it left the table, or its
// service's mode, VHOST or port changed so that this proxy carries it no
// more) drains exactly its own tunnels, as the TCP plane drains its
// connections (proxy/drain.go): each gets DrainTimeout to end on its own,
// then is cut, unless the address is routed again first. A tunnel has no
// request boundary to stop at, and one that carries pings never idles.

// tunnelConn is one open tunnel.
type tunnelConn struct {
	client  net.Conn // fasthttp's hijacked connection
	raw     net.Conn // the socket under it
	backend *net.TCPConn
	drain   *time.Timer // guarded by Proxy.cmu; set while draining
}

// backendTunnels lists the open tunnels to one backend address.
type backendTunnels struct {
	conns map[*tunnelConn]struct{}
	// draining is set while no service routes to the address; its tunnels
	// then run on a DrainTimeout timer.
	draining bool
}

// trackTunnel adds (on) or removes t, a tunnel to addr, so that a drain or
// Shutdown can close it; it reports false when Shutdown already closed
// everything.
func (p *Proxy) trackTunnel(t *tunnelConn, addr netip.AddrPort, on bool) bool {
	p.cmu.Lock()
	defer p.cmu.Unlock()
	if !on {
		t.stopDrain()
		bt := p.tunnels[addr]
		delete(bt.conns, t)
		p.ntunnels--
		if len(bt.conns) == 0 {
			delete(p.tunnels, addr)
		}
		return true
	}
	if p.killed {
		return false
	}
	bt := p.tunnels[addr]
	fresh := bt == nil
	if fresh {
		bt = &backendTunnels{conns: map[*tunnelConn]struct{}{}}
		p.tunnels[addr] = bt
	}
	bt.conns[t] = struct{}{}
	p.ntunnels++
	switch {
	case bt.draining:
		p.startDrain(t)
	case fresh:
		// The backend may have left while the upgrade was under way, and
		// the sweep of that change found no tunnel to it: the newest index
		// says. (A sweep after this one sees t; the index it sweeps for
		// was published before it ran.)
		if idx := p.idx.Load(); idx != nil && !idx.routed[addr] {
			p.setTunnelsDraining(addr, bt, true)
		}
	}
	return true
}

// sweepTunnels compares the open tunnels with routed, the backend
// addresses of a route index just published: tunnels to an address routed
// no more start draining, and those to one routed again stop. Called by
// rebuild, with p.mu held.
func (p *Proxy) sweepTunnels(routed map[netip.AddrPort]bool) {
	p.cmu.Lock()
	defer p.cmu.Unlock()
	for addr, bt := range p.tunnels {
		if gone := !routed[addr]; gone != bt.draining {
			p.setTunnelsDraining(addr, bt, gone)
		}
	}
}

// setTunnelsDraining flips bt's draining state and its tunnels' timers.
// Called with p.cmu held.
func (p *Proxy) setTunnelsDraining(addr netip.AddrPort, bt *backendTunnels, on bool) {
	bt.draining = on
	for t := range bt.conns {
		if on {
			p.startDrain(t)
		} else {
			t.stopDrain()
		}
	}
	if on {
		p.log.Info("backend left; draining its tunnels", zap.Stringer("backend", addr),
			zap.Int("tunnels", len(bt.conns)), zap.Duration("drain_timeout", p.cfg.DrainTimeout))
	} else {
		p.log.Info("backend is back; its tunnels stop draining", zap.Stringer("backend", addr),
			zap.Int("tunnels", len(bt.conns)))
	}
}

// startDrain gives t DrainTimeout to end on its own. Called with p.cmu
// held.
func (p *Proxy) startDrain(t *tunnelConn) {
	if t.drain == nil {
		t.drain = time.AfterFunc(p.cfg.DrainTimeout, t.cut)
	}
}

// stopDrain cancels t's drain timer. Called with Proxy.cmu held.
func (t *tunnelConn) stopDrain() {
	if t.drain != nil {
		t.drain.Stop()
		t.drain = nil
	}
}

// cut ends t at the end of its drain: a reset both ways, not a FIN, as
// the TCP plane cuts its connections, so that neither peer takes a cut
// stream for a complete one. The tunnel's copies then end, and untrack it.
func (t *tunnelConn) cut() {
	if l, ok := t.raw.(interface{ SetLinger(int) error }); ok {
		_ = l.SetLinger(0)
	}
	_ = t.backend.SetLinger(0)
	t.client.Close()
	t.backend.Close()
}
