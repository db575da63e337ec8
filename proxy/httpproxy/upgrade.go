package httpproxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
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
	switched, err := p.upgradeAnswer(ctx, br)
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
		backend.Close()
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
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(client net.Conn) {
		p.tunnel(client, raw, backend, head)
		st.active.Add(-1)
		p.connClosed(raw)
	})
	return true
}

// upgradeAnswer reads the backend's answer to an upgrade request from br.
// On a 101 it consumes nothing and reports true: the answer goes to the
// client untouched. Otherwise it reads the answer (after any interim 1xx)
// into ctx.Response.
func (p *Proxy) upgradeAnswer(ctx *fasthttp.RequestCtx, br *bufio.Reader) (bool, error) {
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
	if status != fasthttp.StatusNoContent && status != fasthttp.StatusNotModified {
		if err := resp.ReadBody(br, streamAbove); err != nil {
			return false, err
		}
	}
	rewriteResponse(&resp.Header)
	return false, nil
}

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
// directly so that the backend-to-client direction is spliced.
func (p *Proxy) tunnel(client, raw net.Conn, backend *net.TCPConn, head []byte) {
	if !p.trackTunnel(client, backend, true) {
		client.Close()
		backend.Close()
		return
	}
	defer p.trackTunnel(client, backend, false)
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
