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
		lived, up, err := s.streamOnce(ctx, connects)
		if ctx.Err() != nil {
			return
		}
		if up {
			connects++
			lastErr = ""
		}
		if !up {
			s.recordError(err)
			// Log a failing Marathon once, not every few seconds.
			if msg := err.Error(); msg != lastErr {
				s.log.Warn("cannot connect to the event stream; retrying", zap.Error(err))
				lastErr = msg
			} else {
				s.log.Debug("cannot connect to the event stream", zap.Error(err))
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
		}
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
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	idle := s.cfg.StreamIdleTimeout
	var timedOut atomic.Bool
	// One timer covers the wait for the response headers and then the
	// silence between bytes.
	timer := time.AfterFunc(idle, func() {
		timedOut.Store(true)
		cancel()
	})
	defer timer.Stop()

	resp, ep, err := s.client.openStream(ctx)
	if err != nil {
		if timedOut.Load() {
			err = fmt.Errorf("GET /v2/events at %s: no answer within %v", ep.redacted, idle)
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
	s.log.Info("connected to the event stream", fields...)
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
	err = errors.New(s.client.scrub(err.Error()))
	s.recordError(err)
	s.log.Warn("event stream disconnected; reconnecting", zap.String("url", ep.redacted),
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
