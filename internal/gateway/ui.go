package gateway

import (
	_ "embed"
	"net/http"
)

//go:embed ui.html
var uiPage []byte

// handleUI serves the admin web UI: one self-contained page that polls
// /api/pools.
func (s *Server) handleUI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'")
	_, _ = w.Write(uiPage)
}
