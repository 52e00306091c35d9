package sim

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

func TestVocabulary(t *testing.T) {
	seen := make(map[string]bool)
	for _, w := range wordBare {
		if seen[w] {
			t.Errorf("word %q appears twice", w)
		}
		seen[w] = true
		// Output text is appended without escaping.
		for _, c := range w {
			if c < 'a' || c > 'z' {
				t.Errorf("word %q needs escaping", w)
			}
		}
	}
}

func TestCountWords(t *testing.T) {
	for _, s := range []string{"", " ", "a", " a  b\tc\n", "a\u00a0b", "\u3000x\u2028y ", "\xff \xfe", "日本語 テキスト"} {
		if got, want := countWords(s), len(strings.Fields(s)); got != want {
			t.Errorf("countWords(%q) = %d, want %d", s, got, want)
		}
	}
}

func FuzzCountWords(f *testing.F) {
	f.Add("hello  world\n")
	f.Add("\u00a0\xff\u3000")
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := countWords(s), len(strings.Fields(s)); got != want {
			t.Fatalf("countWords(%q) = %d, strings.Fields gives %d", s, got, want)
		}
	})
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote\back`, "tab\tnl\ncr\r", "\x00\x1f\x7f", "<&>", "é日本", "bad\xffutf8\xc3", "\u2028"} {
		checkJSONString(t, s)
	}
}

func FuzzAppendJSONString(f *testing.F) {
	f.Add("model/\"name\"\n")
	f.Add("\xff\xfe")
	f.Fuzz(checkJSONString)
}

// checkJSONString checks that appendJSONString decodes to what
// encoding/json would encode s as.
func checkJSONString(t *testing.T, s string) {
	out := appendJSONString(nil, s)
	var got string
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("appendJSONString(%q) = %s: %v", s, out, err)
	}
	ref, _ := json.Marshal(s)
	var want string
	_ = json.Unmarshal(ref, &want)
	if got != want {
		t.Fatalf("appendJSONString(%q) decodes to %q, want %q", s, got, want)
	}
}

func TestUnitVector(t *testing.T) {
	for _, dim := range []int{1, 2, 64, 1000} {
		v := make([]float32, dim)
		w := make([]float32, dim)
		unitVector(v, 42)
		unitVector(w, 42)
		var sum float64
		for i := range v {
			sum += float64(v[i]) * float64(v[i])
			if v[i] != w[i] {
				t.Fatalf("dim %d: same seed, different vectors", dim)
			}
		}
		if math.Abs(sum-1) > 1e-5 {
			t.Errorf("dim %d: squared norm %v", dim, sum)
		}
		unitVector(w, 43)
		if dim > 1 && equalVec(v, w) {
			t.Errorf("dim %d: different seeds, same vector", dim)
		}
	}
}

func TestTokensSpreadOverTheVocabulary(t *testing.T) {
	// One request's tokens should not repeat a handful of words.
	seen := make(map[int]bool)
	for i := range 256 {
		seen[tokenIndex(12345, i)] = true
	}
	if len(seen) < 128 {
		t.Errorf("256 tokens used only %d distinct words", len(seen))
	}
}
