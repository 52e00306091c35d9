// Package hopheader names the HTTP header fields that describe one
// connection rather than the message (RFC 9110 section 7.6.1), which a
// proxy must not pass on and a recorded response must not keep.
package hopheader

import "net/http"

// Names are the hop-by-hop fields, in Go's canonical form.
var Names = [...]string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// Is reports whether the canonical header key k is hop-by-hop.
func Is(k string) bool {
	for _, h := range Names {
		if k == h {
			return true
		}
	}
	return false
}

// Remove deletes every hop-by-hop field from h.
func Remove(h http.Header) {
	for _, k := range Names {
		delete(h, k)
	}
}
