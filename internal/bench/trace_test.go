package bench

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseMooncake(t *testing.T) {
	in := `{"timestamp": 2000, "input_length": 600, "output_length": 5, "hash_ids": [0, 7]}

{"timestamp": 500.5, "input_length": 512, "output_length": 0, "hash_ids": [0], "extra": true}
{"timestamp": 2000, "input_length": 1, "output_length": 1, "hash_ids": [9]}
`
	reqs, err := ParseMooncake(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []TraceRequest{
		{At: 0, InputTokens: 512, OutputTokens: 0, HashIDs: []int64{0}},
		{At: 1499500 * time.Microsecond, InputTokens: 600, OutputTokens: 5, HashIDs: []int64{0, 7}},
		{At: 1499500 * time.Microsecond, InputTokens: 1, OutputTokens: 1, HashIDs: []int64{9}},
	}
	if fmt.Sprint(reqs) != fmt.Sprint(want) {
		t.Errorf("got  %v\nwant %v", reqs, want)
	}
	if s := reqs[1].Session(); s != "mooncake-7" || reqs[0].Session() != "" {
		t.Errorf("sessions %q %q", reqs[0].Session(), s)
	}
}

func TestParseMooncakeErrors(t *testing.T) {
	good := `{"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": [0]}` + "\n"
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "no requests"},
		{"not json", good + good + "{oops\n", "line 3: "},
		{"missing timestamp", `{"input_length": 10, "output_length": 5, "hash_ids": [0]}`, "line 1: no timestamp"},
		{"missing input", good + `{"timestamp": 1, "output_length": 5, "hash_ids": [0]}`, "line 2: no input_length"},
		{"missing output", `{"timestamp": 1, "input_length": 5, "hash_ids": [0]}`, "line 1: no output_length"},
		{"negative time", `{"timestamp": -1, "input_length": 10, "output_length": 5, "hash_ids": [0]}`, "line 1: timestamp -1"},
		{"zero input", `{"timestamp": 0, "input_length": 0, "output_length": 5, "hash_ids": []}`, "line 1: input_length 0"},
		{"huge input", `{"timestamp": 0, "input_length": 99999999999, "output_length": 5, "hash_ids": [0]}`, "line 1: "},
		{"negative output", `{"timestamp": 0, "input_length": 10, "output_length": -5, "hash_ids": [0]}`, "line 1: output_length -5"},
		{"too few hash ids", `{"timestamp": 0, "input_length": 513, "output_length": 5, "hash_ids": [0]}`, "line 1: 1 hash_ids for input_length 513: want 2"},
		{"array", `[1, 2]`, "line 1: "},
		{"long line", `{"timestamp": 0, "pad": "` + strings.Repeat("x", maxTraceLine) + `"}`, "line 1: longer than"},
	}
	for _, tc := range tests {
		_, err := ParseMooncake(strings.NewReader(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func TestParseAzure(t *testing.T) {
	in := "\ufeffTIMESTAMP,ContextTokens,GeneratedTokens\n" +
		"2023-11-16 18:15:50.9951690,396,109\n" +
		"2023-11-16 18:15:46.6805900,374,44\n" +
		"\n" +
		"2023-11-16 18:15:51.2224670,879,0\n"
	reqs, err := ParseAzure(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []TraceRequest{
		{At: 0, InputTokens: 374, OutputTokens: 44},
		{At: 4314579 * time.Microsecond, InputTokens: 396, OutputTokens: 109},
		{At: 4541877 * time.Microsecond, InputTokens: 879, OutputTokens: 0},
	}
	if fmt.Sprint(reqs) != fmt.Sprint(want) {
		t.Errorf("got  %v\nwant %v", reqs, want)
	}
	// Columns in another order, other columns, other case.
	reqs, err = ParseAzure(strings.NewReader("generatedtokens,x,contexttokens,timestamp\n7,a,8,2024-05-10 00:00:00\n"))
	if err != nil || len(reqs) != 1 || reqs[0].InputTokens != 8 || reqs[0].OutputTokens != 7 {
		t.Errorf("reordered columns: %v, %v", reqs, err)
	}
}

func TestParseAzureErrors(t *testing.T) {
	const head = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
	const row = "2023-11-16 18:15:46.6805900,374,44\n"
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "line 1: no header"},
		{"no header", "2023-11-16 18:15:46,1,1\n", "line 1: header"},
		{"header only", head, "no requests"},
		{"bad time", head + row + "yesterday,1,1\n", "line 3: TIMESTAMP"},
		{"bad tokens", head + row + row + "2023-11-16 18:15:46,x,1\n", "line 4: ContextTokens"},
		{"zero context", head + "2023-11-16 18:15:46,0,1\n", "line 2: ContextTokens: 0"},
		{"negative generated", head + "2023-11-16 18:15:46,5,-1\n", "line 2: GeneratedTokens: -1"},
		{"short row", head + row + "2023-11-16 18:15:46,5\n", "line 3: 2 fields"},
		{"bad quote", head + row + "\"2023,1,1\n", "line 3"},
		{"too long", head + row + "2025-11-16 18:15:46,5,5\n", "line 3: TIMESTAMP 2025-11-16 18:15:46 +0000 UTC is more than"},
	}
	for _, tc := range tests {
		_, err := ParseAzure(strings.NewReader(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func FuzzParseMooncake(f *testing.F) {
	// Two real lines: a whole file's seed makes minimizing slow.
	seed, _ := os.ReadFile("testdata/mooncake-excerpt.jsonl")
	f.Add(bytes.Join(bytes.SplitAfterN(seed, []byte("\n"), 3)[:2], nil))
	f.Add([]byte(`{"timestamp": 1e300, "input_length": 1, "output_length": 1, "hash_ids": [0]}`))
	f.Add([]byte(`{"timestamp": 5, "input_length": 1025, "output_length": 1, "hash_ids": [1, 2, 3]}` + "\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		reqs, err := ParseMooncake(bytes.NewReader(data))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "line ") && err.Error() != "no requests" {
				t.Fatalf("error does not name its line: %v", err)
			}
			return
		}
		checkTraceRequests(t, reqs)
		for _, q := range reqs {
			if len(q.HashIDs) != (q.InputTokens+MooncakeBlockTokens-1)/MooncakeBlockTokens {
				t.Fatalf("%d hash ids for %d tokens", len(q.HashIDs), q.InputTokens)
			}
		}
	})
}

func FuzzParseAzure(f *testing.F) {
	seed, _ := os.ReadFile("testdata/azure-excerpt.csv")
	f.Add(bytes.Join(bytes.SplitAfterN(seed, []byte("\n"), 5)[:4], nil))
	f.Add([]byte("TIMESTAMP,ContextTokens,GeneratedTokens\n0001-01-01 00:00:00,1,0\n9999-12-31 23:59:59.9999999,1,0\n"))
	f.Add([]byte("timestamp,contexttokens,generatedtokens\r\n2023-01-01 00:00:00,\"5\",6\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		reqs, err := ParseAzure(bytes.NewReader(data))
		if err != nil {
			if !strings.Contains(err.Error(), "line ") && err.Error() != "no requests" {
				t.Fatalf("error does not name its line: %v", err)
			}
			return
		}
		checkTraceRequests(t, reqs)
	})
}

// checkTraceRequests checks what a parser promises of its output.
func checkTraceRequests(t *testing.T, reqs []TraceRequest) {
	t.Helper()
	if len(reqs) == 0 || reqs[0].At != 0 {
		t.Fatalf("first request not at 0: %v", reqs)
	}
	for i, q := range reqs {
		if q.At < 0 || q.At > maxTraceAt || (i > 0 && q.At < reqs[i-1].At) {
			t.Fatalf("request %d at %v: out of order or range", i, q.At)
		}
		if q.InputTokens < 1 || q.InputTokens > maxTraceTokens || q.OutputTokens < 0 || q.OutputTokens > maxTraceTokens {
			t.Fatalf("request %d: %d in, %d out", i, q.InputTokens, q.OutputTokens)
		}
	}
}

func TestLoadTraceSelects(t *testing.T) {
	for _, tc := range []struct {
		name   string
		path   string
		opts   TraceOptions
		format string
		n      int
		first  time.Duration
		last   time.Duration
	}{
		{"mooncake, all", "testdata/mooncake-excerpt.jsonl", TraceOptions{}, TraceMooncake, 13, 0, 642 * time.Second},
		{"mooncake, window", "testdata/mooncake-excerpt.jsonl", TraceOptions{Start: time.Second, Window: 80 * time.Second}, TraceMooncake, 4, 2 * time.Second, 71 * time.Second},
		{"mooncake, limit", "testdata/mooncake-excerpt.jsonl", TraceOptions{Limit: 7}, TraceMooncake, 7, 0, 3 * time.Second},
		{"azure, all", "testdata/azure-excerpt.csv", TraceOptions{}, TraceAzure, 30, 0, 19914 * time.Millisecond},
		{"azure, named", "testdata/azure-excerpt.csv", TraceOptions{Format: TraceAzure, Start: 15 * time.Second}, TraceAzure, 6, 2421 * time.Millisecond, 4914 * time.Millisecond},
	} {
		tr, err := LoadTrace(tc.path, tc.opts)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if tr.Format != tc.format || len(tr.Requests) != tc.n || tr.Path != tc.path {
			t.Errorf("%s: %s trace of %d requests from %s", tc.name, tr.Format, len(tr.Requests), tr.Path)
			continue
		}
		first, last := tr.Requests[0].At, tr.Span()
		if first.Round(time.Millisecond) != tc.first || last.Round(time.Millisecond) != tc.last {
			t.Errorf("%s: requests from %v to %v, want %v to %v", tc.name, first, last, tc.first, tc.last)
		}
	}
	for _, opts := range []TraceOptions{{TokenScale: -1}, {Format: "parquet"}, {Limit: -1}} {
		if _, err := LoadTrace("testdata/mooncake-excerpt.jsonl", opts); err == nil {
			t.Errorf("%+v accepted", opts)
		}
	}
	if _, err := LoadTrace("testdata/missing.jsonl", TraceOptions{}); err == nil {
		t.Error("a missing file loaded")
	}
	// The wrong format names the line that does not parse.
	if _, err := LoadTrace("testdata/azure-excerpt.csv", TraceOptions{Format: TraceMooncake}); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("azure read as mooncake: %v", err)
	}
}

func TestTracePrompts(t *testing.T) {
	tr, err := LoadTrace("testdata/mooncake-excerpt.jsonl", TraceOptions{TokenScale: 1.0 / 32})
	if err != nil {
		t.Fatal(err)
	}
	if tr.BlockWords() != 16 {
		t.Fatalf("block words %d, want 512/32", tr.BlockWords())
	}
	prompt := func(i int) []string { return strings.Fields(string(tr.AppendPrompt(nil, i, 1))) }
	for i, q := range tr.Requests {
		p := prompt(i)
		if len(p) != tr.PromptWords(i) {
			t.Errorf("request %d: %d words, want %d", i, len(p), tr.PromptWords(i))
		}
		if n := len(q.HashIDs); len(p) <= (n-1)*16 || len(p) > n*16 {
			t.Errorf("request %d: %d words for %d blocks of 16", i, len(p), n)
		}
		if want := max((q.OutputTokens+16)/32, 1); tr.OutputTokens(i) != want {
			t.Errorf("request %d: %d output tokens, want %d", i, tr.OutputTokens(i), want)
		}
	}
	// Requests 1 and 8 share 14 blocks: a textual prefix of 14×16 words,
	// and no more.
	a, b := prompt(1), prompt(8)
	shared := 0
	for shared < min(len(a), len(b)) && a[shared] == b[shared] {
		shared++
	}
	if shared < 14*16 || shared > 14*16+2 {
		t.Errorf("requests sharing 14 blocks share %d words, want 224 (+ chance)", shared)
	}
	// Every request shares block 0, so the same first 16 words.
	if strings.Join(prompt(0)[:16], " ") != strings.Join(prompt(12)[:16], " ") {
		t.Error("requests with the same first hash_id start differently")
	}
	// The seed does not change a Mooncake prompt: it is a function of the
	// hash ids only.
	if string(tr.AppendPrompt(nil, 3, 1)) != string(tr.AppendPrompt(nil, 3, 99)) {
		t.Error("a Mooncake prompt depends on the seed")
	}
	if got := tr.BlockReuseBound(); got != 62.0/171 {
		t.Errorf("block reuse bound %v, want 62/171", got)
	}
	// In words: reused blocks are full (16 words) more often than not.
	if got := tr.TokenReuseBound(); got != 992.0/2590 {
		t.Errorf("token reuse bound %v, want 992/2590", got)
	}

	az, err := LoadTrace("testdata/azure-excerpt.csv", TraceOptions{TokenScale: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	if az.BlockReuseBound() != 0 || az.TokenReuseBound() != 0 || az.Requests[0].Session() != "" {
		t.Error("an Azure trace has no blocks and no sessions")
	}
	p0, p1 := string(az.AppendPrompt(nil, 0, 7)), string(az.AppendPrompt(nil, 1, 7))
	if len(strings.Fields(p0)) != 187 || p0[:20] == p1[:20] {
		t.Errorf("azure prompts: %d words (want 374/2), distinct starts: %v", len(strings.Fields(p0)), p0[:20] != p1[:20])
	}
}
