package admin

import (
	_ "embed"
	"net/http"
)

// statusHTML renders /v1/services in the browser and refreshes itself every
// two seconds; it has no external assets, so it works on an air-gapped agent.
//
//go:embed status.html
var statusHTML []byte

func (s *Server) statusPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(statusHTML)
}
