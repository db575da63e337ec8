package marathonsim

import (
	"bytes"
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Timeouts of the ready-made tasks.
const (
	// helloWriteTimeout bounds the greeting's write to a client that does not read.
	helloWriteTimeout = 5 * time.Second
	// helloDrainTimeout bounds how long OneShotHello reads what the client
	// sent after the greeting. Closing a socket with unread bytes makes the
	// kernel send RST, which can destroy the greeting before the client has
	// read it; draining first turns that into an orderly FIN.
	helloDrainTimeout = time.Second
)

// OneShotHello is the nc-style example task
//
//	echo "hello $MESOS_TASK_ID" | nc -l $PORT0
//
// It accepts ONE connection and stops listening (nc closes its listening
// socket once it has a client), writes "hello <taskID>\n", half-closes,
// drains the request, closes and returns: the task ends and Marathon
// restarts it elsewhere. With httpReply the greeting is wrapped in a minimal
// HTTP/1.0 200 response, which today's curl accepts where a bare line is
// rejected as HTTP/0.9.
func OneShotHello(httpReply bool) TaskFunc {
	return func(ctx context.Context, ln net.Listener, taskID string) {
		stopLn := context.AfterFunc(ctx, func() { ln.Close() })
		conn, err := ln.Accept()
		stopLn()
		ln.Close()
		if err != nil {
			return
		}
		defer conn.Close()
		// A kill closes the connection; so does the simulator, but the
		// TaskFunc must not outlive its context on its own either.
		stopConn := context.AfterFunc(ctx, func() { conn.Close() })
		defer stopConn()

		msg := "hello " + taskID + "\n"
		if httpReply {
			// nc writes at once, but an HTTP client that sees a response
			// before it has sent its request may discard it (Go's transport
			// calls that an unsolicited response), so wait for the request.
			readRequestHead(conn)
			msg = "HTTP/1.0 200 OK\r\n" +
				"Content-Type: text/plain\r\n" +
				"Content-Length: " + strconv.Itoa(len(msg)) + "\r\n" +
				"\r\n" + msg
		}
		_ = conn.SetWriteDeadline(time.Now().Add(helloWriteTimeout))
		if _, err := io.WriteString(conn, msg); err != nil {
			return
		}
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		_ = conn.SetReadDeadline(time.Now().Add(helloDrainTimeout))
		_, _ = io.Copy(io.Discard, conn)
	}
}

// readRequestHead reads until the blank line that ends an HTTP request head,
// helloDrainTimeout passes, or 64 KiB arrive, whichever is first.
func readRequestHead(conn net.Conn) {
	_ = conn.SetReadDeadline(time.Now().Add(helloDrainTimeout))
	defer conn.SetReadDeadline(time.Time{})
	var got []byte
	buf := make([]byte, 4096)
	for len(got) < 64<<10 && !bytes.Contains(got, []byte("\r\n\r\n")) {
		n, err := conn.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return
		}
	}
}

// HTTPHello is a long-lived HTTP server: GET /health answers 200 "ok\n",
// every other request "hello from <taskID>\n", with an X-Task-Id header.
// It stops when the task is killed.
func HTTPHello() TaskFunc {
	return func(ctx context.Context, ln net.Listener, taskID string) {
		mux := http.NewServeMux()
		mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("X-Task-Id", taskID)
			io.WriteString(w, "ok\n")
		})
		mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("X-Task-Id", taskID)
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			io.WriteString(w, "hello from "+taskID+"\n")
		})
		srv := &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          log.New(io.Discard, "", 0),
		}
		stop := context.AfterFunc(ctx, func() { srv.Close() })
		defer stop()
		// Serve returns when the task is killed (srv.Close) or its listener
		// is closed under it (the process is gone); either way it is over.
		_ = srv.Serve(ln)
	}
}
