package httpproxy

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/pacer-lb/pacer/health"
)

// BenchmarkProxyKeepAlive measures one keep-alive GET through the vhost
// listener to a fasthttp backend, with a fasthttp client: both ends allocate
// nothing per request, so allocs/op is the proxy's.
//
//	go test -run '^$' -bench ProxyKeepAlive -benchmem -cpuprofile cpu.out ./proxy/httpproxy/
func BenchmarkProxyKeepAlive(b *testing.B) { benchProxy(b, false, false) }

// BenchmarkProxyKeepAliveHealth is BenchmarkProxyKeepAlive with every
// outcome reported to a running health.Checker, as lb wires it.
func BenchmarkProxyKeepAliveHealth(b *testing.B) { benchProxy(b, true, false) }

// BenchmarkProxyClose is BenchmarkProxyKeepAlive with one request per
// client connection (Connection: close); the client's dial and the
// backend's per-connection state allocate too, so read the proxy's share
// from a memory profile:
//
//	go test -run '^$' -bench ProxyClose -benchmem -memprofile mem.out ./proxy/httpproxy/
//	go tool pprof -sample_index=alloc_space -focus 'httpproxy|fastconn' mem.out
func BenchmarkProxyClose(b *testing.B) { benchProxy(b, false, true) }

func benchProxy(b *testing.B, withHealth, connClose bool) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	backend := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") }}
	go backend.Serve(ln)
	defer backend.Shutdown()

	var cfg Config
	var chk *health.Checker
	if withHealth {
		cfg.Report = func(a netip.AddrPort, o health.Outcome) { chk.Report(a, o) }
	}
	r := newRigTB(b, nil, cfg)
	if withHealth {
		if chk, err = health.New(health.Config{}, r.table, nil); err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- chk.Run(ctx) }()
		defer func() { cancel(); <-done }()
	}
	r.apply(app("/web", 0, []string{"web.test"}, "", netip.MustParseAddrPort(ln.Addr().String())))
	c := &fasthttp.HostClient{Addr: r.vhost, MaxConns: 64}
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	req.SetRequestURI("http://web.test/")
	req.UseHostHeader = true
	req.Header.SetHost("web.test")
	if connClose {
		req.SetConnectionClose()
	}
	for range 100 {
		if err := c.Do(req, resp); err != nil {
			b.Fatal(err)
		}
	}
	for withHealth && len(chk.Verdicts()) == 0 {
		runtime.Gosched() // the checker has not seen the backend yet
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
			b.Fatal(err, resp.StatusCode())
		}
	}
}
