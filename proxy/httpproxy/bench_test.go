package httpproxy

import (
	"net"
	"net/netip"
	"testing"

	"github.com/valyala/fasthttp"
)

// BenchmarkProxyKeepAlive measures one keep-alive GET through the vhost
// listener to a fasthttp backend, with a fasthttp client: both ends allocate
// nothing per request, so allocs/op is the proxy's.
//
//	go test -run '^$' -bench ProxyKeepAlive -benchmem -cpuprofile cpu.out ./proxy/httpproxy/
func BenchmarkProxyKeepAlive(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	backend := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") }}
	go backend.Serve(ln)
	defer backend.Shutdown()

	r := newBenchRig(b)
	r.apply(app("/web", 0, []string{"web.test"}, "", netip.MustParseAddrPort(ln.Addr().String())))
	c := &fasthttp.HostClient{Addr: r.vhost, MaxConns: 64}
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	req.SetRequestURI("http://web.test/")
	req.UseHostHeader = true
	req.Header.SetHost("web.test")
	for range 100 {
		if err := c.Do(req, resp); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
			b.Fatal(err, resp.StatusCode())
		}
	}
}
