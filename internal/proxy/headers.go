package proxy

import (
	"net"
	"net/http"
	"net/textproto"
	"strings"

	"github.com/sluice-ai/sluice/internal/hopheader"
)

// copyHeader copies src into dst, sharing the value slices (neither side
// mutates them afterwards) and leaving out hop-by-hop headers and those the
// Connection header names.
func copyHeader(dst, src http.Header) {
	conn := src["Connection"]
	for k, vv := range src {
		if hopheader.Is(k) || (len(conn) > 0 && namedIn(conn, k)) {
			continue
		}
		dst[k] = vv
	}
}

// namedIn reports whether the Connection header values conn list key.
func namedIn(conn []string, key string) bool {
	for _, v := range conn {
		for f := range strings.SplitSeq(v, ",") {
			if textproto.TrimString(f) != "" && strings.EqualFold(textproto.TrimString(f), key) {
				return true
			}
		}
	}
	return false
}

// wantsTrailers reports whether the client asked for trailers (gRPC does),
// the one TE value a proxy passes on.
func wantsTrailers(h http.Header) bool {
	for _, v := range h["Te"] {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(textproto.TrimString(f), "trailers") {
				return true
			}
		}
	}
	return false
}

// clientIP is the remote address of r without its port.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
