package marathonsim

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strings"
	"time"
)

// healthTimeout bounds one check attempt.
const healthTimeout = time.Second

// checkOnce runs one Marathon-style check against addr: TCP connects, HTTP
// GETs the path and wants a 2xx or 3xx status, as Marathon's HTTP check does.
// It speaks HTTP on a raw connection so no client transport outlives it.
func checkOnce(ctx context.Context, hc HealthCheck, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	proto := strings.ToUpper(hc.Protocol)
	if proto == "TCP" || (proto == "" && hc.Path == "") {
		return true
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	path := hc.Path
	if path == "" {
		path = "/"
	}
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: marathonsim\r\nConnection: close\r\n\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		return false
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 400
}
