package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// AddrRule is one entry of jobs.callback_allow: a destination that job
// callbacks may reach although it is not public. Exactly one of Prefix and
// Host is set.
type AddrRule struct {
	// Prefix matches the address a callback connects to, after DNS
	// resolution: "10.0.0.0/8", or one address ("10.1.2.3", a /32).
	Prefix netip.Prefix
	// Host matches the host name of the callback URL as written, lower
	// case: "hooks.internal", or with a leading "*." every name below it
	// ("*.hooks.internal" matches "a.hooks.internal", not
	// "hooks.internal"). Whatever the name resolves to is then allowed:
	// the operator vouches for the name.
	Host string
	// Port, if not 0, is the only port the rule allows.
	Port uint16
}

// ParseAddrRule reads an entry of jobs.callback_allow:
//
//	10.0.0.0/8          a CIDR prefix, any port
//	10.1.2.3            one address, any port
//	10.1.2.3:8443       one address, one port
//	fd00::/8            an IPv6 prefix
//	[fd00::1]:8443      one IPv6 address, one port
//	hooks.internal      a host name, any port
//	hooks.internal:443  a host name, one port
//	*.hooks.internal    every name below hooks.internal
func ParseAddrRule(s string) (AddrRule, error) {
	if s == "" {
		return AddrRule{}, errors.New("empty entry; want a CIDR (10.0.0.0/8), an address (10.1.2.3[:port]) or a host name (hooks.internal[:port])")
	}
	if strings.Contains(s, "://") {
		return AddrRule{}, fmt.Errorf("%q is a URL; write the host (hooks.internal:443) or a CIDR (10.0.0.0/8)", s)
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return AddrRule{}, fmt.Errorf("%q is not a CIDR prefix such as 10.0.0.0/8 (a prefix takes no port)", s)
		}
		if p.Addr().Zone() != "" {
			return AddrRule{}, fmt.Errorf("%q: zones are not allowed", s)
		}
		return AddrRule{Prefix: p.Masked()}, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return addrRule(s, a, 0)
	}
	host, port := s, uint16(0)
	if h, p, err := net.SplitHostPort(s); err == nil {
		n, perr := strconv.ParseUint(p, 10, 16)
		if perr != nil || n == 0 {
			return AddrRule{}, fmt.Errorf("%q: port %q must be 1 to 65535", s, p)
		}
		host, port = h, uint16(n)
		if a, err := netip.ParseAddr(h); err == nil {
			return addrRule(s, a, port)
		}
	}
	name := strings.ToLower(host)
	if !validHostPattern(name) {
		return AddrRule{}, fmt.Errorf("%q is not a CIDR (10.0.0.0/8), an address (10.1.2.3[:port], [fd00::1]:443) or a host name (hooks.internal[:port], *.hooks.internal)", s)
	}
	return AddrRule{Host: name, Port: port}, nil
}

func addrRule(s string, a netip.Addr, port uint16) (AddrRule, error) {
	if a.Zone() != "" {
		return AddrRule{}, fmt.Errorf("%q: zones are not allowed", s)
	}
	a = a.Unmap()
	return AddrRule{Prefix: netip.PrefixFrom(a, a.BitLen()), Port: port}, nil
}

// validHostPattern accepts a DNS name of letters, digits and hyphens
// (lower case), optionally starting with "*." for every name below it.
func validHostPattern(name string) bool {
	name = strings.TrimPrefix(name, "*.")
	if name == "" || len(name) > 253 || strings.HasSuffix(name, ".") {
		return false
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// MatchesHost reports whether the rule is a host rule naming host (the
// callback URL's host, any case) on port.
func (r AddrRule) MatchesHost(host string, port uint16) bool {
	if r.Host == "" || (r.Port != 0 && r.Port != port) {
		return false
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if suffix, ok := strings.CutPrefix(r.Host, "*."); ok {
		return strings.HasSuffix(host, "."+suffix)
	}
	return host == r.Host
}

// MatchesAddr reports whether the rule is an address rule covering ap.
func (r AddrRule) MatchesAddr(ap netip.AddrPort) bool {
	return r.Prefix.IsValid() && r.Prefix.Contains(ap.Addr().Unmap()) && (r.Port == 0 || r.Port == ap.Port())
}
