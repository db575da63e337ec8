package admin

import (
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
)

// minResyncGap is the least time between two resyncs POST /v1/resync
// starts. Each one is a full GET /v2/apps of every app and task, which is
// heavy on Marathon, and the admin listener answers anyone who reaches it:
// without a floor, a loop of POSTs (a script gone wrong, or anyone on the
// network) keeps Marathon serving full snapshots back to back, times the
// number of pacers. A request within the gap is not refused: one resync is
// scheduled at the gap's end, so a change made after the last resync
// started is still picked up.
const minResyncGap = 5 * time.Second

// resyncLimiter spaces the resyncs that POST /v1/resync starts.
type resyncLimiter struct {
	gap time.Duration

	mu        sync.Mutex
	last      time.Time   // when the last resync was started
	scheduled *time.Timer // the resync waiting for the gap's end, if any
	stopped   bool
}

// request starts a resync now, or schedules one at the end of the gap if
// none is scheduled yet. It returns how long until the resync starts.
func (l *resyncLimiter) request(resync func()) time.Duration {
	l.mu.Lock()
	now := time.Now()
	wait := l.last.Add(l.gap).Sub(now)
	switch {
	case l.stopped:
		l.mu.Unlock()
		return 0
	case l.scheduled != nil:
		l.mu.Unlock()
		return max(wait, 0)
	case l.last.IsZero() || wait <= 0:
		l.last = now
		l.mu.Unlock()
		resync()
		return 0
	}
	l.scheduled = time.AfterFunc(wait, func() {
		l.mu.Lock()
		if l.stopped {
			l.mu.Unlock()
			return
		}
		l.scheduled = nil
		l.last = time.Now()
		l.mu.Unlock()
		resync()
	})
	l.mu.Unlock()
	return wait
}

// stop cancels a scheduled resync; later requests start none.
func (l *resyncLimiter) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	if l.scheduled != nil {
		l.scheduled.Stop()
	}
}

func (s *Server) resync(w http.ResponseWriter, r *http.Request) {
	if s.deps.Resync == nil {
		http.Error(w, "no source to resync", http.StatusNotImplemented)
		return
	}
	wait := s.resyncs.request(s.deps.Resync)
	if wait == 0 {
		s.log.Info("resync requested", zap.String("remote", r.RemoteAddr))
		writeJSON(w, http.StatusAccepted, map[string]string{"status": "resync requested"})
		return
	}
	s.log.Debug("resync requested within the minimum gap; scheduled", zap.String("remote", r.RemoteAddr), zap.Duration("in", wait))
	writeJSON(w, http.StatusAccepted, map[string]string{"status": "resync scheduled in " + wait.Round(time.Millisecond).String() + " (at most one every " + s.resyncs.gap.String() + ")"})
}
