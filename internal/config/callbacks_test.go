package config

import (
	"net/netip"
	"testing"
)

func TestParseAddrRule(t *testing.T) {
	tests := []struct {
		in   string
		want AddrRule
		bad  bool
	}{
		{in: "10.0.0.0/8", want: AddrRule{Prefix: netip.MustParsePrefix("10.0.0.0/8")}},
		{in: "10.1.2.3/8", want: AddrRule{Prefix: netip.MustParsePrefix("10.0.0.0/8")}},
		{in: "10.1.2.3", want: AddrRule{Prefix: netip.MustParsePrefix("10.1.2.3/32")}},
		{in: "10.1.2.3:8443", want: AddrRule{Prefix: netip.MustParsePrefix("10.1.2.3/32"), Port: 8443}},
		{in: "::ffff:10.1.2.3", want: AddrRule{Prefix: netip.MustParsePrefix("10.1.2.3/32")}},
		{in: "fd00::/8", want: AddrRule{Prefix: netip.MustParsePrefix("fd00::/8")}},
		{in: "[fd00::1]:443", want: AddrRule{Prefix: netip.MustParsePrefix("fd00::1/128"), Port: 443}},
		{in: "Hooks.Internal", want: AddrRule{Host: "hooks.internal"}},
		{in: "hooks.internal:443", want: AddrRule{Host: "hooks.internal", Port: 443}},
		{in: "*.hooks.internal", want: AddrRule{Host: "*.hooks.internal"}},
		{in: "", bad: true},
		{in: "10.0.0.0/33", bad: true},
		{in: "10.0.0.0/8:443", bad: true},
		{in: "hooks.internal:0", bad: true},
		{in: "hooks.internal:65536", bad: true},
		{in: "http://hooks.internal", bad: true},
		{in: "hooks internal", bad: true},
		{in: "*", bad: true},
		{in: "a.*.b", bad: true},
		{in: "-a.b", bad: true},
		{in: "fe80::1%eth0", bad: true},
		{in: "hooks.internal.", bad: true},
	}
	for _, tc := range tests {
		got, err := ParseAddrRule(tc.in)
		if (err != nil) != tc.bad || (!tc.bad && got != tc.want) {
			t.Errorf("ParseAddrRule(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.bad)
		}
	}
}

func TestAddrRuleMatch(t *testing.T) {
	ap := netip.MustParseAddrPort
	r, _ := ParseAddrRule("10.0.0.0/8")
	if !r.MatchesAddr(ap("10.9.9.9:1")) || !r.MatchesAddr(ap("[::ffff:10.9.9.9]:1")) || r.MatchesAddr(ap("11.0.0.1:1")) || r.MatchesHost("10.0.0.1", 1) {
		t.Error("prefix rule")
	}
	r, _ = ParseAddrRule("10.1.2.3:443")
	if !r.MatchesAddr(ap("10.1.2.3:443")) || r.MatchesAddr(ap("10.1.2.3:80")) {
		t.Error("address and port rule")
	}
	r, _ = ParseAddrRule("hooks.internal:443")
	if !r.MatchesHost("HOOKS.internal.", 443) || r.MatchesHost("hooks.internal", 80) || r.MatchesHost("x.hooks.internal", 443) || r.MatchesAddr(ap("10.0.0.1:443")) {
		t.Error("host rule")
	}
	r, _ = ParseAddrRule("*.hooks.internal")
	if !r.MatchesHost("a.b.hooks.internal", 1) || r.MatchesHost("hooks.internal", 1) || r.MatchesHost("evilhooks.internal", 1) {
		t.Error("wildcard rule")
	}
}

func FuzzParseAddrRule(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "[fd00::1]:443", "hooks.internal:443", "*.a.b", "1.2.3.4:0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseAddrRule(s)
		if err != nil {
			return
		}
		if r.Prefix.IsValid() == (r.Host != "") {
			t.Fatalf("%q: want exactly one of prefix and host: %+v", s, r)
		}
		if r.Prefix.IsValid() && r.Prefix != r.Prefix.Masked() {
			t.Fatalf("%q: prefix not masked: %v", s, r.Prefix)
		}
	})
}
