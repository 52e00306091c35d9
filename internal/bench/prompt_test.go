package bench

import (
	"strings"
	"testing"
)

func TestWordList(t *testing.T) {
	seen := map[string]bool{}
	for i, w := range words {
		if w == "" || strings.ContainsAny(w, " \t\n\"\\") {
			t.Errorf("word %d %q: empty or needs escaping", i, w)
		}
		if seen[w] {
			t.Errorf("word %d %q: duplicate", i, w)
		}
		seen[w] = true
	}
}

func TestPromptLength(t *testing.T) {
	for _, n := range []int{0, 1, 3, 4, 5, 64, 1000} {
		p := string(Prompt(nil, 1, 7, n))
		if got := len(strings.Fields(p)); got != n {
			t.Errorf("n=%d: %d words in %q", n, got, p)
		}
		if strings.Contains(p, "  ") || strings.HasPrefix(p, " ") || strings.HasSuffix(p, " ") {
			t.Errorf("n=%d: not single-space separated: %q", n, p)
		}
	}
}

func TestPromptDeterministic(t *testing.T) {
	a := string(Prompt(nil, 42, 9, 64))
	b := string(Prompt([]byte("x"), 42, 9, 64))
	if "x"+a != b {
		t.Errorf("same inputs gave different prompts:\n%s\n%s", a, b)
	}
	if c := string(Prompt(nil, 43, 9, 64)); c == a {
		t.Errorf("another seed gave the same prompt %q", c)
	}
}

func TestPromptUnique(t *testing.T) {
	const n = 20000
	seen := make(map[string]uint64, n)
	for i := range uint64(n) {
		p := string(Prompt(nil, 5, i, 4))
		if j, dup := seen[p]; dup {
			t.Fatalf("requests %d and %d share prompt %q", j, i, p)
		}
		seen[p] = i
	}
	// Consecutive requests differ from their first word, so no prefix
	// cache can share anything between them.
	for i := range uint64(1000) {
		a := strings.Fields(string(Prompt(nil, 5, i, 8)))[0]
		b := strings.Fields(string(Prompt(nil, 5, i+1, 8)))[0]
		if a == b {
			t.Fatalf("requests %d and %d start with the same word %q", i, i+1, a)
		}
	}
}
