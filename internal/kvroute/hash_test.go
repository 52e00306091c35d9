package kvroute

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// refStream is the canonical prompt stream computed with encoding/json, the
// reference HashPrompt's hand-written scanner must agree with.
func refStream(body []byte) ([]byte, bool) {
	if !json.Valid(body) {
		return nil, false
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, false
	}
	hasPrompt := false
	for _, f := range promptFields[fieldModel+1:] {
		_, ok := top[f]
		hasPrompt = hasPrompt || ok
	}
	if !hasPrompt {
		return nil, false
	}
	var out bytes.Buffer
	str := func(s string) {
		out.WriteByte(tagString)
		out.WriteString(strings.ReplaceAll(s, "\x00", "\x00\x01"))
		out.WriteString("\x00\x00")
	}
	for i, f := range promptFields {
		raw, ok := top[f]
		if !ok {
			continue
		}
		out.Write([]byte{tagField, byte(i)})
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		// Decoder.Token drops the colons and commas; keys come as strings.
		for {
			tok, err := dec.Token()
			if err != nil {
				break
			}
			switch v := tok.(type) {
			case json.Delim:
				out.WriteByte(map[json.Delim]byte{'{': tagObject, '}': tagEndObj, '[': tagArray, ']': tagEndArr}[v])
			case string:
				str(v)
			case json.Number:
				out.WriteByte(tagLit)
				out.WriteString(string(v))
				out.WriteByte(0)
			case bool:
				out.WriteByte(tagLit)
				fmt.Fprint(&out, v)
				out.WriteByte(0)
			case nil:
				out.WriteByte(tagLit)
				out.WriteString("null")
				out.WriteByte(0)
			}
		}
	}
	return out.Bytes(), true
}

// refHashes cuts a stream into chained block hashes with HashText's chain.
func refHashes(stream []byte, maxBlocks int) []uint64 {
	return HashText(stream, nil, maxBlocks)
}

func chatBody(model string, msgs ...string) []byte {
	type msg struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	var m []msg
	for i, c := range msgs {
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		m = append(m, msg{role, c})
	}
	b, err := json.Marshal(map[string]any{"model": model, "messages": m, "stream": true})
	if err != nil {
		panic(err)
	}
	return b
}

func TestHashPromptSharedPrefix(t *testing.T) {
	system := strings.Repeat("You are a helpful assistant that answers briefly. ", 20)
	turn1 := chatBody("llama", system, "What is the capital of France? Answer in one word please.")
	turn2 := chatBody("llama", system, "What is the capital of France? Answer in one word please.", "Paris.", "And of Italy?")
	other := chatBody("llama", "A different system prompt entirely. "+system, "hi")
	otherModel := chatBody("mistral", system, "What is the capital of France? Answer in one word please.")

	h1 := HashPrompt(turn1, nil, 0)
	h2 := HashPrompt(turn2, nil, 0)
	if len(h1) < 5 || len(h2) <= len(h1) {
		t.Fatalf("blocks: turn1 %d, turn2 %d", len(h1), len(h2))
	}
	if common := commonPrefix(h1, h2); common < len(h1)-1 {
		t.Errorf("turn 2 shares %d of turn 1's %d blocks; want all but the last", common, len(h1))
	}
	if common := commonPrefix(h1, HashPrompt(other, nil, 0)); common != 0 {
		t.Errorf("a different first message shares %d blocks", common)
	}
	if common := commonPrefix(h1, HashPrompt(otherModel, nil, 0)); common != 0 {
		t.Errorf("another model shares %d blocks", common)
	}

	// The same conversation formatted differently (whitespace, escapes, the
	// order of the top-level keys) hashes the same.
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, turn2, "", "   "); err != nil {
		t.Fatal(err)
	}
	reformatted := bytes.Replace(pretty.Bytes(), []byte("France"), []byte(`Fr\u0061nce`), 1)
	reformatted = bytes.Replace(reformatted, []byte(`"model": "llama",`), nil, 1)
	reformatted = bytes.Replace(reformatted, []byte(`"stream": true`), []byte(`"stream": true, "model": "llama"`), 1)
	if !slices.Equal(HashPrompt(reformatted, nil, 0), h2) {
		t.Errorf("reformatted body hashes differently:\n%s", reformatted)
	}
}

func commonPrefix(a, b []uint64) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

func TestHashPromptCases(t *testing.T) {
	long := strings.Repeat("x", 4*BlockBytes)
	for _, tc := range []struct {
		name   string
		body   string
		blocks int // -1: compare with the reference only
	}{
		{"completions string", `{"model":"m","prompt":"` + long + `"}`, -1},
		{"completions tokens", `{"model":"m","prompt":[` + strings.Repeat("1234,", 100) + `5]}`, -1},
		{"chat parts", `{"messages":[{"role":"user","content":[{"type":"text","text":"` + long + `"},{"type":"image_url","image_url":{"url":"data:x"}}]}]}`, -1},
		{"responses input", `{"model":"m","instructions":"` + long + `","input":"hi"}`, -1},
		{"no prompt", `{"model":"m","input_ids":"` + long + `"}`, 0},
		{"escaped key", `{"m\u0065ssages":[{"role":"user","content":"` + long + `"}]}`, -1},
		{"not an object", `["` + long + `"]`, 0},
		{"trailing garbage", `{"prompt":"` + long + `"} x`, 0},
		{"unterminated", `{"prompt":"` + long, 0},
		{"short prompt", `{"prompt":"hi"}`, 0},
		{"too long", `{"prompt":"` + strings.Repeat("y", 10*BlockBytes) + `"}`, 0},
		{"control char", "{\"prompt\":\"" + long + "\x01\"}", 0},
		{"nul escape", `{"prompt":"` + long + `\u0000"}`, -1},
		{"surrogates", `{"prompt":"` + long + `\ud83d\ude00 \ud800x \udc00 \ud800\u0041"}`, -1},
		{"invalid utf8", "{\"prompt\":\"" + long + "\xff\xed\xa0\x80\"}", -1},
		{"numbers", `{"prompt":[0,-1.5e+3,2E-2,` + strings.Repeat(`"`+long+`",`, 2) + `true,false,null]}`, -1},
		{"bad number", `{"prompt":[01,"` + long + `"]}`, 0},
		{"duplicate key", `{"prompt":"` + long + `","prompt":"` + long + `z"}`, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := HashPrompt([]byte(tc.body), nil, 8)
			stream, ok := refStream([]byte(tc.body))
			var want []uint64
			if ok {
				want = refHashes(stream, 8)
			}
			if !slices.Equal(got, want) {
				t.Errorf("HashPrompt = %d blocks %x, reference %d blocks %x", len(got), got, len(want), want)
			}
			if tc.blocks >= 0 && len(got) != tc.blocks {
				t.Errorf("%d blocks, want %d", len(got), tc.blocks)
			}
			if tc.blocks < 0 && len(got) == 0 {
				t.Error("no blocks")
			}
		})
	}
}

func TestHashPromptNoAllocs(t *testing.T) {
	body := chatBody("llama", strings.Repeat("The quick brown fox jumps over the lazy dog. ", 200), "Summarise.")
	dst := make([]uint64, 0, DefaultMaxBlocks)
	if n := testing.AllocsPerRun(100, func() { dst = HashPrompt(body, dst, 0) }); n != 0 {
		t.Errorf("HashPrompt allocates %v times per call", n)
	}
	if len(dst) == 0 {
		t.Fatal("no blocks")
	}
}

func FuzzHashPrompt(f *testing.F) {
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hello world hello world"}]}`), uint8(4))
	f.Add([]byte(`{"prompt":["a\u0000b\ud800\udc00",1e5,null,{"k":[true]}]}`), uint8(1))
	f.Add([]byte("{\"input\":\"\xff\xfe\\ud83d\"}"), uint8(2))
	f.Add([]byte(`{"m\u006fdel":"x","tools":[],"prompt":"`+strings.Repeat("z", 300)+`"}`), uint8(3))
	f.Fuzz(func(t *testing.T, body []byte, maxBlocks uint8) {
		limit := int(maxBlocks%8) + 1
		got := HashPrompt(body, nil, limit)
		if len(got) > limit {
			t.Fatalf("%d blocks, limit %d", len(got), limit)
		}
		stream, ok := refStream(body)
		var want []uint64
		if ok {
			want = refHashes(stream, limit)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("HashPrompt = %x, reference %x (valid utf8 %v)", got, want, utf8.Valid(body))
		}
	})
}

func BenchmarkHashPrompt(b *testing.B) {
	body := chatBody("llama", strings.Repeat("The quick brown fox jumps over the lazy dog. ", 700), "Summarise.", "ok", "again")
	dst := make([]uint64, 0, DefaultMaxBlocks)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		dst = HashPrompt(body, dst, 0)
	}
}
