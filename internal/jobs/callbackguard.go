package jobs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-ai/sluice/internal/config"
)

// ErrCallbackRefused is a callback whose destination the callback policy
// does not allow: a non-public address that no jobs.callback_allow entry
// names, or one of the gateway's own listen addresses. Refused deliveries
// are given up at once, not retried.
var ErrCallbackRefused = errors.New("callback destination not allowed")

// callbackGuard is the policy of where job callbacks may go. A tenant
// chooses callback_url, so without it any tenant could make the gateway
// POST to whatever the gateway can reach: its own admin API, a cloud
// metadata service (169.254.169.254), databases on the private network.
//
// The policy is enforced where it cannot be bypassed: in the dialer's
// Control hook, on the address the connection is actually being made to,
// after DNS resolution. A name that resolves to a public address when
// checked and to 127.0.0.1 when dialed (DNS rebinding) is thus refused,
// and so is every other way of spelling an address (decimal, octal,
// IPv4-mapped IPv6, NAT64). Redirects are not followed (a 3xx is a failed
// delivery), so a public receiver cannot bounce the request inward.
// Submission also checks what it can without DNS (an address literal, a
// localhost name) so the client gets a 400 instead of a job whose callback
// is refused later.
type callbackGuard struct {
	allow []config.AddrRule
	// own are the gateway's listen addresses: never a callback's target,
	// whatever allow says.
	own map[netip.AddrPort]bool
}

// newCallbackGuard builds the policy: allow entries as in
// config.ParseAddrRule; own as listen addresses ("host:port", ":port" for
// every interface, "localhost:port" resolved now).
func newCallbackGuard(ctx context.Context, allow, own []string) (*callbackGuard, error) {
	g := &callbackGuard{own: make(map[netip.AddrPort]bool)}
	for i, e := range allow {
		r, err := config.ParseAddrRule(e)
		if err != nil {
			return nil, fmt.Errorf("callback allow entry %d: %w", i, err)
		}
		g.allow = append(g.allow, r)
	}
	for _, l := range own {
		if l == "" {
			continue
		}
		if err := g.addOwn(ctx, l); err != nil {
			return nil, err
		}
	}
	return g, nil
}

func (g *callbackGuard) addOwn(ctx context.Context, listen string) error {
	host, p, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("own address %q: %w", listen, err)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return fmt.Errorf("own address %q: port %q", listen, p)
	}
	port := uint16(n)
	var addrs []netip.Addr
	switch a, perr := netip.ParseAddr(host); {
	case host == "" || (perr == nil && a.IsUnspecified()):
		// Listening on every interface: each local address is the
		// gateway.
		ifAddrs, err := net.InterfaceAddrs()
		if err != nil {
			return fmt.Errorf("own addresses of %q: %w", listen, err)
		}
		for _, ia := range ifAddrs {
			if pfx, err := netip.ParsePrefix(ia.String()); err == nil {
				addrs = append(addrs, pfx.Addr())
			}
		}
		addrs = append(addrs, netip.IPv4Unspecified(), netip.IPv6Unspecified())
	case perr == nil:
		addrs = append(addrs, a)
	default:
		// A listen name that does not resolve now cannot be reached by a
		// callback either; loopback and private addresses stay refused
		// anyway.
		found, _ := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		addrs = append(addrs, found...)
	}
	for _, a := range addrs {
		g.own[netip.AddrPortFrom(a.Unmap().WithZone(""), port)] = true
	}
	return nil
}

// urlPort is the port a callback URL connects to.
func urlPort(u *url.URL) uint16 {
	if p := u.Port(); p != "" {
		n, _ := strconv.ParseUint(p, 10, 16)
		return uint16(n)
	}
	if u.Scheme == "https" {
		return 443
	}
	return 80
}

// allowsName reports whether an allow entry names host (as written in the
// callback URL) on port: the operator vouches for what it resolves to.
func (g *callbackGuard) allowsName(host string, port uint16) bool {
	if g == nil {
		return false
	}
	for _, r := range g.allow {
		if r.MatchesHost(host, port) {
			return true
		}
	}
	return false
}

// checkAddr decides a connection to ap. nameAllowed says an allow entry
// named the host being dialed.
func (g *callbackGuard) checkAddr(ap netip.AddrPort, nameAllowed bool) error {
	ap = netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
	if g != nil && g.own[ap] {
		return fmt.Errorf("%w: %s is the gateway's own listen address", ErrCallbackRefused, ap)
	}
	if nameAllowed {
		return nil
	}
	kind := nonPublic(ap.Addr())
	if kind == "" {
		return nil
	}
	if g != nil {
		for _, r := range g.allow {
			if r.MatchesAddr(ap) {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: %s is a %s address; list it in jobs.callback_allow to allow it", ErrCallbackRefused, ap, kind)
}

// checkURL is the submit-time check of a callback URL (already known to
// be an absolute http or https URL): an address literal is decided now;
// "localhost" and names under it (RFC 6761) are loopback without asking
// DNS. Other names are decided when they are dialed.
func (g *callbackGuard) checkURL(u *url.URL) error {
	host, port := u.Hostname(), urlPort(u)
	if g.allowsName(host, port) {
		return g.checkAddrLiteral(host, port, true)
	}
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		return fmt.Errorf("%w: %s is a loopback name; list it in jobs.callback_allow to allow it", ErrCallbackRefused, host)
	}
	if _, err := netip.ParseAddr(host); err != nil && endsInNumber(name) {
		return fmt.Errorf("%w: %s is not a valid IPv4 address (shorthand, octal and hex forms are refused); write the dotted-decimal address", ErrCallbackRefused, host)
	}
	return g.checkAddrLiteral(host, port, false)
}

// endsInNumber reports whether a host's last label is a number (decimal,
// or hex with 0x), which URL parsers and C resolvers read as an IPv4
// address in a shorthand form ("127.1", "2130706433", "0x7f.1") that a
// reader, and netip, would not. No DNS name ends in a number.
func endsInNumber(host string) bool {
	last := host[strings.LastIndexByte(host, '.')+1:]
	if last == "" {
		return false
	}
	if hex, ok := strings.CutPrefix(last, "0x"); ok {
		return strings.Trim(hex, "0123456789abcdef") == ""
	}
	return strings.Trim(last, "0123456789") == ""
}

func (g *callbackGuard) checkAddrLiteral(host string, port uint16, nameAllowed bool) error {
	a, err := netip.ParseAddr(host)
	if err != nil {
		return nil
	}
	return g.checkAddr(netip.AddrPortFrom(a, port), nameAllowed)
}

// dialContext dials addr ("host:port", as the transport asks) with the
// policy applied to every address the name resolves to.
func (g *callbackGuard) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	nameAllowed := false
	if host, p, err := net.SplitHostPort(addr); err == nil {
		if n, err := strconv.ParseUint(p, 10, 16); err == nil {
			nameAllowed = g.allowsName(host, uint16(n))
		}
	}
	d := &net.Dialer{
		Timeout:   10 * time.Second,
		KeepAlive: 30 * time.Second,
		// Control runs for each resolved address just before connect(2):
		// what is checked is what is connected to.
		Control: func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: unexpected address %q", ErrCallbackRefused, address)
			}
			return g.checkAddr(ap, nameAllowed)
		},
	}
	return d.DialContext(ctx, network, addr)
}

// client is the HTTP client of callbacks: the guarded dialer, no proxy
// (the policy must see the receiver's address, not a proxy's), no
// redirects (a 3xx is a failed delivery), 30s per attempt.
func (g *callbackGuard) client() *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy:                  nil,
			DialContext:            g.dialContext,
			ForceAttemptHTTP2:      true,
			MaxIdleConns:           100,
			MaxIdleConnsPerHost:    4,
			IdleConnTimeout:        90 * time.Second,
			TLSHandshakeTimeout:    10 * time.Second,
			ResponseHeaderTimeout:  30 * time.Second,
			ExpectContinueTimeout:  time.Second,
			MaxResponseHeaderBytes: 64 << 10,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// Address ranges that are not public, beyond what netip's predicates
// name.
var (
	cgnat        = netip.MustParsePrefix("100.64.0.0/10")  // RFC 6598
	thisNetwork  = netip.MustParsePrefix("0.0.0.0/8")      // RFC 791
	ietfProtocol = netip.MustParsePrefix("192.0.0.0/24")   // RFC 6890
	benchmarking = netip.MustParsePrefix("198.18.0.0/15")  // RFC 2544
	reserved4    = netip.MustParsePrefix("240.0.0.0/4")    // RFC 1112, with 255.255.255.255
	siteLocal6   = netip.MustParsePrefix("fec0::/10")      // RFC 3879
	nat64        = netip.MustParsePrefix("64:ff9b::/96")   // RFC 6052
	nat64Local   = netip.MustParsePrefix("64:ff9b:1::/48") // RFC 8215
	sixToFour    = netip.MustParsePrefix("2002::/16")      // RFC 3056
	teredo       = netip.MustParsePrefix("2001::/32")      // RFC 4380
	discard6     = netip.MustParsePrefix("100::/64")       // RFC 6666
	documentV6   = netip.MustParsePrefix("2001:db8::/32")  // RFC 3849
	ipv4Compat   = netip.MustParsePrefix("::/96")          // deprecated IPv4-compatible
	testNets     = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("203.0.113.0/24")}
)

// nonPublic names the kind of a non-public address, or returns "" for a
// public one. Addresses that embed an IPv4 address (IPv4-mapped, NAT64,
// 6to4, Teredo) are judged by it.
func nonPublic(a netip.Addr) string {
	a = a.Unmap().WithZone("")
	switch {
	case !a.IsValid():
		return "invalid"
	case a.IsUnspecified():
		return "unspecified"
	case a.IsLoopback():
		return "loopback"
	case a.IsLinkLocalUnicast():
		return "link-local"
	case a.IsMulticast(), a.IsLinkLocalMulticast(), a.IsInterfaceLocalMulticast():
		return "multicast"
	case a.IsPrivate():
		return "private"
	}
	if a.Is4() {
		switch {
		case cgnat.Contains(a):
			return "shared (CGNAT)"
		case thisNetwork.Contains(a), ietfProtocol.Contains(a), benchmarking.Contains(a), reserved4.Contains(a):
			return "reserved"
		}
		for _, p := range testNets {
			if p.Contains(a) {
				return "reserved"
			}
		}
		return ""
	}
	b := a.As16()
	switch {
	case nat64.Contains(a), nat64Local.Contains(a), ipv4Compat.Contains(a):
		if k := nonPublic(netip.AddrFrom4([4]byte(b[12:16]))); k != "" {
			return k
		}
		if nat64Local.Contains(a) || ipv4Compat.Contains(a) {
			return "reserved"
		}
	case sixToFour.Contains(a):
		return nonPublic(netip.AddrFrom4([4]byte(b[2:6])))
	case teredo.Contains(a):
		v4 := [4]byte(b[12:16])
		for i := range v4 {
			v4[i] ^= 0xff
		}
		return nonPublic(netip.AddrFrom4(v4))
	case siteLocal6.Contains(a), discard6.Contains(a), documentV6.Contains(a):
		return "reserved"
	}
	return ""
}
