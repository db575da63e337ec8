package discovery

import "time"

// SourceStatus is what a source reports about its own health, for /healthz,
// /v1/services, metrics and the status page. It never carries credentials.
type SourceStatus struct {
	Name string `json:"name"`
	// Endpoint is where the source reads from, with any credentials removed.
	Endpoint string `json:"endpoint"`
	// Synced is true once the source delivered its first complete view.
	Synced bool `json:"synced"`
	// Connected is true while the source's live feed (event stream, session) is up.
	Connected bool `json:"connected"`
	// Behind, when set, says why the table lags the source although its
	// feed is up, since BehindSince: Marathon's snapshot failing, which
	// holds back the events that wait for it.
	Behind       string    `json:"behind,omitempty"`
	BehindSince  time.Time `json:"behind_since,omitzero"`
	LastSync     time.Time `json:"last_sync,omitzero"`
	LastError    string    `json:"last_error,omitempty"`
	ErrorAt      time.Time `json:"last_error_at,omitzero"`
	Events       uint64    `json:"events"`
	Resyncs      uint64    `json:"resyncs"`
	Reconnects   uint64    `json:"reconnects"`
	DecodeErrors uint64    `json:"decode_errors"`
	// EventsByType counts events by type, for sources that have types.
	EventsByType map[string]uint64 `json:"events_by_type,omitempty"`
}

// StatusReporter is implemented by every source.
type StatusReporter interface {
	Status() SourceStatus
}
