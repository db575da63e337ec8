package fastconn

import (
	"bytes"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"
)

// shortWatcher says its reads take room bytes but reads take bytes at a
// time, and is satisfied once it has want.
type shortWatcher struct {
	c          *Conn
	room, take int
	want       int
	got        []byte
	done       chan error
}

func (w *shortWatcher) ReadRoom() int { return w.room }

func (w *shortWatcher) Readable() bool {
	buf := make([]byte, w.take)
	for len(w.got) < w.want {
		n, err := w.c.TryRead(buf)
		if errors.Is(err, ErrWouldBlock) {
			return false
		}
		if err != nil {
			return true
		}
		w.got = append(w.got, buf[:n]...)
	}
	return true
}

func (w *shortWatcher) WatchOver(err error) { w.done <- err }

// The poller reads a watched answer ahead, with the other reads of its
// batch, and the watcher's TryRead gets those bytes; what the watcher
// leaves, the next Read gets, in order, before anything read later.
func TestReadAheadKeepsWhatTheWatcherLeft(t *testing.T) {
	var aheads atomic.Int32
	hook := func(*Conn) { aheads.Add(1) }
	testHookReadAhead.Store(&hook)
	defer testHookReadAhead.Store(nil)

	ln, addr := listen(t, "tcp", "127.0.0.1:0")
	c, peer := dialPair(t, ln, addr)
	defer c.Close()
	w := &shortWatcher{c: c, room: 64, take: 3, want: 4, done: make(chan error, 1)}
	if err := c.WatchReply(w); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.Write([]byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-w.done:
		if err != nil || !bytes.HasPrefix([]byte("0123456789"), w.got) || len(w.got) < 4 {
			t.Fatalf("watch ended with %q, %v; want a prefix of 0123456789, 4 bytes or more", w.got, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the watch never ended")
	}
	if aheads.Load() == 0 {
		t.Fatal("the poller did not read ahead for a watcher that gave its room")
	}
	if _, err := peer.Write([]byte("later")); err != nil {
		t.Fatal(err)
	}
	want := "0123456789later"[len(w.got):]
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var rest []byte
	buf := make([]byte, 4)
	for len(rest) < len(want) {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("after %q: %v", rest, err)
		}
		rest = append(rest, buf[:n]...)
	}
	if string(rest) != want {
		t.Fatalf("read %q after the watch, want %q", rest, want)
	}

	// A FIN read ahead, and left: the next Read says io.EOF.
	w = &shortWatcher{c: c, room: 64, take: 8, want: 1, done: make(chan error, 1)}
	if err := c.WatchReply(w); err != nil {
		t.Fatal(err)
	}
	peer.Close()
	if err := <-w.done; err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(buf); err != io.EOF {
		t.Fatalf("after the peer's FIN: %d, %v; want io.EOF", n, err)
	}
}
