package fastconn

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// testExchanger serves requests that start with "X" by writing them back in
// upper case, from a goroutine of its own (as an answer from a backend
// would come); it takes requests that start with "F" and gives them back
// with ExchangeFallback; it declines the rest. hold, if set, makes each
// exchange wait for a value before it ends.
type testExchanger struct {
	mu      sync.Mutex
	offered []string
	hold    chan struct{}
}

func (x *testExchanger) Exchange(c *Conn, b []byte) bool {
	x.mu.Lock()
	x.offered = append(x.offered, string(b))
	x.mu.Unlock()
	switch b[0] {
	case 'X':
		answer := bytes.ToUpper(b)
		go func() {
			if x.hold != nil {
				<-x.hold
			}
			if _, err := c.WriteNow(answer); err != nil {
				panic(err)
			}
			c.ExchangeDone()
		}()
		return true
	case 'F':
		n := len(b)
		go func() {
			if x.hold != nil {
				<-x.hold
			}
			c.ExchangeFallback(n)
		}()
		return true
	}
	return false
}

func (x *testExchanger) offers() []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	return append([]string(nil), x.offered...)
}

// readLoop reads c until an error, sending what each Read returned.
func readLoop(c *Conn) <-chan readResult {
	ch := make(chan readResult, 16)
	go func() {
		buf := make([]byte, 256)
		for {
			n, err := c.Read(buf)
			ch <- readResult{n: n, err: err, data: string(buf[:n])}
			if err != nil {
				close(ch)
				return
			}
		}
	}()
	return ch
}

// exchangePair is a Dial'd Conn with a testExchanger (holding each
// exchange until released, if hold), its peer, and its reader's results.
func exchangePair(t *testing.T, hold bool) (*Conn, net.Conn, *testExchanger, <-chan readResult) {
	t.Helper()
	ln, addr := listen(t, "tcp", "127.0.0.1:0")
	c, peer := dialPair(t, ln, addr)
	x := &testExchanger{}
	if hold {
		x.hold = make(chan struct{})
	}
	c.SetExchanger(x)
	reads := readLoop(c)
	waitBusy(t, c)
	return c, peer, x, reads
}

func expectAnswer(t *testing.T, peer net.Conn, want string) {
	t.Helper()
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatalf("reading the answer %q: %v", want, err)
	}
	if string(got) != want {
		t.Fatalf("answer %q, want %q", got, want)
	}
}

func expectRead(t *testing.T, reads <-chan readResult, want string) {
	t.Helper()
	select {
	case r := <-reads:
		if r.err != nil || r.data != want {
			t.Fatalf("Read returned %q, %v; want %q", r.data, r.err, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("Read did not return %q", want)
	}
}

// expectEOF waits for the reader's Read to return the peer's FIN.
func expectEOF(t *testing.T, reads <-chan readResult) {
	t.Helper()
	select {
	case r := <-reads:
		if r.n != 0 || r.err != io.EOF {
			t.Fatalf("Read returned %q, %v; want io.EOF", r.data, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read did not see the peer's FIN")
	}
}

func expectNoRead(t *testing.T, reads <-chan readResult) {
	t.Helper()
	select {
	case r := <-reads:
		t.Fatalf("Read returned %q, %v; the exchanger should have served it", r.data, r.err)
	default:
	}
}

// Requests the Exchanger takes are answered without the reader seeing them;
// those it declines, or gives back, reach the reader whole, in order.
func TestExchangeServesInsteadOfTheReader(t *testing.T) {
	_, peer, x, reads := exchangePair(t, false)

	for _, step := range []struct{ send, answer, read string }{
		{send: "Xone", answer: "XONE"},
		{send: "plain", read: "plain"},
		{send: "Xtwo", answer: "XTWO"},
		{send: "Fback", read: "Fback"},
		{send: "Xthree", answer: "XTHREE"},
	} {
		if _, err := peer.Write([]byte(step.send)); err != nil {
			t.Fatal(err)
		}
		if step.answer != "" {
			expectAnswer(t, peer, step.answer)
		} else {
			expectRead(t, reads, step.read)
		}
	}
	expectNoRead(t, reads)
	peer.Close()
	expectEOF(t, reads)
	if got := x.offers(); len(got) != 5 {
		t.Fatalf("offered %q, want the five messages once each", got)
	}
}

// A request that comes while an exchange runs is offered only once it
// ended, and is served without waking the reader.
func TestExchangeKeepsReadinessWhileBusy(t *testing.T) {
	_, peer, x, reads := exchangePair(t, true)

	if _, err := peer.Write([]byte("Xa")); err != nil {
		t.Fatal(err)
	}
	waitOffers(t, x, 1)
	if _, err := peer.Write([]byte("Xb")); err != nil {
		t.Fatal(err)
	}
	// The second request sits in the socket while the first is served: no
	// poller wakeup can be seen from here, so give it time to go wrong.
	time.Sleep(50 * time.Millisecond)
	if got := x.offers(); len(got) != 1 {
		t.Fatalf("offered %q while the first exchange ran", got)
	}
	x.hold <- struct{}{}
	expectAnswer(t, peer, "XA")
	waitOffers(t, x, 2)
	x.hold <- struct{}{}
	expectAnswer(t, peer, "XB")
	expectNoRead(t, reads)
}

// A FIN right behind a request, with no edge of its own, still reaches the
// reader once the exchange ended.
func TestExchangeFINBehindARequest(t *testing.T) {
	_, peer, x, reads := exchangePair(t, true)

	if _, err := peer.Write([]byte("Xa")); err != nil {
		t.Fatal(err)
	}
	_ = peer.(*net.TCPConn).CloseWrite()
	waitOffers(t, x, 1)
	x.hold <- struct{}{}
	expectAnswer(t, peer, "XA")
	expectEOF(t, reads)
}

// A FIN the poller saw while no Read waited, behind a request the next
// Read then reads itself and an exchange takes, still reaches the reader:
// no edge comes for it again, and the read that took the request did not
// report it.
func TestExchangeFINWhileNoReadWaits(t *testing.T) {
	ln, addr := listen(t, "tcp", "127.0.0.1:0")
	c, peer := dialPair(t, ln, addr)
	x := &testExchanger{}
	c.SetExchanger(x)
	buf := make([]byte, 256)

	// A request the exchanger declines: the Read returns it, and the
	// socket is in the poller from then on.
	first := make(chan readResult, 1)
	go func() {
		n, err := c.Read(buf)
		first <- readResult{n: n, err: err, data: string(buf[:n])}
	}()
	waitBusy(t, c)
	if _, err := peer.Write([]byte("plain")); err != nil {
		t.Fatal(err)
	}
	expectRead(t, first, "plain")

	// No Read waits now: the poller's wakeups for the next request and
	// for the FIN behind it are left as tokens, one at a time.
	if _, err := peer.Write([]byte("Xb")); err != nil {
		t.Fatal(err)
	}
	waitToken(t, c)
	_ = peer.(*net.TCPConn).CloseWrite()
	waitToken(t, c)

	reads := readLoop(c)
	expectAnswer(t, peer, "XB")
	expectEOF(t, reads)
}

// A poller that saw a socket in an exchange's state, and acts on it only
// after the reader left Read, removed the Exchanger and armed a relay (as an
// upgrade to a tunnel does), runs the relay: an exchange with no
// Exchanger crashed the process, and the bytes were lost to the relay.
func TestExchangeReadinessAfterTheExchangerLeft(t *testing.T) {
	ln, addr := listen(t, "tcp", "127.0.0.1:0")
	c, peer := dialPair(t, ln, addr)
	dst, dstPeer := dialPair(t, ln, addr)
	c.SetExchanger(&testExchanger{})

	// The poller is held as it begins to act on c's readiness.
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hook := func(hc *Conn) {
		if hc == c {
			once.Do(func() { close(entered); <-release })
		}
	}
	testHookExchangeReady.Store(&hook)
	released := sync.OnceFunc(func() { close(release) })
	t.Cleanup(func() { testHookExchangeReady.Store(nil); released() })

	first := make(chan readResult, 1)
	go func() {
		buf := make([]byte, 256)
		n, err := c.Read(buf)
		first <- readResult{n: n, err: err, data: string(buf[:n])}
	}()
	waitBusy(t, c)
	if _, err := peer.Write([]byte("Xa")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the poller never saw the request")
	}

	// The reader leaves Read (here at its deadline), the Exchanger goes,
	// and a relay to dst reads what is there and is armed for more.
	_ = c.SetReadDeadline(time.Now())
	if r := <-first; !errors.Is(r.err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read returned %q, %v; want its deadline", r.data, r.err)
	}
	_ = c.SetReadDeadline(time.Time{})
	c.SetExchanger(nil)
	relayAsync(c, dst, NewPool(4096))
	untilArmed(t, c)
	if _, err := peer.Write([]byte("more")); err != nil {
		t.Fatal(err)
	}
	released()
	if got := readFull(t, dstPeer, len("Xamore")); string(got) != "Xamore" {
		t.Fatalf("relayed %q, want %q", got, "Xamore")
	}
}

// waitToken waits for a wakeup of c's read direction and takes it.
func waitToken(t *testing.T, c *Conn) {
	t.Helper()
	for start := time.Now(); !c.pd.r.takeToken(); {
		if time.Since(start) > 5*time.Second {
			t.Fatal("the poller never saw the socket readable")
		}
		time.Sleep(time.Millisecond)
	}
}

// A reader whose deadline passes while an exchange runs returns the
// timeout; the exchange's end then changes nothing.
func TestExchangeReaderDeadlineWhileBusy(t *testing.T) {
	ln, addr := listen(t, "tcp", "127.0.0.1:0")
	c, peer := dialPair(t, ln, addr)
	x := &testExchanger{hold: make(chan struct{})}
	c.SetExchanger(x)
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	reads := readLoop(c)
	if _, err := peer.Write([]byte("Xa")); err != nil {
		t.Fatal(err)
	}
	waitOffers(t, x, 1)
	select {
	case r := <-reads:
		if !errors.Is(r.err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read returned %q, %v; want the deadline", r.data, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the deadline did not end the Read")
	}
	x.hold <- struct{}{}
	expectAnswer(t, peer, "XA")
}

// Bytes a reader reads itself (already there when it starts) are offered
// too.
func TestExchangeOffersWhatTheReaderReads(t *testing.T) {
	ln, addr := listen(t, "tcp", "127.0.0.1:0")
	c, peer := dialPair(t, ln, addr)
	x := &testExchanger{}
	c.SetExchanger(x)
	if _, err := peer.Write([]byte("Xfirst")); err != nil {
		t.Fatal(err)
	}
	untilInq(t, c, len("Xfirst")) // the bytes are there before the Read starts
	reads := readLoop(c)
	expectAnswer(t, peer, "XFIRST")
	expectNoRead(t, reads)
}

func waitOffers(t *testing.T, x *testExchanger, n int) {
	t.Helper()
	for start := time.Now(); len(x.offers()) < n; {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("offered %q, want %d offers", x.offers(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// watchUntil is a ReadWatcher that reads until it has want.
type watchUntil struct {
	c    *Conn
	want string
	got  []byte
	done chan error
}

func (w *watchUntil) Readable() bool {
	var buf [64]byte
	for {
		n, err := w.c.TryRead(buf[:])
		if errors.Is(err, ErrWouldBlock) {
			return false
		}
		if err != nil {
			return true
		}
		w.got = append(w.got, buf[:n]...)
		if len(w.got) >= len(w.want) {
			return true
		}
	}
}

func (w *watchUntil) WatchOver(err error) { w.done <- err }

// WatchReply calls the watcher as bytes come, until it is satisfied, with
// no goroutine waiting, including bytes that came before the watch began
// on a socket not yet in the poller; a deadline ends it with the timeout.
func TestWatchReply(t *testing.T) {
	ln, addr := listen(t, "tcp", "127.0.0.1:0")
	c, peer := dialPair(t, ln, addr)
	watch := func(want string, before, after []string) {
		t.Helper()
		w := &watchUntil{c: c, want: want, done: make(chan error, 1)}
		queued := 0
		for _, b := range before {
			if _, err := peer.Write([]byte(b)); err != nil {
				t.Fatal(err)
			}
			queued += len(b)
		}
		untilInq(t, c, queued) // in c's socket before the watch
		if err := c.WatchReply(w); err != nil {
			t.Fatal(err)
		}
		for _, b := range after {
			untilInq(t, c, 0) // each part comes after the watch took the last
			if _, err := peer.Write([]byte(b)); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case err := <-w.done:
			if err != nil || string(w.got) != want {
				t.Fatalf("watch ended with %q, %v; want %q", w.got, err, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("the watch for %q never ended", want)
		}
	}
	watch("hello", []string{"hello"}, nil)          // all there before: no edge comes
	watch("world", []string{"wo"}, []string{"rld"}) // part before, part after
	watch("again", nil, []string{"ag", "ain"})      // all after, in two

	w := &watchUntil{c: c, want: "more", done: make(chan error, 1)}
	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if err := c.WatchReply(w); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-w.done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("watch ended with %v, want the deadline", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the deadline did not end the watch")
	}
}

// An answer whose wakeup races the start of WatchReply is never lost. The
// test holds the poller's wakeup for the answer at its worst moment: it
// found no watch, and has not yet left its token. The watch then begins,
// finds no token, and waits; the wakeup goes on. Before the fix in
// waiter.wake the token was left for nobody, and the watch waited for its
// deadline (a churn test's GET waited out its client's 10 s that way).
func TestWatchReplyRacingTheAnswer(t *testing.T) {
	ln, addr := listen(t, "tcp", "127.0.0.1:0")
	c, peer := dialPair(t, ln, addr)
	// A first exchange puts c's socket in the poller.
	w := &watchUntil{c: c, want: "a", done: make(chan error, 1)}
	if err := c.WatchReply(w); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := within(t, w.done, "the first watch's end"); err != nil {
		t.Fatal(err)
	}

	held, release := make(chan struct{}, 1), make(chan struct{})
	var once sync.Once
	r := &c.pd.r
	hook := func(wt *waiter) {
		if wt == r {
			once.Do(func() {
				held <- struct{}{}
				<-release
			})
		}
	}
	testHookWakeToken.Store(&hook)
	t.Cleanup(func() { testHookWakeToken.Store(nil) })
	if _, err := peer.Write([]byte("b")); err != nil { // the answer, before the watch
		t.Fatal(err)
	}
	select {
	case <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("the poller never woke for the answer")
	}
	w = &watchUntil{c: c, want: "b", done: make(chan error, 1)}
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	if err := c.WatchReply(w); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := within(t, w.done, "the watch's end"); err != nil || string(w.got) != "b" {
		t.Fatalf("the watch ended with %q, %v: the answer's wakeup was lost", w.got, err)
	}
}

// A read deadline moved later between two watches holds for the second:
// the timer armed for the first must not end it early (a deadline never
// ends a wait before the time asked for).
func TestWatchReplyTakesALaterDeadline(t *testing.T) {
	ln, addr := listen(t, "tcp", "127.0.0.1:0")
	c, peer := dialPair(t, ln, addr)
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	w := &watchUntil{c: c, want: "a", done: make(chan error, 1)}
	if err := c.WatchReply(w); err != nil {
		t.Fatal(err)
	}
	peer.Write([]byte("a"))
	if err := within(t, w.done, "the first watch's end"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	w = &watchUntil{c: c, want: "b", done: make(chan error, 1)}
	if err := c.WatchReply(w); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-w.done:
		t.Fatalf("the second watch ended with %v before its answer, inside its 5s deadline", err)
	case <-time.After(600 * time.Millisecond): // past the first deadline and its slack
	}
	peer.Write([]byte("b"))
	if err := within(t, w.done, "the second watch's end"); err != nil || string(w.got) != "b" {
		t.Fatalf("the second watch ended with %q, %v", w.got, err)
	}
}

// A read that fills the Read's buffer, taken by the Exchanger, may leave
// bytes in the socket with no edge to come for them: the exchange's end
// reads again, and the request behind is served.
func TestExchangeAfterAFullRead(t *testing.T) {
	_, peer, _, reads := exchangePair(t, false)
	full := "X" + strings.Repeat("f", 255) // exactly readLoop's buffer
	if _, err := peer.Write([]byte(full + "Xtwo")); err != nil {
		t.Fatal(err)
	}
	expectAnswer(t, peer, strings.ToUpper(full))
	expectAnswer(t, peer, "XTWO")
	expectNoRead(t, reads)
}
