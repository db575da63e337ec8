package dnsserver

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"time"

	"go.uber.org/zap"
)

// TCP limits.
const (
	// tcpIdleTimeout closes a connection that sends no query for this long
	// (RFC 7766 6.2.3 suggests seconds, not minutes).
	tcpIdleTimeout = 10 * time.Second
	// tcpIOTimeout bounds reading the rest of a query once its length has
	// arrived, and writing an answer.
	tcpIOTimeout = 5 * time.Second
	// maxTCPConns bounds open connections; more are closed on accept.
	maxTCPConns = 1024
	// maxTCPQueries is how many queries one connection may send.
	maxTCPQueries = 1000
	// maxTCPQuery is the longest query read over TCP; a longer one closes
	// the connection. A question and an OPT record with padding or a cookie
	// take a few hundred bytes; UDP drops queries past the same length
	// (udpSlot).
	maxTCPQuery = 4096
)

// serveTCP accepts connections until the listener is closed.
func (s *Server) serveTCP(l net.Listener, st *counters) {
	defer s.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("tcp accept", zap.Error(err))
			time.Sleep(10 * time.Millisecond) // EMFILE and friends: do not spin
			continue
		}
		s.mu.Lock()
		if s.stopped {
			s.mu.Unlock()
			c.Close()
			continue
		}
		if len(s.conns) >= s.maxConns {
			// Clients that retry over TCP after a truncated answer get
			// nothing here: count it, and say so at most once a minute.
			st.tcpRejected.Add(1)
			if now := time.Now(); now.Sub(s.rejected) >= time.Minute {
				s.rejected = now
				s.log.Warn("DNS over TCP: connection limit reached; closing new connections unanswered", zap.Int("limit", s.maxConns))
			}
			s.mu.Unlock()
			c.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c, st)
	}
}

// serveConn answers queries on one connection, in order, until the client
// closes it, goes idle, or sends maxTCPQueries. Between queries a
// connection holds only its small query buffer: the worker, with its 64 KB
// answer buffer, comes from a pool for the time one query is answered, so
// that maxTCPConns idle or slow connections do not hold 128 KB each.
func (s *Server) serveConn(c net.Conn, st *counters) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	in := make([]byte, maxTCPQuery)
	for range maxTCPQueries {
		c.SetReadDeadline(time.Now().Add(tcpIdleTimeout))
		if _, err := io.ReadFull(c, in[:2]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(in))
		if n > maxTCPQuery {
			st.dropped.Add(1)
			return
		}
		c.SetReadDeadline(time.Now().Add(tcpIOTimeout))
		if _, err := io.ReadFull(c, in[:n]); err != nil {
			return
		}
		if !s.answerTCP(c, in[:n]) {
			return
		}
	}
}

// answerTCP answers one query on c with a pooled worker, and reports
// whether the connection may go on.
func (s *Server) answerTCP(c net.Conn, query []byte) bool {
	w := s.tcpWorkers.Get().(*worker)
	defer s.tcpWorkers.Put(w)
	resp := w.handle(query, true)
	if resp == nil {
		return false // a response or garbage too short for a header
	}
	// resp sits 2 bytes into w.out: write the prefix and the answer at once.
	out := w.out[:2+len(resp)]
	binary.BigEndian.PutUint16(out, uint16(len(resp)))
	c.SetWriteDeadline(time.Now().Add(tcpIOTimeout))
	if _, err := c.Write(out); err != nil {
		s.log.Debug("tcp write", zap.Stringer("client", c.RemoteAddr()), zap.Error(err))
		return false
	}
	return true
}
