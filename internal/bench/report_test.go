package bench

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// sampleResult builds a result from fixed samples, as a run would.
func sampleResult(open, stream bool) *Result {
	lat, ttft, itl, tpot := newDist(), newDist(), newDist(), newDist()
	for i := range 200 {
		lat.record(20*time.Millisecond + time.Duration(i*i)*time.Microsecond)
		if stream {
			ttft.record(5*time.Millisecond + time.Duration(i)*37*time.Microsecond)
			var sum time.Duration
			for j := range 15 {
				gap := time.Duration(900+j*13+i) * time.Microsecond
				itl.record(gap)
				sum += gap
			}
			tpot.record(sum / 15)
		}
	}
	lat.record(1234567 * time.Microsecond)
	cfg := Config{
		URL: "http://127.0.0.1:9001/v1/chat/completions", Endpoint: EndpointChat, Model: "sim-llm",
		Arrivals: ArrivalsPoisson, MaxInFlight: DefaultMaxInFlight,
		Duration: 10 * time.Second, Warmup: 2 * time.Second, Timeout: DefaultTimeout,
		Stream: stream, PromptTokens: 64, MaxTokens: 16, Seed: 42, TimeScale: 1,
	}
	if stream {
		cfg.Goodput = SLO{TTFT: 10 * time.Millisecond, ITL: 1500 * time.Microsecond}
	}
	if open {
		cfg.Rate = 20.5
	} else {
		cfg.Concurrency = 8
	}
	r := &Result{
		Config:           cfg,
		Start:            time.Date(2026, 3, 4, 5, 6, 7, 890000000, time.UTC),
		Elapsed:          10*time.Second + 123456789,
		Sent:             205,
		OK:               201,
		Failed:           4,
		FailedByStatus:   map[int]int64{503: 1, 500: 2},
		FailedByKind:     map[string]int64{KindTimeout: 1},
		OutputTokens:     201 * 16,
		PromptTokens:     201 * 64,
		Latency:          lat.summary(),
		TTFT:             ttft.summary(),
		ITL:              itl.summary(),
		TPOT:             tpot.summary(),
		LatencyHistogram: lat.hist,
		TTFTHistogram:    ttft.hist,
		ITLHistogram:     itl.hist,
		TPOTHistogram:    tpot.hist,
		CachedTokens:     201 * 16,
		Replicas:         map[string]int64{"127.0.0.1:9001": 121, "127.0.0.1:9002": 80},
	}
	if stream {
		r.Good = 150
	}
	if open {
		r.Dropped = 3
	}
	r.derive()
	return r
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it):\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

func TestWriteTable(t *testing.T) {
	tests := []struct {
		golden       string
		open, stream bool
		edit         func(*Result)
	}{
		{"table_open_stream.golden", true, true, nil},
		{"table_closed.golden", false, false, nil},
		{"table_embeddings.golden", true, false, func(r *Result) {
			r.Config.Endpoint, r.Config.URL = EndpointEmbeddings, "http://127.0.0.1:9001/v1/embeddings"
			r.Config.RepeatPrompt = true
			r.OutputTokens, r.OutputTokensPerSecond = 0, 0
		}},
		{"table_interrupted.golden", false, true, func(r *Result) {
			r.Interrupted, r.Canceled, r.Failed, r.OK = true, 8, 0, 197
			r.FailedByStatus, r.FailedByKind = map[int]int64{}, map[string]int64{}
			r.ITL = Summary{}
		}},
		{"table_trace.golden", true, true, func(r *Result) {
			r.Config.Rate, r.Config.TimeScale = 0, 10
			r.Trace = &TraceInfo{Path: "mooncake-conversation.jsonl", Format: TraceMooncake, Requests: 205,
				TokenScale: 0.125, BlockReuseBound: 0.318, TokenReuseBound: 0.3236}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			r := sampleResult(tt.open, tt.stream)
			if tt.edit != nil {
				tt.edit(r)
			}
			var b bytes.Buffer
			if err := r.WriteTable(&b); err != nil {
				t.Fatal(err)
			}
			for i, line := range strings.Split(b.String(), "\n") {
				if strings.HasSuffix(line, " ") {
					t.Errorf("line %d has trailing space: %q", i+1, line)
				}
			}
			checkGolden(t, tt.golden, b.Bytes())
		})
	}
}

func TestWriteJSONGolden(t *testing.T) {
	var b bytes.Buffer
	if err := sampleResult(true, true).WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "result.json.golden", b.Bytes())
}

// TestJSONSchema pins the documented field names: renaming one breaks
// readers, so it needs a new SchemaVersion.
func TestJSONSchema(t *testing.T) {
	var b bytes.Buffer
	if err := sampleResult(true, true).WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	var vllm []string
	for _, m := range []string{"ttft", "tpot", "itl", "e2el"} {
		for _, stat := range []string{"mean", "median", "std", "p90", "p99"} {
			vllm = append(vllm, stat+"_"+m+"_ms")
		}
	}
	want := map[string][]string{
		"": append([]string{"schema", "target", "config", "start", "elapsed_ms", "interrupted", "sent", "ok", "failed", "dropped", "canceled",
			"failed_by_status", "failed_by_kind", "requests_per_second", "output_tokens", "prompt_tokens",
			"output_tokens_per_second", "prompt_tokens_per_second", "latency_ms", "ttft_ms", "itl_ms", "histograms",
			"tpot_ms", "good", "good_ratio", "cached_tokens", "cached_token_ratio", "replica_requests", "replica_max_over_mean", "trace",
			// vLLM's names
			"duration", "completed", "total_input_tokens", "total_output_tokens", "request_throughput", "request_goodput",
			"output_throughput", "total_token_throughput"}, vllm...),
		"config": {"mode", "endpoint", "model", "rate", "arrivals", "max_in_flight", "concurrency", "duration_ms", "warmup_ms",
			"timeout_ms", "stream", "prompt_tokens", "max_tokens", "repeat_prompt", "seed", "time_scale", "goodput_slo_ms"},
		"latency_ms":     {"count", "min", "mean", "p50", "p90", "p99", "p99_9", "max"},
		"ttft_ms":        {"count", "min", "mean", "p50", "p90", "p99", "p99_9", "max"},
		"itl_ms":         {"count", "min", "mean", "p50", "p90", "p99", "p99_9", "max"},
		"tpot_ms":        {"count", "min", "mean", "p50", "p90", "p99", "p99_9", "max"},
		"histograms":     {"latency_us", "ttft_us", "itl_us", "tpot_us"},
		"goodput_slo_ms": {"ttft", "itl", "e2e"},
	}
	for obj, fields := range want {
		m := doc
		switch obj {
		case "":
		case "goodput_slo_ms":
			m = doc["config"].(map[string]any)[obj].(map[string]any)
		default:
			m = doc[obj].(map[string]any)
		}
		var got []string
		for k := range m {
			got = append(got, k)
		}
		slices.Sort(got)
		fields = slices.Clone(fields)
		slices.Sort(fields)
		if !slices.Equal(got, fields) {
			t.Errorf("%q fields:\n got %v\nwant %v", obj, got, fields)
		}
	}
	if doc["schema"] != SchemaVersion {
		t.Errorf("schema %v", doc["schema"])
	}
	if v := doc["latency_ms"].(map[string]any)["max"]; v != 1234.567 {
		t.Errorf("latency max %v, want 1234.567 (milliseconds)", v)
	}
	// vLLM's fields mirror ours in vLLM's units.
	for name, want := range map[string]any{
		"completed":          201.0,
		"duration":           10.123456789,
		"total_input_tokens": 201.0 * 64,
		"mean_ttft_ms":       doc["ttft_ms"].(map[string]any)["mean"],
		"median_e2el_ms":     doc["latency_ms"].(map[string]any)["p50"],
		"p99_itl_ms":         doc["itl_ms"].(map[string]any)["p99"],
		"request_goodput":    150 / 10.123456789,
		"cached_token_ratio": 0.25,
	} {
		if doc[name] != want {
			t.Errorf("%s = %v, want %v", name, doc[name], want)
		}
	}
}

func TestJSONRoundTrip(t *testing.T) {
	for _, open := range []bool{true, false} {
		want := sampleResult(open, true)
		if open {
			want.Trace = &TraceInfo{Path: "t.jsonl", Format: TraceMooncake, Requests: 205, TokenScale: 0.125,
				BlockReuseBound: 0.366, TokenReuseBound: 0.37}
			want.Config.TimeScale = 10
		}
		var b bytes.Buffer
		if err := want.WriteJSON(&b); err != nil {
			t.Fatal(err)
		}
		got, err := ReadJSON(&b)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range []struct {
			name      string
			got, want interface{ TotalCount() int64 }
		}{
			{"latency", got.LatencyHistogram, want.LatencyHistogram},
			{"ttft", got.TTFTHistogram, want.TTFTHistogram},
			{"itl", got.ITLHistogram, want.ITLHistogram},
		} {
			if h.got.TotalCount() != h.want.TotalCount() {
				t.Errorf("%s histogram: %d values, want %d", h.name, h.got.TotalCount(), h.want.TotalCount())
			}
		}
		if !got.LatencyHistogram.Equals(want.LatencyHistogram) || !got.ITLHistogram.Equals(want.ITLHistogram) {
			t.Error("histograms changed in the round trip")
		}
		if !got.Start.Equal(want.Start) {
			t.Errorf("start %v, want %v", got.Start, want.Start)
		}
		got.LatencyHistogram, got.TTFTHistogram, got.ITLHistogram, got.TPOTHistogram = nil, nil, nil, nil
		want.LatencyHistogram, want.TTFTHistogram, want.ITLHistogram, want.TPOTHistogram = nil, nil, nil, nil
		got.Start, want.Start = time.Time{}, time.Time{}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("round trip changed the result:\n got %+v\nwant %+v", got, want)
		}
	}
}

func TestReadJSONRejects(t *testing.T) {
	for _, input := range []string{
		``,
		`{"schema":"sluice.bench/v0"}`,
		`{"schema":"sluice.bench/v1","histograms":{"latency_us":"not a histogram"}}`,
	} {
		if _, err := ReadJSON(strings.NewReader(input)); err == nil {
			t.Errorf("ReadJSON(%q) accepted it", input)
		}
	}
}

// TestSummaryExactExtremes checks that min, max and mean are exact while
// percentiles stay within the histogram's precision.
func TestSummaryExactExtremes(t *testing.T) {
	d := newDist()
	values := []time.Duration{1234567 * time.Nanosecond, 20 * time.Millisecond, 20*time.Millisecond + 1, 987654321}
	var sum time.Duration
	for _, v := range values {
		d.record(v)
		sum += v
	}
	s := d.summary()
	if s.Min != values[0] || s.Max != values[3] || s.Mean != sum/4 || s.Count != 4 {
		t.Errorf("summary %+v", s)
	}
	if diff := s.P50 - 20*time.Millisecond; diff < 0 || diff > 20*time.Microsecond {
		t.Errorf("p50 %v, want 20ms within 0.1%%", s.P50)
	}
	if s.P999 != s.Max {
		t.Errorf("p99.9 %v of 4 values, want the max %v", s.P999, s.Max)
	}
	if (&dist{hist: newHistogram()}).summary() != (Summary{}) {
		t.Error("empty summary not zero")
	}
	// A value past the histogram's range is clamped there, not lost.
	d.record(2 * time.Hour)
	if d.hist.TotalCount() != 5 || d.summary().Max != 2*time.Hour {
		t.Errorf("out-of-range value: count %d, max %v", d.hist.TotalCount(), d.summary().Max)
	}
}
