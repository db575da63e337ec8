package marathon

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// A stream that stayed up this long resets the reconnect backoff. Shorter
// lives (Marathon accepts and closes at once while a new leader prepares)
// keep backing off.
const stableStream = 10 * time.Second

// connNotice tells the state goroutine about the event stream.
type connNotice struct {
	up     bool
	failed bool // a connection attempt failed (as opposed to a stream ending)
}

// streamLoop keeps one event stream open, reconnecting with backoff, until
// ctx is done. It hands events to the queue and never waits on the state
// goroutine for longer than a channel send.
func (s *Source) streamLoop(ctx context.Context) {
	bo := backoff{min: s.cfg.BackoffMin, max: s.cfg.BackoffMax}
	var lastErr string
	for connects := 0; ; {
		var lived time.Duration
		var up bool
		err := s.client.findLeader(ctx)
		if err == nil {
			lived, up, err = s.streamOnce(ctx, connects)
		}
		if ctx.Err() != nil {
			return
		}
		if up {
			connects++
			lastErr = ""
		}
		if !up && errors.Is(err, errLeaderChanged) {
			select { // connect to the new leader now
			case <-s.kick:
			default:
			}
			continue
		}
		if !up {
			s.recordError(err)
			// Log a failing Marathon once, not every few seconds.
			if msg := err.Error(); msg == lastErr {
				s.log.Debug("cannot connect to the event stream", zap.Error(err))
			} else if errors.Is(err, errNoLeaderYet) {
				// Every start with --marathon zk://, for a moment: not a
				// warning (ZooKeeper's own trouble is warned of there).
				s.log.Info("waiting for ZooKeeper to name the Marathon leader")
				lastErr = msg
			} else {
				s.log.Warn("cannot connect to the event stream; retrying", zap.Error(err))
				lastErr, s.downSaid = msg, true
			}
			s.notify(ctx, connNotice{failed: true})
		}
		if lived >= stableStream {
			bo.reset()
		}
		t := time.NewTimer(bo.next())
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-s.kick:
			// The leader changed: try it now.
			t.Stop()
			bo.reset()
		}
	}
}

// errLeaderChanged ends a stream attempt whose leader is no longer the one
// Config.Leader reports.
var errLeaderChanged = errors.New("the Marathon leader changed")

// setLeader records what Config.Leader reports and, when it changed, moves
// the event stream to it (the reconnect brings a full resync).
func (s *Source) setLeader(ctx context.Context, raw string, initial bool) {
	changed, err := s.client.setHook(raw)
	if err != nil {
		s.recordError(err)
		s.log.Warn("ignoring the leader address from Config.Leader", zap.Error(err))
		return
	}
	if !changed {
		return
	}
	if initial {
		s.log.Info("Marathon leader from Config.Leader", zap.String("leader", s.client.current().redacted))
		return
	}
	if raw == "" {
		s.log.Info("Marathon leader unknown; using the configured URLs")
		return // a stream to the old leader ends by itself if it went away
	}
	s.log.Info("Marathon leader changed; reconnecting the event stream", zap.String("leader", s.client.current().redacted))
	s.newFetchEpoch(ctx, errLeaderChanged)
	s.mu.Lock()
	cancel := s.streamCancel
	s.mu.Unlock()
	if cancel != nil {
		cancel(errLeaderChanged)
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// watchLeader follows Config.Leader until ctx is done.
func (s *Source) watchLeader(ctx context.Context, changed <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
		var u string
		u, changed = s.cfg.Leader()
		s.setLeader(ctx, u, false)
	}
}

func (s *Source) notify(ctx context.Context, n connNotice) {
	select {
	case s.conn <- n:
	case <-ctx.Done():
	}
}

// streamOnce opens the stream and reads it until it fails. up says whether
// the subscription was established (a 200 arrived).
func (s *Source) streamOnce(parent context.Context, connects int) (lived time.Duration, up bool, err error) {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	s.mu.Lock()
	s.streamCancel = cancel
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.streamCancel = nil
		s.mu.Unlock()
	}()
	idle := s.cfg.StreamIdleTimeout
	var timedOut atomic.Bool
	// One timer covers the wait for the response headers and then the
	// silence between bytes.
	timer := time.AfterFunc(idle, func() {
		timedOut.Store(true)
		cancel(errNoAnswer)
	})
	defer timer.Stop()

	resp, ep, err := s.client.openStream(ctx)
	if err != nil {
		switch {
		case timedOut.Load():
			err = fmt.Errorf("GET /v2/events at %s: no answer within %v", ep.redacted, idle)
		case errors.Is(context.Cause(ctx), errLeaderChanged) && parent.Err() == nil:
			err = errLeaderChanged
		}
		return 0, false, err
	}
	defer resp.Body.Close()
	timer.Reset(idle)
	start := time.Now()

	s.mu.Lock()
	s.status.Connected = true
	if connects > 0 {
		s.status.Reconnects++
	}
	s.mu.Unlock()
	fields := []zap.Field{zap.String("url", ep.redacted)}
	if resp.Request != nil && resp.Request.URL != nil && resp.Request.URL.Host != ep.base.Host {
		// Followed a redirect to the leader (Marathon 1.7+).
		fields = append(fields, zap.String("leader", resp.Request.URL.Scheme+"://"+resp.Request.URL.Host))
	}
	connected := s.log.Info
	if s.flapErr != "" && !s.downSaid {
		connected = s.log.Debug // the same flap again, its end not said
	}
	s.downSaid = false
	connected("connected to the event stream", fields...)
	s.notify(parent, connNotice{up: true})

	p := newSSEReader(bufio.NewReaderSize(&activityReader{r: resp.Body, timer: timer, idle: idle}, 64<<10))
	for {
		ev, rerr := p.Next()
		if errors.Is(rerr, errEventTooLarge) {
			s.countDecodeError()
			s.log.Warn("skipped an oversize event; resyncing", zap.Error(rerr))
			s.queue.Lost()
			continue
		}
		if rerr != nil {
			err = rerr
			break
		}
		s.mu.Lock()
		s.status.Events++
		s.mu.Unlock()
		// The reader reuses its buffer: the queue gets a copy.
		s.queue.Push(bytes.Clone(ev.Data))
	}
	lived = time.Since(start)
	switch {
	case timedOut.Load():
		err = fmt.Errorf("event stream silent for %v (no heartbeat)", idle)
	case errors.Is(err, io.EOF):
		err = errors.New("event stream closed by Marathon")
	}
	s.mu.Lock()
	s.status.Connected = false
	s.mu.Unlock()
	if parent.Err() != nil {
		// Shutting down (the parent context is done): not an error.
		return lived, true, nil
	}
	if errors.Is(context.Cause(ctx), errLeaderChanged) {
		s.log.Info("event stream closed: the Marathon leader changed", zap.String("url", ep.redacted),
			zap.Duration("lived", lived.Round(time.Millisecond)))
		s.notify(parent, connNotice{})
		return lived, true, nil
	}
	err = errors.New(s.client.scrub(err.Error()))
	s.recordError(err)
	warn := true
	switch msg := err.Error(); {
	case lived >= stableStream:
		s.flapErr = ""
	case msg == s.flapErr:
		warn = false // the same flap again: see Source.flapErr
	default:
		s.flapErr = msg
	}
	disconnected := s.log.Debug
	if warn {
		disconnected, s.downSaid = s.log.Warn, true
	}
	disconnected("event stream disconnected; reconnecting", zap.String("url", ep.redacted),
		zap.Duration("lived", lived.Round(time.Millisecond)), zap.Error(err))
	s.notify(parent, connNotice{})
	return lived, true, err
}

// activityReader resets the idle timer on every byte, heartbeats included.
type activityReader struct {
	r     io.Reader
	timer *time.Timer
	idle  time.Duration
}

func (a *activityReader) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if n > 0 {
		a.timer.Reset(a.idle)
	}
	return n, err
}
