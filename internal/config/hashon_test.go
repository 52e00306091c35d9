package config

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

func TestParseHashOn(t *testing.T) {
	tests := []struct {
		in   string
		want HashOn
		ok   bool
	}{
		{"client_ip", HashOn{Kind: HashClientIP}, true},
		{"header:X-Session-ID", HashOn{Kind: HashHeader, Name: "X-Session-Id"}, true},
		{"header:x-user", HashOn{Kind: HashHeader, Name: "X-User"}, true},
		{"cookie:session", HashOn{Kind: HashCookie, Name: "session"}, true},
		{"json:user", HashOn{Kind: HashJSON, Name: "user"}, true},
		{"json:metadata.session_id", HashOn{Kind: HashJSON, Name: "metadata.session_id"}, true},
		{"", HashOn{}, false},
		{"client_ip:", HashOn{}, false},
		{"header", HashOn{}, false},
		{"header:", HashOn{}, false},
		{"header:a b", HashOn{}, false},
		{"header:a:b", HashOn{}, false},
		{"cookie:a;b", HashOn{}, false},
		{"json:", HashOn{}, false},
		{"json:a..b", HashOn{}, false},
		{"json:a.", HashOn{}, false},
		{"query:x", HashOn{}, false},
		{"Header:X", HashOn{}, false},
	}
	for _, tc := range tests {
		got, err := ParseHashOn(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseHashOn(%q) = %+v, %v; want %+v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
	p := Pool{HashOn: "cookie:sid"}
	if got := p.ParsedHashOn(); got != (HashOn{Kind: HashCookie, Name: "sid"}) {
		t.Errorf("ParsedHashOn = %+v", got)
	}
}

func TestMatchModel(t *testing.T) {
	tests := []struct {
		pattern, model string
		want           bool
	}{
		{"sim-llm", "sim-llm", true},
		{"sim-llm", "sim-llm2", false},
		{"*", "anything", true},
		{"*", "meta-llama/Llama-3-8B", true},
		{"meta-llama/*", "meta-llama/Llama-3-8B", true},
		{"meta-llama/*", "other/Llama-3-8B", false},
		{"llama-*", "llama-3-8b", true},
		{"llama-*", "codellama-7b", false},
		{"*-instruct", "org/model-instruct", true},
		{"gpt-4?", "gpt-4o", true},
		{"gpt-4?", "gpt-4", false},
		{"[ab]*", "beta", true},
		{"[ab]*", "gamma", false},
		{"[/]x", "/x", true},
		{`\*`, "*", true},
		{`\*`, "x", false},
		{"llama-[", "llama-[", false},
		{"*", "a\x00b", false},
	}
	for _, tc := range tests {
		if got := MatchModel(tc.pattern, tc.model); got != tc.want {
			t.Errorf("MatchModel(%q, %q) = %v, want %v", tc.pattern, tc.model, got, tc.want)
		}
	}
	for _, bad := range []string{"[", "a[", `a\`, "[]", "a\x00"} {
		if checkGlob(bad) == nil {
			t.Errorf("checkGlob(%q) = nil, want an error", bad)
		}
	}
	for _, good := range []string{"a", "*", "a/b/*", "[a-z]?", `\[`} {
		if err := checkGlob(good); err != nil {
			t.Errorf("checkGlob(%q) = %v", good, err)
		}
	}
}

func BenchmarkMatchModel(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		MatchModel("llama-*", "llama-3-8b-instruct")
	}
}

func BenchmarkMatchModelSlash(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		MatchModel("meta-llama/*", "meta-llama/Llama-3-8B-Instruct")
	}
}

func TestAPIKeyHash(t *testing.T) {
	sum := sha256.Sum256([]byte("secret"))
	want := hex.EncodeToString(sum[:])
	for _, k := range []APIKey{
		{Key: "secret"},
		{KeySHA256: want},
		{KeySHA256: "2BB80D537B1DA3E38BD30361AA855686BDE0EACD7162FEF6A25FE97BF527A25B"},
	} {
		if got := k.Hash(); got != want {
			t.Errorf("%+v: Hash = %s, want %s", k, got, want)
		}
	}
	if got := (&APIKey{}).Hash(); got != "" {
		t.Errorf("empty key: Hash = %q, want \"\"", got)
	}
}
