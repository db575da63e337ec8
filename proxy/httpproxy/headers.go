package httpproxy

import (
	"bytes"
	"net"
	"net/netip"
	"strconv"

	"github.com/valyala/fasthttp"
)

// Header names as pacer writes them. Names a client or backend sent are
// matched case-insensitively and never rewritten (header names are not
// normalised, for speed and fidelity).
var (
	hXFF        = []byte("X-Forwarded-For")
	hXFProto    = []byte("X-Forwarded-Proto")
	hXFHost     = []byte("X-Forwarded-Host")
	hXFPort     = []byte("X-Forwarded-Port")
	hRetry      = []byte("Retry-After")
	hLocation   = []byte("Location")
	valHTTP     = []byte("http")
	commaSpace  = []byte(", ")
	http11      = []byte("HTTP/1.1")
	http10Proto = []byte("HTTP/1.0")
)

// Header classes found by the scans.
const (
	hcOther = iota
	hcHop   // hop-by-hop (RFC 9110 7.6.1, and the obsolete Proxy-Connection): removed
	hcConnection
	hcUpgrade
	hcXFF
	hcXFProto
	hcXFOther // X-Forwarded-Host and -Port: replaced by pacer's (-Port: see rewriteHeader)
	hcTE      // Transfer-Encoding: fasthttp frames bodies itself
	// hcFraming is Content-Length and Host: kept even when Connection names
	// them. RFC 9110 has a proxy remove what Connection names, but a
	// request whose Content-Length went while its body stayed would reach
	// the backend as two requests, the second one the client's, past
	// pacer's routing and X-Forwarded-For (request smuggling); an answer's
	// would leave its body on the pooled connection.
	hcFraming
	// hcClientFwd is X-Real-IP and Forwarded (RFC 7239): what a proxy
	// says of the client, which pacer does not write. A client's own is
	// removed, unless Config.TrustForwardedProto says a proxy in front of
	// pacer sets them: a backend that reads the client's address from
	// X-Real-IP (nginx's realip module), or the scheme and host from
	// Forwarded ahead of X-Forwarded-* (Spring's ForwardedHeaderFilter),
	// would otherwise take a client's word that it came from another
	// address, over https, for another host.
	hcClientFwd
)

// classify sorts a header name into the classes above without allocating.
func classify(k []byte) int {
	switch len(k) {
	case 2:
		if eqFold(k, "te") {
			return hcHop
		}
	case 4:
		if eqFold(k, "host") {
			return hcFraming
		}
	case 6:
		if eqFold(k, "expect") { // fasthttp answered 100-continue already
			return hcHop
		}
	case 7:
		if eqFold(k, "upgrade") {
			return hcUpgrade
		}
		if eqFold(k, "trailer") {
			return hcHop
		}
	case 9:
		if eqFoldName(k, "x-real-ip") || eqFold(k, "forwarded") {
			return hcClientFwd
		}
	case 10:
		if eqFold(k, "connection") {
			return hcConnection
		}
		if eqFold(k, "keep-alive") {
			return hcHop
		}
	case 14:
		if eqFold(k, "content-length") {
			return hcFraming
		}
	case 15:
		if eqFoldName(k, "x-forwarded-for") {
			return hcXFF
		}
	case 16:
		if eqFoldName(k, "x-forwarded-host") || eqFoldName(k, "x-forwarded-port") || eqFold(k, "proxy-connection") {
			if eqFold(k, "proxy-connection") {
				return hcHop
			}
			return hcXFOther
		}
	case 17:
		if eqFoldName(k, "x-forwarded-proto") {
			return hcXFProto
		}
		if eqFold(k, "transfer-encoding") {
			return hcTE
		}
	case 18:
		if eqFold(k, "proxy-authenticate") {
			return hcHop
		}
	case 19:
		if eqFold(k, "proxy-authorization") {
			return hcHop
		}
	}
	return hcOther
}

// eqFold compares an ASCII header name with a lower-case constant.
func eqFold(k []byte, lower string) bool {
	if len(k) != len(lower) {
		return false
	}
	for i := range len(k) {
		c := k[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// eqFoldName is eqFold for the names of the headers pacer sets about the
// client, where an underscore also matches a dash: CGI-style gateways
// (WSGI, Rack, PHP) read both X-Real-IP and X_Real_IP as HTTP_X_REAL_IP,
// so a client's X_Real_IP would pass for pacer's own.
func eqFoldName(k []byte, lower string) bool {
	if len(k) != len(lower) {
		return false
	}
	for i := range len(k) {
		c := k[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		} else if c == '_' {
			c = '-'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// maxDel bounds the headers one scan removes; more (a hostile client) are
// removed by further scans.
const maxDel = 8

// reqInfo is what the request scan learned.
type reqInfo struct {
	upgrade bool // an Upgrade header and "upgrade" in Connection
	https   bool // the request came in over TLS, as far as pacer knows
	close   bool // "close" in Connection, in any case (see asksClose)
}

// rewriteRequest removes hop-by-hop headers (keeping Upgrade and Connection
// on an upgrade request, which the backend must see), and the client's
// X-Real-IP and Forwarded unless a proxy in front is trusted (see
// hcClientFwd), and sets X-Forwarded-For (the client's list with the
// client appended), X-Forwarded-Proto, -Host and -Port. The Host header is
// passed through.
// buf is the caller's scratch space; the function allocates only if the
// client's X-Forwarded-For outgrows it.
func (p *Proxy) rewriteRequest(ctx *fasthttp.RequestCtx, buf []byte) reqInfo {
	return p.rewriteHeader(&ctx.Request.Header, ctx.RemoteAddr(), ctx.LocalAddr(), buf)
}

// rewriteHeader is rewriteRequest for a request header read from the
// client at remote, on pacer's address local.
func (p *Proxy) rewriteHeader(h *fasthttp.RequestHeader, remote, local net.Addr, buf []byte) reqInfo {
	var (
		info              reqInfo
		connUpgr, hasUpgr bool
		xfpBuf            [16]byte
		xfp               []byte
		xfPortBuf         [5]byte
		xfPort            []byte // a trusted proxy's X-Forwarded-Port
		conn              []byte // Connection's tokens when it names headers (rare: allocates)
	)
	xff := buf[:0]
	// Usually one round. Another runs when a round filled del, or when
	// Connection names headers that may precede it.
	for round := 0; ; round++ {
		var del [maxDel][]byte
		nd := 0
		named := false
		for k, v := range h.All() {
			c := classify(k)
			switch c {
			case hcTE, hcFraming: // kept: a chunked body is sent chunked again; see hcFraming
				continue
			case hcOther:
				if len(conn) == 0 || !hasTokenBytes(conn, k) {
					continue
				}
			case hcConnection:
				connUpgr = connUpgr || hasToken(v, "upgrade")
				info.close = info.close || hasToken(v, "close")
				if round == 0 && hasOtherTokens(v) && len(conn) < 4096 {
					conn = append(append(conn, v...), ',')
					named = true
				}
			case hcUpgrade:
				hasUpgr = true
			case hcXFF:
				if round == 0 {
					if len(xff) > 0 {
						xff = append(xff, commaSpace...)
					}
					xff = append(xff, v...)
				}
			case hcXFProto:
				// X_Forwarded_Proto is no proxy's: removed, never trusted.
				if round == 0 && xfp == nil && len(v) <= len(xfpBuf) && bytes.IndexByte(k, '_') < 0 {
					xfp = append(xfpBuf[:0], v...)
				}
			case hcXFOther:
				if round == 0 && xfPort == nil && p.cfg.TrustForwardedProto && eqFold(k, "x-forwarded-port") && isPort(v) {
					xfPort = append(xfPortBuf[:0], v...)
				}
			case hcClientFwd:
				if p.cfg.TrustForwardedProto && bytes.IndexByte(k, '_') < 0 {
					continue
				}
			}
			if nd == maxDel {
				break
			}
			del[nd] = k
			nd++
		}
		if round == 0 {
			// A request with a body is no upgrade: the tunnel would send
			// the backend its header alone, and a backend that declines
			// the upgrade (most decline h2c, which curl --http2 asks of
			// every request) waits for the body until pacer answers 504.
			// Its Upgrade goes as the hop-by-hop header it is, and the
			// request as an ordinary one (RFC 9110 7.8: one may ignore it).
			// Nor is an HTTP/1.0 request one, whose Upgrade RFC 9110 7.8
			// has a server ignore: its client knows no 101.
			info.upgrade = hasUpgr && connUpgr && h.IsHTTP11() && !hasBody(h)
		}
		kept := 0
		for i := range nd {
			c := classify(del[i])
			if info.upgrade && (c == hcConnection || c == hcUpgrade) {
				kept++
				continue
			}
			h.DelBytes(del[i])
		}
		if (nd < maxDel && !named) || nd == kept || round > 64 {
			break
		}
	}

	// The backend connection is pacer's, pooled and HTTP/1.1, whatever the
	// client's: a client's "close" or HTTP/1.0 must not close it.
	if !h.IsHTTP11() {
		h.SetProtocolBytes(http11)
	}
	if h.ConnectionClose() && !info.upgrade {
		h.ResetConnectionClose()
	}

	if len(xff) > 0 {
		xff = append(xff, commaSpace...)
	}
	if a, ok := remote.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(a.IP)
		xff = ip.Unmap().AppendTo(xff)
	}
	h.SetBytesKV(hXFF, xff)
	if p.cfg.TrustForwardedProto && len(xfp) > 0 {
		h.SetBytesKV(hXFProto, xfp)
		info.https = eqFold(xfp, "https")
	} else {
		h.SetBytesKV(hXFProto, valHTTP)
	}
	if host := h.Host(); len(host) > 0 {
		h.SetBytesKV(hXFHost, host)
	}
	switch a, ok := local.(*net.TCPAddr); {
	case p.cfg.TrustForwardedProto && len(xfp) > 0:
		// The client reached the trusted proxy, whose X-Forwarded-Proto
		// goes on: the port it reached is the proxy's to say too. Pacer's
		// own (80) beside the proxy's https had backends that read both
		// (Rack, Spring) build links and redirects to https://host:80/.
		// A proxy that says none leaves none: the scheme's default.
		if len(xfPort) > 0 {
			h.SetBytesKV(hXFPort, xfPort)
		}
	case ok:
		var pb [8]byte
		h.SetBytesKV(hXFPort, strconv.AppendInt(pb[:0], int64(a.Port), 10))
	}
	return info
}

// isPort reports whether v is a port number: one to five digits.
func isPort(v []byte) bool {
	if len(v) == 0 || len(v) > 5 {
		return false
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// hasBody reports whether a request's framing announces a body: a
// Content-Length above 0, or chunked.
func hasBody(h *fasthttp.RequestHeader) bool {
	cl := h.ContentLength()
	return cl > 0 || cl == -1
}

// rewriteResponse removes hop-by-hop headers from a backend's response,
// and those its Connection names (never Content-Length: see hcFraming),
// and has the answer go out in pacer's own version, HTTP/1.1, whatever
// the backend's (RFC 9110 6.2: under an HTTP/1.0 status line, the chunks
// fasthttp sends a body of unknown length in are faulty framing).
//
// It reports whether the backend closes the connection after this
// answer: fasthttp's reading of the header (an exact "close", an HTTP/1.0
// answer without keep-alive, a body that ends with the connection), or a
// close among Connection's options in any case (RFC 9110 7.6.1), which
// fasthttp's byte comparison misses.
func rewriteResponse(h *fasthttp.ResponseHeader) (closes bool) {
	closes = h.ConnectionClose()
	h.ResetConnectionClose()
	if string(h.Protocol()) != string(http11) {
		h.SetProtocol(http11)
	}
	// Connection's tokens when it names headers, copied, since the
	// deletions below reuse its bytes (rare: allocates).
	var conn []byte
	// Usually one round. Another runs when a round filled del, or when
	// Connection names headers that may precede it.
	for round := 0; round <= 64; round++ {
		var del [maxDel][]byte
		nd := 0
		named := false
		for k, v := range h.All() {
			switch classify(k) {
			case hcHop, hcUpgrade, hcTE:
			case hcConnection:
				closes = closes || hasToken(v, "close")
				if round == 0 && hasOtherTokens(v) && len(conn) < 4096 {
					conn = append(append(conn, v...), ',')
					named = true
				}
			case hcOther:
				if len(conn) == 0 || !hasTokenBytes(conn, k) {
					continue
				}
			default:
				continue
			}
			if nd == maxDel {
				break
			}
			del[nd] = k
			nd++
		}
		for i := range nd {
			h.DelBytes(del[i])
		}
		if nd < maxDel && !named {
			break
		}
	}
	return closes
}

// asksClose reports whether a request's Connection lists close: in any
// case, anywhere in the list, in any of its Connection fields (RFC 9110
// 7.6.1). fasthttp closes only after a field that is exactly "close", and
// keeps that one only as a flag, which a later Connection field resets:
// the raw header is the only place that still has it.
func asksClose(h *fasthttp.RequestHeader) bool {
	return h.ConnectionClose() || rawFraming(h.RawHeaders()).close
}

// fixExpect has fasthttp answer a request's Expect as RFC 9110 10.1.1 has
// a server do. fasthttp sends 100 Continue for a field spelt exactly
// "Expect: 100-continue", and for nothing else: not for "expect:" (header
// names are not normalised) nor for "100-Continue" (the expectation is
// case-insensitive), whose client then waits out its own timer before it
// sends the body (curl's: 1 s, on every upload); and it sends it to an
// HTTP/1.0 client too, which knows no 1xx (RFC 9110 15.2 forbids sending
// it one) and takes the 100 for the answer, the real one for garbage after
// it. So an HTTP/1.1 request that expects 100-continue gets fasthttp's
// spelling, and an HTTP/1.0 one loses the field, which a server must
// ignore. Called from HeaderReceived, before fasthttp looks, only when the
// raw header has an Expect (rare). The backend never sees Expect: pacer
// answered it (hcHop).
func fixExpect(h *fasthttp.RequestHeader) {
	var names [maxDel][]byte
	n, cont, exact := 0, false, false
	for k, v := range h.All() {
		if !eqFold(k, "expect") {
			continue
		}
		if n < maxDel {
			names[n] = k
			n++
		}
		if eqFold(v, "100-continue") {
			cont = true
			exact = string(k) == "Expect" && string(v) == "100-continue"
		}
	}
	http11 := h.IsHTTP11()
	if http11 && exact && n == 1 {
		return // as fasthttp wants it
	}
	for i := range n {
		h.DelBytes(names[i])
	}
	if http11 && cont {
		h.Set("Expect", "100-continue")
	}
}

// ambiguousLength reports whether a request's body has no length every
// parser agrees on, which RFC 9112 6.3 has a server answer with 400 and
// close: a Transfer-Encoding with a Content-Length (a request smuggler's
// favourite), or a Transfer-Encoding whose last coding is not chunked.
// fasthttp drops the Content-Length beside chunked, reads identity as no
// coding at all (and so the body as the next request), and refuses other
// codings itself; only the raw header shows what it dropped.
func ambiguousLength(h *fasthttp.RequestHeader) bool {
	f := rawFraming(h.RawHeaders())
	return f.te && (f.cl || h.ContentLength() != -1)
}

// rawFields is what rawFraming found in a request's raw field lines.
type rawFields struct {
	te, cl bool // a Transfer-Encoding, a Content-Length field
	close  bool // close among a Connection field's options
	expect bool // an Expect field, its name in any case
}

// rawFraming reads raw, a request's field lines as they came (fasthttp's
// RawHeaders), for what fasthttp's parsed header may have dropped: the
// framing fields, and a close in Connection. fasthttp refuses a name with
// whitespace before its colon, so a field is found where its name is.
func rawFraming(raw []byte) (f rawFields) {
	const teName, clName, connName, expectName = "transfer-encoding", "content-length", "connection", "expect"
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		switch {
		case len(line) > len(teName) && line[len(teName)] == ':' && eqFold(line[:len(teName)], teName):
			f.te = true
		case len(line) > len(clName) && line[len(clName)] == ':' && eqFold(line[:len(clName)], clName):
			f.cl = true
		case len(line) > len(connName) && line[len(connName)] == ':' && eqFold(line[:len(connName)], connName):
			f.close = f.close || hasToken(bytes.TrimRight(line[len(connName)+1:], "\r"), "close")
		case len(line) > len(expectName) && line[len(expectName)] == ':' && eqFold(line[:len(expectName)], expectName):
			f.expect = true
		}
	}
	return f
}

// hasToken reports whether the comma-separated list v holds tok (lower case),
// case-insensitively.
func hasToken(v []byte, tok string) bool {
	found := false
	eachToken(v, func(t []byte) {
		if eqFold(t, tok) {
			found = true
		}
	})
	return found
}

func hasTokenBytes(v, k []byte) bool {
	found := false
	eachToken(v, func(t []byte) {
		if len(t) == len(k) && eqFoldBytes(t, k) {
			found = true
		}
	})
	return found
}

// hasOtherTokens reports whether Connection lists anything but close,
// keep-alive and upgrade.
func hasOtherTokens(v []byte) bool {
	other := false
	eachToken(v, func(t []byte) {
		if !eqFold(t, "close") && !eqFold(t, "keep-alive") && !eqFold(t, "upgrade") {
			other = true
		}
	})
	return other
}

func eachToken(v []byte, f func([]byte)) {
	for len(v) > 0 {
		i := 0
		for i < len(v) && v[i] != ',' {
			i++
		}
		t := v[:i]
		for len(t) > 0 && (t[0] == ' ' || t[0] == '\t') {
			t = t[1:]
		}
		for len(t) > 0 && (t[len(t)-1] == ' ' || t[len(t)-1] == '\t') {
			t = t[:len(t)-1]
		}
		if len(t) > 0 {
			f(t)
		}
		if i == len(v) {
			return
		}
		v = v[i+1:]
	}
}

func eqFoldBytes(a, b []byte) bool {
	for i := range a {
		x, y := a[i], b[i]
		if x >= 'A' && x <= 'Z' {
			x += 'a' - 'A'
		}
		if y >= 'A' && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
