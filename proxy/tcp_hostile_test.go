package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/pacer-lb/pacer/internal/testnet"
)

// bulk returns n bytes of a pattern that shows reordering.
func bulk(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 31 / 17)
	}
	return b
}

// slowReadAll reads c to EOF in small reads, slower than the proxy can
// write, so the proxy's side must wait on a full window.
func slowReadAll(c net.Conn) ([]byte, error) {
	var out bytes.Buffer
	chunk := make([]byte, 1024)
	for {
		n, err := c.Read(chunk)
		out.Write(chunk[:n])
		if err == io.EOF {
			return out.Bytes(), nil
		}
		if err != nil {
			return out.Bytes(), err
		}
	}
}

// The client sends its request and its FIN at once; the backend answers
// with bulk data only after that FIN, to a client that reads slowly. The
// whole answer arrives, then the EOF.
func TestTCPClientFINThenBulkAnswer(t *testing.T) {
	t.Parallel()
	want := bulk(8<<20 + 5)
	port := testnet.FreePort(t)
	h := newHarness(t, TCPConfig{}, port)
	be := startBackend(t, func(c *net.TCPConn) {
		if _, err := io.ReadAll(c); err != nil {
			return
		}
		c.Write(want)
	})
	put(h.table, service(port, be.addr))
	h.waitOpened(port, 1)

	c := dial(t, port)
	if _, err := c.Write([]byte("GET")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := slowReadAll(c)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("answer after the client's FIN: %d of %d bytes, %v", len(got), len(want), err)
	}
}

// The backend says hello and sends its FIN first; the client, having read
// the hello and the EOF, uploads bulk data, all of which reaches the
// backend before the client's FIN does.
func TestTCPBackendFINThenBulkUpload(t *testing.T) {
	t.Parallel()
	want := bulk(8<<20 + 3)
	port := testnet.FreePort(t)
	h := newHarness(t, TCPConfig{}, port)
	uploaded := make(chan []byte, 1)
	be := startBackend(t, func(c *net.TCPConn) {
		c.Write([]byte("hello\n"))
		c.CloseWrite()
		b, err := slowReadAll(c)
		if err != nil {
			b = append(b, "... "+err.Error()...)
		}
		uploaded <- b
	})
	put(h.table, service(port, be.addr))
	h.waitOpened(port, 1)

	c := dial(t, port)
	if got, err := io.ReadAll(c); err != nil || string(got) != "hello\n" {
		t.Fatalf("before the backend's FIN: %q, %v", got, err)
	}
	if _, err := c.Write(want); err != nil {
		t.Fatalf("uploading after the backend's FIN: %v", err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-uploaded:
		if !bytes.Equal(got, want) {
			t.Fatalf("the backend got %d bytes of %d", len(got), len(want))
		}
	case <-time.After(waitFor):
		t.Fatal("the upload never ended at the backend")
	}
}

// A client that resets in the middle of an upload must not look, to the
// backend, like one that finished it: the backend sees a reset, not an EOF.
func TestTCPClientResetMidUploadResetsBackend(t *testing.T) {
	t.Parallel()
	port := testnet.FreePort(t)
	h := newHarness(t, TCPConfig{}, port)
	got := make(chan error, 1)
	be := startBackend(t, func(c *net.TCPConn) {
		c.Write([]byte("ready\n"))
		_, err := io.ReadAll(c)
		got <- err
	})
	put(h.table, service(port, be.addr))
	h.waitOpened(port, 1)

	c := dial(t, port)
	if line := readLine(t, c); line != "ready" {
		t.Fatalf("greeting %q", line)
	}
	if _, err := c.Write(bulk(1 << 20)); err != nil {
		t.Fatal(err)
	}
	c.SetLinger(0)
	c.Close()
	select {
	case err := <-got:
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("backend read after the client's reset: %v; want ECONNRESET, not a clean end", err)
		}
	case <-time.After(waitFor):
		t.Fatal("the backend never saw the client go")
	}
}

// Once one direction has ended, the idle timeout still reaches the other
// when it waits to write to a peer that no longer reads: a client that sent
// its request and its FIN and then stopped reading the answer (or a
// backend that did the same to an upload) must not hold the connection,
// its descriptors and buffers for good.
func TestTCPIdleTimeoutReachesAWriteNobodyReads(t *testing.T) {
	t.Parallel()
	const idle = 300 * time.Millisecond
	chunk := bulk(64 << 10)
	// writeAll writes to c until a write fails, and returns that error.
	writeAll := func(c net.Conn) error {
		for {
			if _, err := c.Write(chunk); err != nil {
				return err
			}
		}
	}

	t.Run("client sent its FIN and stopped reading", func(t *testing.T) {
		t.Parallel()
		port := testnet.FreePort(t)
		h := newHarness(t, TCPConfig{IdleTimeout: idle}, port)
		cut := make(chan error, 1)
		be := startBackend(t, func(c *net.TCPConn) {
			if _, err := io.ReadAll(c); err != nil {
				cut <- err
				return
			}
			cut <- writeAll(c)
		})
		put(h.table, service(port, be.addr))
		h.waitOpened(port, 1)
		c := dial(t, port)
		if _, err := c.Write([]byte("GET")); err != nil {
			t.Fatal(err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-cut:
			t.Logf("backend's write ended: %v", err)
		case <-time.After(waitFor):
			t.Fatalf("the connection outlived %v of idle timeout by %v with the client not reading", idle, waitFor)
		}
		eventually(t, "the connection to be gone", func() bool {
			st, _ := h.status(port)
			return st.Active == 0
		})
	})

	t.Run("backend sent its FIN and stopped reading", func(t *testing.T) {
		t.Parallel()
		port := testnet.FreePort(t)
		h := newHarness(t, TCPConfig{IdleTimeout: idle}, port)
		stop := make(chan struct{})
		be := startBackend(t, func(c *net.TCPConn) {
			c.Write([]byte("hello\n"))
			c.CloseWrite()
			<-stop // never reads
		})
		t.Cleanup(func() { close(stop) }) // runs before the backend's cleanup
		put(h.table, service(port, be.addr))
		h.waitOpened(port, 1)
		c := dial(t, port)
		if got, err := io.ReadAll(c); err != nil || string(got) != "hello\n" {
			t.Fatalf("before the backend's FIN: %q, %v", got, err)
		}
		err := writeAll(c) // dial's deadline bounds it
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the connection outlived %v of idle timeout by %v with the backend not reading", idle, waitFor)
		}
		t.Logf("client's write ended: %v", err)
		eventually(t, "the connection to be gone", func() bool {
			st, _ := h.status(port)
			return st.Active == 0
		})
	})
}
