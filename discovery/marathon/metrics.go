package marathon

// Counters the source keeps for metrics, beside the discovery.SourceStatus
// fields (LastSync, Events, Resyncs, Reconnects, DecodeErrors).

// maxEventTypes bounds EventsByType: Marathon has about thirty event
// types, and a broken peer must not grow the map without limit.
const maxEventTypes = 64

// EventsByType returns how many events of each eventType the source has
// read (a copy; safe to call from any goroutine), for metrics. Event types
// beyond the first 64 seen are counted under "other".
func (s *Source) EventsByType() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]uint64, len(s.evByType))
	for k, v := range s.evByType {
		out[k] = v
	}
	return out
}

func (s *Source) countEvent(typ string) {
	if typ == "" {
		typ = "unknown"
	}
	s.mu.Lock()
	if _, ok := s.evByType[typ]; !ok && len(s.evByType) >= maxEventTypes {
		typ = "other"
	}
	s.evByType[typ]++
	s.mu.Unlock()
}
