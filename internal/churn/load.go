package churn

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is how the clients speak to the service port.
type Mode uint8

// Modes.
const (
	// HTTP: keep-alive GETs on one connection per worker.
	HTTP Mode = iota
	// TCP: one connection per request; the client writes an HTTP/1.0 GET
	// and reads the reply to EOF (pacer only splices bytes).
	TCP
)

func (m Mode) String() string {
	if m == TCP {
		return "tcp"
	}
	return "http"
}

// Counts are what the clients saw.
type Counts struct {
	Requests uint64 // completed with a 2xx and the expected body
	// HTTP failures.
	Non2xx       uint64 // a complete answer with another status
	SocketErrors uint64 // the connection broke, or a malformed answer
	// TCP failures, by how far the connection got.
	Refused      uint64 // the connect to pacer failed
	ResetEarly   uint64 // broken before the client could send its request
	NoReply      uint64 // request sent, the connection ended with no byte of reply
	BrokenReply  uint64 // part of a reply, then the end, or not a 2xx
	FirstFailure string // the first failure, for the log
}

// Failures is the sum of every failure count.
func (c Counts) Failures() uint64 {
	return c.Non2xx + c.SocketErrors + c.Refused + c.ResetEarly + c.NoReply + c.BrokenReply
}

func (c Counts) String() string {
	if c.FirstFailure == "" {
		return fmt.Sprintf("requests %d, failures 0", c.Requests)
	}
	return fmt.Sprintf("requests %d, failures %d (non-2xx %d, socket errors %d, refused %d, reset before sending %d, no reply %d, broken reply %d; first: %s)",
		c.Requests, c.Failures(), c.Non2xx, c.SocketErrors, c.Refused, c.ResetEarly, c.NoReply, c.BrokenReply, c.FirstFailure)
}

// Load is a set of clients hammering one address.
type Load struct {
	Addr    string // host:port of the service port
	Mode    Mode
	Workers int // 0 means 8
	// Expect is a prefix every 2xx body must have; "" accepts any.
	Expect string

	requests, non2xx, sockErr, refused, resetEarly, noReply, broken atomic.Uint64
	firstMu                                                         sync.Mutex
	first                                                           string
}

// Run runs the clients until ctx ends and returns what they saw.
func (l *Load) Run(ctx context.Context) Counts {
	n := l.Workers
	if n <= 0 {
		n = 8
	}
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if l.Mode == TCP {
				l.tcpWorker(ctx)
			} else {
				l.httpWorker(ctx)
			}
		}()
	}
	wg.Wait()
	return l.Counts()
}

// Counts returns the counts so far.
func (l *Load) Counts() Counts {
	l.firstMu.Lock()
	first := l.first
	l.firstMu.Unlock()
	return Counts{
		Requests: l.requests.Load(), Non2xx: l.non2xx.Load(), SocketErrors: l.sockErr.Load(),
		Refused: l.refused.Load(), ResetEarly: l.resetEarly.Load(), NoReply: l.noReply.Load(), BrokenReply: l.broken.Load(),
		FirstFailure: first,
	}
}

func (l *Load) fail(counter *atomic.Uint64, format string, args ...any) {
	counter.Add(1)
	l.firstMu.Lock()
	if l.first == "" {
		l.first = time.Now().Format("15:04:05.000 ") + fmt.Sprintf(format, args...)
	}
	l.firstMu.Unlock()
}

const ioTimeout = 10 * time.Second

// connectBackoff is the pause after a failed connect. A refused connect
// fails at once: without a pause each worker spins on connect(2), and a
// load left running (pacer down, or a test that failed before it stopped
// the load) takes the CPU from everything else on the machine.
const connectBackoff = 5 * time.Millisecond

// pause waits connectBackoff, or until ctx ends.
func pause(ctx context.Context) {
	t := time.NewTimer(connectBackoff)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// httpWorker sends keep-alive GETs on one connection, reconnecting only when
// the server closes it cleanly (Connection: close) or after a failure.
func (l *Load) httpWorker(ctx context.Context) {
	var conn net.Conn
	var br *bufio.Reader
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	req := []byte("GET / HTTP/1.1\r\nHost: churn.test\r\nUser-Agent: pacer-churn\r\n\r\n")
	for ctx.Err() == nil {
		if conn == nil {
			c, err := net.DialTimeout("tcp", l.Addr, ioTimeout)
			if err != nil {
				l.fail(&l.sockErr, "connect: %v", err)
				pause(ctx)
				continue
			}
			conn, br = c, bufio.NewReader(c)
		}
		_ = conn.SetDeadline(time.Now().Add(ioTimeout))
		resp, body, err := roundTrip(conn, br, req)
		if err != nil {
			l.fail(&l.sockErr, "GET: %v", err)
			conn.Close()
			conn = nil
			continue
		}
		switch {
		case resp.StatusCode/100 != 2:
			l.fail(&l.non2xx, "GET: %s: %q", resp.Status, body)
		case !strings.HasPrefix(body, l.Expect):
			l.fail(&l.non2xx, "GET: unexpected body %q", body)
		default:
			l.requests.Add(1)
		}
		if resp.Close {
			conn.Close()
			conn = nil
		}
	}
}

func roundTrip(conn net.Conn, br *bufio.Reader, req []byte) (*http.Response, string, error) {
	if _, err := conn.Write(req); err != nil {
		return nil, "", err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, "", err
	}
	return resp, string(b), nil
}

// tcpWorker opens one connection per request.
func (l *Load) tcpWorker(ctx context.Context) {
	req := []byte("GET / HTTP/1.0\r\nHost: churn.test\r\nUser-Agent: pacer-churn\r\n\r\n")
	buf := make([]byte, 4096)
	for ctx.Err() == nil {
		c, err := net.DialTimeout("tcp", l.Addr, ioTimeout)
		if err != nil {
			l.fail(&l.refused, "connect: %v", err)
			pause(ctx)
			continue
		}
		_ = c.SetDeadline(time.Now().Add(ioTimeout))
		if _, err := c.Write(req); err != nil {
			l.fail(&l.resetEarly, "write: %v", err)
			c.Close()
			continue
		}
		var got []byte
		for {
			n, err := c.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				if !errors.Is(err, io.EOF) || len(got) == 0 {
					if len(got) == 0 {
						l.fail(&l.noReply, "read: %v (no reply byte)", err)
					} else {
						l.fail(&l.broken, "read after %d bytes: %v", len(got), err)
					}
					got = nil
				}
				break
			}
		}
		c.Close()
		if got == nil {
			continue
		}
		reply := string(got)
		_, body, _ := strings.Cut(reply, "\r\n\r\n")
		if !strings.HasPrefix(reply, "HTTP/1.") || !strings.HasPrefix(reply[min(9, len(reply)):], "2") || !strings.HasPrefix(body, l.Expect) {
			l.fail(&l.broken, "reply %q", reply)
			continue
		}
		l.requests.Add(1)
	}
}
