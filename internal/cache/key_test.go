package cache

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestCanonicalKey(t *testing.T) {
	same := []struct{ a, b string }{
		{`{"b":1,"a":2}`, `{ "a":2, "b":1 }`},
		{`{"model":"m","messages":[{"role":"user","content":"x"}]}`, "{\n\t\"messages\": [ { \"content\": \"x\", \"role\": \"user\" } ],\n\t\"model\": \"m\"\n}\n"},
		{`{"z":{"y":[1,{"b":true,"a":null}],"x":"s"}}`, `{"z":{"x":"s","y":[1,{"a":null,"b":true}]}}`},
		{`[]`, ` [ ] `},
		{`{}`, `{ }`},
	}
	for _, tt := range same {
		ka, err := KeyFor("p", "/v1/x", []byte(tt.a), "")
		if err != nil {
			t.Fatal(err)
		}
		kb, err := KeyFor("p", "/v1/x", []byte(tt.b), "")
		if err != nil {
			t.Fatal(err)
		}
		if ka != kb {
			t.Errorf("%s and %s have different keys", tt.a, tt.b)
		}
	}
	base := `{"a":1,"b":"x","stream":false}`
	different := []string{
		`{"a":2,"b":"x","stream":false}`,
		`{"a":1.0,"b":"x","stream":false}`,
		`{"a":1,"b":"x ","stream":false}`,
		`{"a":1,"b":"x","stream":true}`,
		`{"a":1,"b":"x"}`,
		`{"a":[1],"b":"x","stream":false}`,
		`{"a":1,"b":"X","stream":false}`,
	}
	kbase, _ := KeyFor("p", "/v1/x", []byte(base), "")
	for _, d := range different {
		k, err := KeyFor("p", "/v1/x", []byte(d), "")
		if err != nil {
			t.Fatal(err)
		}
		if k == kbase {
			t.Errorf("%s has the key of %s", d, base)
		}
	}
	// Pool, path and tenant are part of the key, unambiguously.
	keys := map[Key]string{}
	for _, c := range [][3]string{
		{"p", "/v1/x", ""}, {"q", "/v1/x", ""}, {"p", "/v1/y", ""}, {"p", "/v1/x", "team-a"},
		{"p", "/v1/x", "team-b"}, {"p/v1", "/x", ""}, {"", "p/v1/x", ""},
	} {
		k, err := KeyFor(c[0], c[1], []byte(base), c[2])
		if err != nil {
			t.Fatal(err)
		}
		if prev, dup := keys[k]; dup {
			t.Errorf("%v has the key of %s", c, prev)
		}
		keys[k] = strings.Join(c[:], ",")
	}
}

func TestCanonicalizeRejects(t *testing.T) {
	for _, body := range []string{
		``, `{`, `{"a":1,}`, `{"a" 1}`, `[1,]`, `01`, `1.`, `-`, `1e`, `tru`, `{"a":1} x`, `"\x"`, "\"a\x01\"",
		`{"a":1,"a":2}`, `{"a":1,"\u0061":2}`, "\"\xff\"", strings.Repeat("[", 200) + strings.Repeat("]", 200),
		`{1:2}`, `"\u12"`,
	} {
		if out, err := Canonicalize([]byte(body)); err == nil {
			t.Errorf("Canonicalize(%q) = %q, want an error", body, out)
		}
	}
}

func TestCanonicalizeOutput(t *testing.T) {
	got, err := Canonicalize([]byte(` { "b" : [ 1 , 2.50 , -0e+3 ] , "a\u00e9" : "x\"y" , "A" : { } } `))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"A":{},"a\u00e9":"x\"y","b":[1,2.50,-0e+3]}`; string(got) != want {
		t.Fatalf("Canonicalize = %s, want %s", got, want)
	}
}

func FuzzKeyFor(f *testing.F) {
	for _, s := range []string{
		`{"b":1,"a":2}`, `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}`,
		`[1,"x",null,true,false,{"\u00e9":-1.5e10}]`, `{"a":{"a":{"a":[]}}}`, `"\ud83d\ude00"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		canon, err := Canonicalize(body)
		if err != nil {
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
		again, err := Canonicalize(canon)
		if err != nil || !bytes.Equal(again, canon) {
			t.Fatalf("not idempotent: %q → %q → %q (%v)", body, canon, again, err)
		}
		var a, b any
		da := json.NewDecoder(bytes.NewReader(body))
		da.UseNumber()
		db := json.NewDecoder(bytes.NewReader(canon))
		db.UseNumber()
		if da.Decode(&a) != nil || db.Decode(&b) != nil || !reflect.DeepEqual(a, b) {
			t.Fatalf("canonical form %q means something else than %q", canon, body)
		}
		k1, err1 := KeyFor("p", "/v1/x", body, "t")
		k2, err2 := KeyFor("p", "/v1/x", canon, "t")
		if err1 != nil || err2 != nil || k1 != k2 {
			t.Fatalf("a body and its canonical form have different keys")
		}
	})
}

func BenchmarkKeyFor(b *testing.B) {
	body := []byte(`{"model":"sim-llm","stream":true,"max_tokens":64,"temperature":0.7,"messages":[` +
		`{"role":"system","content":"You are a helpful assistant."},` +
		`{"role":"user","content":"` + strings.Repeat("Tell me about rate limiting. ", 40) + `"}]}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := KeyFor("chat", "/v1/chat/completions", body, ""); err != nil {
			b.Fatal(err)
		}
	}
}
