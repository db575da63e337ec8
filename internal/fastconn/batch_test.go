package fastconn

import (
	"net"
	"sync"
	"syscall"
	"testing"
)

// samePoller makes pairs until it has n Conns whose sockets are in one
// poller, with their peers.
func samePoller(t *testing.T, n int) ([]*Conn, []*net.TCPConn) {
	t.Helper()
	byPoller := map[*poller][]int{}
	var conns []*Conn
	var peers []*net.TCPConn
	for range 64 {
		c, peer := pair(t)
		p, err := getPoller(c.pd.fd)
		if err != nil {
			t.Fatal(err)
		}
		conns, peers = append(conns, c), append(peers, peer)
		byPoller[p] = append(byPoller[p], len(conns)-1)
		if idx := byPoller[p]; len(idx) == n {
			var cs []*Conn
			var ps []*net.TCPConn
			for _, i := range idx {
				cs, ps = append(cs, conns[i]), append(ps, peers[i])
			}
			return cs, ps
		}
	}
	t.Fatalf("no %d sockets in one poller among 64", n)
	return nil, nil
}

// A batch that stops one relay of a pair (the backend reset) while it
// holds the pair's other relay (the client sent bytes in the same
// epoll_pwait) ends the pair: the owner's wakeup, whose end disarms both
// relays, waits until the batch let go of the other. Woken at once, on the
// poller's own goroutine, it waited for that relay forever (a hang in
// proxy/httpproxy's tests under -race).
func TestBatchEndsAPairWhileHoldingItsOtherRelay(t *testing.T) {
	bothWays(t, func(t *testing.T, start relayStart) {
		conns, peers := samePoller(t, 3)
		client, backend, trigger := conns[0], conns[1], conns[2]
		clientPeer, backendPeer, triggerPeer := peers[0], peers[1], peers[2]
		results := start(client, backend, NewPool(1024))
		untilArmed(t, client)
		untilArmed(t, backend)

		// Hold the poller in a batch for the trigger's socket, while the
		// backend's reset and then the client's bytes come: the next
		// epoll_pwait reports both, in that order.
		held, release := make(chan struct{}), make(chan struct{})
		var once sync.Once
		hook := func(events []syscall.EpollEvent) {
			for _, ev := range events {
				if int(ev.Fd) == trigger.pd.fd {
					once.Do(func() { close(held); <-release })
				}
			}
		}
		testHookBatch.Store(&hook)
		defer testHookBatch.Store(nil)
		read := make(chan error, 1)
		go func() {
			_, err := trigger.Read(make([]byte, 8))
			read <- err
		}()
		untilWatched(t, trigger.pd)
		triggerPeer.Write([]byte("go"))
		within(t, held, "the trigger's batch")
		backendPeer.SetLinger(0)
		backendPeer.Close()
		clientPeer.Write([]byte("request"))
		close(release)

		r := within(t, results, "the pair's end at the backend's reset")
		if r.ba.Err == nil || r.err != nil {
			t.Fatalf("the pair ended with (%+v, %+v, %v); want the backend direction's error", r.ab, r.ba, r.err)
		}
		if err := within(t, read, "the trigger's read"); err != nil {
			t.Fatal(err)
		}
	})
}
