package config

import (
	"fmt"
	"net/textproto"
	"strings"
)

// The kinds of HashOn.
const (
	HashHeader   = "header"
	HashCookie   = "cookie"
	HashClientIP = "client_ip"
	HashJSON     = "json"
)

// HashOn is a parsed hash_on: what the consistent_hash balancer hashes.
type HashOn struct {
	// Kind is HashHeader, HashCookie, HashClientIP or HashJSON.
	Kind string
	// Name is the header name in canonical form ("X-Session-Id"), the
	// cookie name, or the JSON field: a top-level key of the request body or
	// a dot-separated path into nested objects ("metadata.session_id"). It
	// is "" for client_ip.
	Name string
}

// ParseHashOn parses "header:NAME", "cookie:NAME", "client_ip" or
// "json:FIELD".
func ParseHashOn(s string) (HashOn, error) {
	kind, name, hasName := strings.Cut(s, ":")
	switch kind {
	case HashClientIP:
		if hasName {
			return HashOn{}, fmt.Errorf("invalid hash_on %q: client_ip takes no name", s)
		}
		return HashOn{Kind: HashClientIP}, nil
	case HashHeader, HashCookie:
		if !isToken(name) {
			return HashOn{}, fmt.Errorf("invalid hash_on %q: want %s:NAME with NAME a %s name such as X-Session-ID", s, kind, kind)
		}
		if kind == HashHeader {
			name = textproto.CanonicalMIMEHeaderKey(name)
		}
		return HashOn{Kind: kind, Name: name}, nil
	case HashJSON:
		if name == "" || strings.Contains(name, "..") || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") {
			return HashOn{}, fmt.Errorf("invalid hash_on %q: want json:FIELD, or json:a.b for a nested field", s)
		}
		return HashOn{Kind: HashJSON, Name: name}, nil
	}
	return HashOn{}, fmt.Errorf("invalid hash_on %q: want header:NAME, cookie:NAME, client_ip or json:FIELD", s)
}

// ParsedHashOn returns the pool's hash_on parsed; it is the zero HashOn
// when hash_on is invalid, which a validated Config never has.
func (p *Pool) ParsedHashOn() HashOn {
	h, _ := ParseHashOn(p.HashOn)
	return h
}

// isToken reports whether s is an HTTP token (RFC 9110), the syntax of
// header and cookie names.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}
