package fastconn

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pacer-lb/pacer/internal/testnet"
)

// bothResult is what one RelayBoth (or RelayBothFunc) ended with.
type bothResult struct {
	ab, ba RelayResult
	err    error
}

// relayStart starts relaying a and b and delivers the results once.
type relayStart func(a, b *Conn, pool *Pool) <-chan bothResult

// relayBothAsync runs one RelayBoth on a goroutine of its own.
func relayBothAsync(a, b *Conn, pool *Pool) <-chan bothResult {
	out := make(chan bothResult, 1)
	go func() {
		ab, ba, err := RelayBoth(a, b, pool)
		out <- bothResult{ab, ba, err}
	}()
	return out
}

// doneChan is a PairDone that sends the results.
type doneChan chan bothResult

func (d doneChan) PairDone(ab, ba RelayResult, err error) { d <- bothResult{ab, ba, err} }

// relayBothFunc runs one RelayBothFunc: no goroutine waits.
func relayBothFunc(a, b *Conn, pool *Pool) <-chan bothResult {
	out := make(doneChan, 1)
	RelayBothFunc(a, b, pool, out)
	return out
}

// bothWays runs test with a waiting goroutine (RelayBoth) and without
// (RelayBothFunc): both must behave the same.
func bothWays(t *testing.T, test func(t *testing.T, start relayStart)) {
	t.Run("RelayBoth", func(t *testing.T) { test(t, relayBothAsync) })
	t.Run("RelayBothFunc", func(t *testing.T) { test(t, relayBothFunc) })
}

func noReturn(t *testing.T, results <-chan bothResult, what string) {
	t.Helper()
	select {
	case r := <-results:
		t.Fatalf("%s: RelayBoth returned (%+v, %+v, %v); want it still waiting", what, r.ab, r.ba, r.err)
	default:
	}
}

// A request and its answer both go through the poller, each FIN is passed
// on, and RelayBoth returns once, after the second FIN, with every byte
// counted: the life of a one-request connection through the TCP plane.
func TestRelayBothCarriesAConnectionToItsEnd(t *testing.T) {
	bothWays(t, testRelayBothCarriesAConnectionToItsEnd)
}

func testRelayBothCarriesAConnectionToItsEnd(t *testing.T, start relayStart) {
	client, clientPeer := pair(t)
	backend, backendPeer := pair(t)
	results := start(client, backend, NewPool(1024))
	untilArmed(t, client)
	untilArmed(t, backend)

	var up, down int
	for i := range 50 {
		req := fmt.Appendf(nil, "request %d", i)
		clientPeer.Write(req)
		if got := readFull(t, backendPeer, len(req)); !bytes.Equal(got, req) {
			t.Fatalf("backend got %q, want %q", got, req)
		}
		resp := fmt.Appendf(nil, "answer to %d", i)
		backendPeer.Write(resp)
		if got := readFull(t, clientPeer, len(resp)); !bytes.Equal(got, resp) {
			t.Fatalf("client got %q, want %q", got, resp)
		}
		up, down = up+len(req), down+len(resp)
		noReturn(t, results, fmt.Sprintf("round %d", i))
	}

	// The backend's FIN reaches the client while the client may still
	// send: the poller passed it on, and nobody woke.
	backendPeer.CloseWrite()
	clientPeer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := clientPeer.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("client read %d, %v after the backend's FIN; want 0, EOF", n, err)
	}
	noReturn(t, results, "after the first FIN")
	clientPeer.Write([]byte("late"))
	readFull(t, backendPeer, 4)
	up += 4

	clientPeer.CloseWrite()
	var r bothResult
	select {
	case r = <-results:
	case <-time.After(5 * time.Second):
		t.Fatal("RelayBoth did not return after both FINs")
	}
	if r.err != nil || !r.ab.EOF || !r.ba.EOF || r.ab.Err != nil || r.ba.Err != nil || r.ab.Buf != nil || r.ba.Buf != nil {
		t.Fatalf("RelayBoth returned (%+v, %+v, %v); want both EOF, nothing left, no error", r.ab, r.ba, r.err)
	}
	if r.ab.Moved != int64(up) || r.ba.Moved != int64(down) {
		t.Fatalf("moved %d up and %d down, want %d and %d", r.ab.Moved, r.ba.Moved, up, down)
	}
}

// Bytes and FINs that arrived before RelayBoth was called (edge-triggered
// sockets report no new readiness for them) are relayed all the same.
// Both ways: with the sockets in the epoll instance already, whose edges
// the poller saw before any relay was armed, and with sockets not yet in
// it, which RelayBoth adds.
func TestRelayBothTakesWhatCameBefore(t *testing.T) { bothWays(t, testRelayBothTakesWhatCameBefore) }

func testRelayBothTakesWhatCameBefore(t *testing.T, start relayStart) {
	for i := range 100 {
		client, clientPeer := pair(t)
		backend, backendPeer := pair(t)
		if i%2 == 0 {
			// In the epoll instance: a read that waited. A loopback write
			// is in the peer's socket when it returns.
			for _, c := range []*Conn{client, backend} {
				c.SetReadDeadline(time.Now().Add(time.Millisecond))
				if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("read with nothing sent: %v", err)
				}
				c.SetReadDeadline(time.Time{})
			}
		}
		clientPeer.Write([]byte("request"))
		clientPeer.CloseWrite()
		backendPeer.Write([]byte("answer"))
		backendPeer.CloseWrite()
		results := start(client, backend, NewPool(1024))
		select {
		case r := <-results:
			if r.err != nil || !r.ab.EOF || !r.ba.EOF || r.ab.Moved != 7 || r.ba.Moved != 6 {
				t.Fatalf("round %d: RelayBoth returned (%+v, %+v, %v); want 7 and 6 bytes moved, both EOF", i, r.ab, r.ba, r.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: RelayBoth never saw what was already there", i)
		}
		if got := readFull(t, backendPeer, 7); string(got) != "request" {
			t.Fatalf("backend got %q", got)
		}
		if got := readFull(t, clientPeer, 6); string(got) != "answer" {
			t.Fatalf("client got %q", got)
		}
	}
}

// An answer that came with its FIN goes on with the FIN, in one segment, as
// HAProxy sends them: the client is woken once, and acknowledges both at
// once.
func TestRelayBothPassesTheLastBytesWithTheFIN(t *testing.T) {
	bothWays(t, testRelayBothPassesTheLastBytesWithTheFIN)
}

func testRelayBothPassesTheLastBytesWithTheFIN(t *testing.T, start relayStart) {
	client, clientPeer := pair(t)
	backend, backendPeer := pair(t)
	results := start(client, backend, NewPool(1024))
	untilArmed(t, client)
	untilArmed(t, backend)
	clientPeer.Write([]byte("request"))
	readFull(t, backendPeer, 7)

	before := testnet.SegmentsIn(t, clientPeer)
	answerAndClose(t, backendPeer, "answer")
	clientPeer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := io.ReadAll(clientPeer); string(got) != "answer" || err != nil {
		t.Fatalf("client read %q, %v; want the answer, then EOF", got, err)
	}
	if n := testnet.SegmentsIn(t, clientPeer) - before; n != 1 {
		t.Fatalf("the answer and the FIN reached the client in %d segments, want 1", n)
	}

	clientPeer.CloseWrite()
	select {
	case r := <-results:
		if r.err != nil || !r.ab.EOF || !r.ba.EOF || r.ab.Moved != 7 || r.ba.Moved != 6 {
			t.Fatalf("RelayBoth returned (%+v, %+v, %v); want 7 and 6 bytes moved, both EOF", r.ab, r.ba, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("RelayBoth did not return after both FINs")
	}
}

// When the last bytes before a FIN find the destination full, they go back
// to the owner with the FIN still unread: the owner's write sends them (and
// whatever part the relay's held write left in the socket), and its own
// read finds the FIN. Nothing is lost, reordered or held back.
func TestRelayBothLastBytesAtFullDestination(t *testing.T) {
	bothWays(t, testRelayBothLastBytesAtFullDestination)
}

func testRelayBothLastBytesAtFullDestination(t *testing.T, start relayStart) {
	client, clientPeer := pair(t)
	backend, backendPeer := pair(t)
	// Fill the way to the client, which reads nothing yet; a fixed send
	// buffer stays full.
	fixSendBuffer(t, client, 4096)
	client.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	filler, err := client.Write(bytes.Repeat([]byte("f"), 16<<20))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("filling the client: %d bytes, %v; want a full socket", filler, err)
	}
	client.SetWriteDeadline(time.Time{})

	results := start(client, backend, NewPool(1024))
	untilArmed(t, backend)
	answerAndClose(t, backendPeer, "answer")

	var r bothResult
	select {
	case r = <-results:
	case <-time.After(5 * time.Second):
		t.Fatal("RelayBoth did not hand back the bytes the client could not take")
	}
	if r.err != nil || r.ba.Err != nil || r.ba.EOF || r.ba.Buf == nil || r.ba.Moved+int64(r.ba.N) != 6 {
		t.Fatalf("RelayBoth returned (%+v, %+v, %v); want the answer's unsent part handed back, its FIN unread", r.ab, r.ba, r.err)
	}
	got := make(chan []byte, 1)
	go func() {
		clientPeer.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(clientPeer)
		got <- b
	}()
	// The owner's side: write what came back, then copy on to the FIN.
	if _, err := client.Write((*r.ba.Buf)[:r.ba.N]); err != nil {
		t.Fatal(err)
	}
	backend.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := backend.Read(make([]byte, 16)); n != 0 || err != io.EOF {
		t.Fatalf("backend read %d, %v; want its FIN", n, err)
	}
	client.CloseWrite()
	b := <-got
	if len(b) != filler+6 || string(b[filler:]) != "answer" || bytes.Count(b[:filler], []byte("f")) != filler {
		t.Fatalf("client got %d bytes ending %q; want %d filler bytes, then the answer", len(b), b[max(0, len(b)-6):], filler)
	}
}

// answerAndClose sends msg and the FIN from peer in one segment, as a
// backend that answers and closes at once does: held with MSG_MORE, sent
// by the shutdown.
func answerAndClose(t *testing.T, peer *net.TCPConn, msg string) {
	t.Helper()
	rc, err := peer.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Write(func(fd uintptr) bool {
		serr = syscall.Sendto(int(fd), []byte(msg), syscall.MSG_MORE, nil)
		return true
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	if err := peer.CloseWrite(); err != nil {
		t.Fatal(err)
	}
}

// A read that fills the buffer is handed back, with the direction's FIN
// state, so that the caller can carry on with its own copy (a splice).
func TestRelayBothHandsBackFullReads(t *testing.T) { bothWays(t, testRelayBothHandsBackFullReads) }

func testRelayBothHandsBackFullReads(t *testing.T, start relayStart) {
	client, clientPeer := pair(t)
	backend, backendPeer := pair(t)
	results := start(client, backend, NewPool(1024))
	untilArmed(t, backend)
	clientPeer.CloseWrite() // one direction ends first
	untilFIN(t, client)
	backendPeer.Write(bytes.Repeat([]byte("y"), 4096))
	r := within(t, results, "RelayBoth's end at a full buffer")
	if r.err != nil || !r.ab.EOF || r.ba.EOF || r.ba.N != 1024 || r.ba.Buf == nil || r.ba.Moved != 0 {
		t.Fatalf("RelayBoth returned (%+v, %+v, %v); want the full buffer of the answer and the request's EOF", r.ab, r.ba, r.err)
	}
	// The backend saw the client's FIN, passed on by the poller.
	backendPeer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := backendPeer.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("backend read %d, %v; want the client's FIN", n, err)
	}
	// A second call relays only the direction still open.
	results = start(client, backend, NewPool(1024))
	r2 := within(t, results, "the second RelayBoth's end at a full buffer")
	if r2.err != nil || r2.ba.N != 1024 {
		t.Fatalf("second RelayBoth returned (%+v, %+v, %v); want the next full buffer", r2.ab, r2.ba, r2.err)
	}
}

// untilFIN waits until c's peer's FIN reached its pair relay.
func untilFIN(t *testing.T, c *Conn) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !c.reof.Load(); {
		if time.Now().After(deadline) {
			t.Fatal("the FIN never reached the relay")
		}
		time.Sleep(time.Millisecond)
	}
}

// A reset is returned as the direction's error; a read deadline on the
// first Conn and its Close end the wait with what moved so far.
func TestRelayBothErrorsDeadlineAndClose(t *testing.T) {
	bothWays(t, testRelayBothErrorsDeadlineAndClose)
}

func testRelayBothErrorsDeadlineAndClose(t *testing.T, start relayStart) {
	client, clientPeer := pair(t)
	backend, backendPeer := pair(t)
	results := start(client, backend, NewPool(1024))
	untilArmed(t, backend)
	backendPeer.SetLinger(0)
	backendPeer.Close()
	r := within(t, results, "RelayBoth's end at the reset")
	if r.ba.Err == nil || r.ab.Err != nil || r.err != nil {
		t.Fatalf("RelayBoth after a reset returned (%+v, %+v, %v); want the backend direction's error", r.ab, r.ba, r.err)
	}

	client2, clientPeer2 := pair(t)
	backend2, backendPeer2 := pair(t)
	results = start(client2, backend2, NewPool(1024))
	untilArmed(t, client2)
	clientPeer2.Write([]byte("hello"))
	readFull(t, backendPeer2, 5)
	client2.SetReadDeadline(time.Now())
	r = within(t, results, "RelayBoth's end at the deadline")
	if !errors.Is(r.err, os.ErrDeadlineExceeded) || r.ab.Moved != 5 {
		t.Fatalf("RelayBoth at its deadline returned (%+v, %+v, %v); want 5 bytes moved, a deadline error", r.ab, r.ba, r.err)
	}
	client2.SetReadDeadline(time.Time{})
	results = start(client2, backend2, NewPool(1024))
	untilArmed(t, client2)
	client2.Close()
	if r := within(t, results, "RelayBoth's end at Close"); !errors.Is(r.err, net.ErrClosed) {
		t.Fatalf("RelayBoth cut short by Close: %v; want net.ErrClosed", r.err)
	}
	_ = clientPeer
}

// Conns outside fastconn's poller are refused, for the caller's own copy.
func TestRelayBothOutsideThePoller(t *testing.T) {
	ln, addr := listen(t, "tcp", "127.0.0.1:0")
	a, _ := dialPairWith(t, ln, addr, dialNew)
	b, _ := dialPairWith(t, ln, addr, dialNew)
	if _, _, err := RelayBoth(a, b, NewPool(1024)); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("RelayBoth of wrapped TCPConns: %v; want errors.ErrUnsupported", err)
	}
	select {
	case r := <-relayBothFunc(a, b, NewPool(1024)):
		if !errors.Is(r.err, errors.ErrUnsupported) {
			t.Fatalf("RelayBothFunc of wrapped TCPConns: %v; want errors.ErrUnsupported", r.err)
		}
	default:
		t.Fatal("RelayBothFunc of wrapped TCPConns did not end at once")
	}
}

// Without a waiting goroutine, the end of a wait that a Close (or a
// deadline) caused must not run on the goroutine that closed: that one may
// hold a lock the end needs, as a proxy closing every connection of a port
// under the port's lock does.
func TestRelayBothFuncEndNotOnTheClosersGoroutine(t *testing.T) {
	client, _ := pair(t)
	backend, _ := pair(t)
	var mu sync.Mutex
	results := make(chan bothResult, 1)
	RelayBothFunc(client, backend, NewPool(1024), pairDoneFunc(func(ab, ba RelayResult, err error) {
		mu.Lock() // the closer's lock
		defer mu.Unlock()
		results <- bothResult{ab, ba, err}
	}))
	untilArmed(t, client)
	mu.Lock()
	locked := true
	defer func() {
		if locked {
			mu.Unlock() // after a failure, so that the stuck end can finish
		}
	}()
	closed := make(chan struct{})
	go func() {
		client.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close never returned while the closer held its lock: the end ran on the closer's goroutine")
	}
	noReturn(t, results, "while the closer holds its lock")
	locked = false
	mu.Unlock()
	select {
	case r := <-results:
		if !errors.Is(r.err, net.ErrClosed) {
			t.Fatalf("RelayBothFunc cut short by Close: %v; want net.ErrClosed", r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the end of a wait cut short by Close never came")
	}
}

// pairDoneFunc is a PairDone made of a function.
type pairDoneFunc func(ab, ba RelayResult, err error)

func (f pairDoneFunc) PairDone(ab, ba RelayResult, err error) { f(ab, ba, err) }

// Many pairs at once, as a TCP proxy runs them, each ended its own way:
// both FINs, a backend's reset, the owner's Close, the owner's deadline.
// Every pair's wait ends exactly once, with what ended it, and a pair that
// ran to its FINs moved every byte.
func TestManyPairsEndOnce(t *testing.T) { bothWays(t, testManyPairsEndOnce) }

func testManyPairsEndOnce(t *testing.T, start relayStart) {
	const pairs, rounds = 48, 100
	pool := NewPool(1024)
	var wg sync.WaitGroup
	errs := make(chan error, pairs)
	for i := range pairs {
		client, cpeer := pair(t)
		backend, bpeer := pair(t)
		results := start(client, backend, pool)
		go echo(bpeer)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent, err := echoRounds(cpeer, rounds, fmt.Sprintf("pair %d", i))
			if err != nil {
				errs <- err
				return
			}
			var want func(bothResult) bool
			switch i % 4 {
			case 0:
				cpeer.CloseWrite()
				want = func(r bothResult) bool {
					return r.err == nil && r.ab.EOF && r.ba.EOF && r.ab.Moved == int64(sent) && r.ba.Moved == int64(sent)
				}
			case 1:
				bpeer.SetLinger(0)
				bpeer.Close()
				want = func(r bothResult) bool { return r.ba.Err != nil || r.err != nil }
			case 2:
				client.Close()
				want = func(r bothResult) bool { return errors.Is(r.err, net.ErrClosed) }
			case 3:
				client.SetReadDeadline(time.Now())
				want = func(r bothResult) bool { return errors.Is(r.err, os.ErrDeadlineExceeded) }
			}
			select {
			case r := <-results:
				if !want(r) {
					errs <- fmt.Errorf("pair %d (end %d): (%+v, %+v, %v)", i, i%4, r.ab, r.ba, r.err)
				}
			case <-time.After(10 * time.Second):
				errs <- fmt.Errorf("pair %d (end %d): the wait never ended", i, i%4)
				return
			}
			select {
			case r := <-results:
				errs <- fmt.Errorf("pair %d: a second end (%+v, %+v, %v)", i, r.ab, r.ba, r.err)
			default:
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// Readiness that comes while a pair's owner runs a relay itself (pump, as
// RelayBoth starts) is not lost. The test holds the owner's run of the
// backend's relay at its worst moment: its read found nothing, and it has
// not armed the relay yet. The answer comes then, and the poller sees it
// while the relay is not armed. Before rpend the poller woke the backend
// socket's waiter, which nobody waits on, and the answer sat unread until
// the owner's deadline.
func TestRelayBothPumpRacingTheAnswer(t *testing.T) {
	client, clientPeer := pair(t)
	backend, backendPeer := pair(t)
	pool := NewPool(1024)
	// A first exchange puts both sockets in the poller, as on a keep-alive
	// connection's second request.
	results := relayBothAsync(client, backend, pool)
	untilArmed(t, backend)
	clientPeer.Write([]byte("q1"))
	readFull(t, backendPeer, 2)
	backendPeer.Write([]byte("a1"))
	readFull(t, clientPeer, 2)
	clientPeer.SetLinger(0)
	client.SetReadDeadline(time.Now())
	if r := within(t, results, "the first RelayBoth's end"); !errors.Is(r.err, os.ErrDeadlineExceeded) {
		t.Fatalf("first RelayBoth ended with %v", r.err)
	}
	client.SetReadDeadline(time.Time{})

	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hook := func(c *Conn) {
		if c == backend {
			once.Do(func() {
				close(held)
				<-release
			})
		}
	}
	testHookRearm.Store(&hook)
	t.Cleanup(func() { testHookRearm.Store(nil) })
	releaseOnce := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseOnce)
	_ = client.SetReadDeadline(time.Now().Add(3 * time.Second))
	results = relayBothAsync(client, backend, pool)
	select {
	case <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("the owner never ran the backend's relay")
	}
	// The poller has seen the answer when it asked the owner to read again
	// (rpend), or, before that existed, when it woke the backend socket's
	// waiter instead.
	woken := make(chan struct{}, 1)
	wakeHook := func(w *waiter) {
		if w == &backend.pd.r {
			select {
			case woken <- struct{}{}:
			default:
			}
		}
	}
	testHookWakeToken.Store(&wakeHook)
	t.Cleanup(func() { testHookWakeToken.Store(nil) })
	backendPeer.Write([]byte("a2")) // the answer, while the relay is not armed
	for deadline := time.Now().Add(5 * time.Second); !backend.rpend.Load(); time.Sleep(time.Millisecond) {
		select {
		case <-woken:
			deadline = time.Time{}
		default:
		}
		if deadline.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the poller never saw the answer")
		}
	}
	releaseOnce()
	got := readFull(t, clientPeer, 2)
	if string(got) != "a2" {
		t.Fatalf("client got %q", got)
	}
	_ = client.SetReadDeadline(time.Now())
	within(t, results, "the second RelayBoth's end")
}
