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

// maxEventTypeLen bounds one event type name; Marathon's longest,
// "unknown_instance_terminated_event", has 33 characters.
const maxEventTypeLen = 48

func (s *Source) countEvent(typ string) {
	typ = eventTypeKey(typ)
	s.mu.Lock()
	if _, ok := s.evByType[typ]; !ok && len(s.evByType) >= maxEventTypes {
		typ = "other"
	}
	s.evByType[typ]++
	s.mu.Unlock()
}

// eventTypeKey is the key an event type is counted under: the type itself
// when it looks like one of Marathon's (lower-case letters, digits and '_'),
// else "other". The type comes from the wire and becomes a metric label:
// a peer sending megabyte-long or binary names must not make every scrape
// carry them, nor the map hold them for the life of the process.
func eventTypeKey(typ string) string {
	if typ == "" {
		return "unknown"
	}
	if len(typ) > maxEventTypeLen {
		return "other"
	}
	for i := 0; i < len(typ); i++ {
		if c := typ[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return "other"
		}
	}
	return typ
}
