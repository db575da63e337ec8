package httpproxy

import (
	"io"
	"net"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/pacer-lb/pacer/internal/fastconn"
)

// upgrade turns an Upgrade request (WebSocket, h2c, ...) into a TCP tunnel:
// it connects to a backend (trying up to three on connect failures), sends
// the request header, and hands the client connection over to a pair of
// copies that run until either side closes. The backend's 101 (or refusal)
// travels through the tunnel untouched. It reports whether the tunnel took
// over the request's accounting.
func (p *Proxy) upgrade(ctx *fasthttp.RequestCtx, r *route) bool {
	n := len(r.backends)
	first := r.pick(ctx.RemoteAddr())
	var (
		nc  net.Conn
		err error
	)
	for i := range min(3, n) {
		b := r.backends[(first+i)%n]
		if nc, err = p.dialer.Dial("tcp", b.dialTo); err == nil {
			break
		}
		if i > 0 {
			r.st.retries.Add(1)
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
	_ = backend.SetWriteDeadline(time.Now().Add(p.cfg.ResponseHeaderTimeout))
	if _, err := backend.Write(ctx.Request.Header.Header()); err != nil {
		backend.Close()
		p.failure(ctx, r, fasthttp.StatusBadGateway, "backend failed", err)
		return false
	}
	_ = backend.SetWriteDeadline(time.Time{})
	// Counted as 1xx: the status travels through the tunnel unseen.
	ctx.SetStatusCode(fasthttp.StatusSwitchingProtocols)
	st := r.st
	raw := ctx.Conn()
	if fc, ok := raw.(*fastconn.Conn); ok {
		fc.SetExchanger(nil) // the tunnel's bytes are not requests
	}
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(client net.Conn) {
		p.tunnel(client, raw, backend)
		st.active.Add(-1)
		p.connClosed(raw)
	})
	return true
}

// tunnel copies both ways until both directions ended, passing a FIN on, then
// closes both. client is fasthttp's hijacked connection, which reads what
// fasthttp had buffered first; raw is the socket under it, written to
// directly so that the backend-to-client direction is spliced.
func (p *Proxy) tunnel(client, raw net.Conn, backend *net.TCPConn) {
	if !p.trackTunnel(client, backend, true) {
		client.Close()
		backend.Close()
		return
	}
	defer p.trackTunnel(client, backend, false)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := io.Copy(raw, backend)
		closeWrite(raw)
		if err != nil {
			raw.Close()
		}
	}()
	_, err := io.Copy(backend, client)
	_ = backend.CloseWrite()
	if err != nil {
		backend.Close()
	}
	<-done
	client.Close()
	backend.Close()
	if ce := p.log.Check(zap.DebugLevel, "tunnel closed"); ce != nil {
		ce.Write(zap.Stringer("client", client.RemoteAddr()), zap.Stringer("backend", backend.RemoteAddr()))
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
