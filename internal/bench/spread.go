package bench

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync/atomic"
)

// Spread is a RoundTripper that sends successive requests to the next of
// several servers in turn, the way clients behind DNS round robin spread
// over a set of gateways: each request's scheme and host are replaced by
// the next target's (its path and query are kept). Use it as
// Config.Transport, with Config.URL naming any one of the targets.
type Spread struct {
	targets []*url.URL
	next    atomic.Uint64
	// Transport sends the rewritten requests. Nil: http.DefaultTransport.
	Transport http.RoundTripper
}

// NewSpread returns a Spread over the base URLs targets
// ("http://127.0.0.1:8080").
func NewSpread(targets ...string) (*Spread, error) {
	if len(targets) == 0 {
		return nil, errors.New("spread: no targets")
	}
	s := &Spread{}
	for _, t := range targets {
		u, err := url.Parse(t)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("spread: target %q: want http(s)://host:port", t)
		}
		s.targets = append(s.targets, u)
	}
	return s, nil
}

// RoundTrip implements http.RoundTripper.
func (s *Spread) RoundTrip(req *http.Request) (*http.Response, error) {
	t := s.targets[(s.next.Add(1)-1)%uint64(len(s.targets))]
	r := req.Clone(req.Context())
	r.URL.Scheme, r.URL.Host, r.Host = t.Scheme, t.Host, ""
	rt := s.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	return rt.RoundTrip(r)
}

var _ http.RoundTripper = (*Spread)(nil)
