package main

import (
	"bufio"
	"math"
	"strings"
	"testing"
)

func TestParseWrk(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    wrkResult
		wantErr bool
	}{
		{
			name: "clean run",
			out: `Running 7s test @ http://127.0.0.1:41234/v1/chat/completions
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.10ms    2.01ms  40.12ms   88.10%
    Req/Sec    10.51k     1.02k   12.80k    71.43%
  146234 requests in 7.00s, 61.37MB read
Requests/sec:  20890.57
Transfer/sec:      8.77MB
`,
			want: wrkResult{Requests: 146234, RequestsPerS: 20890.57, DurationS: 7},
		},
		{
			name: "errors and non-2xx",
			out: `  1000 requests in 500.00ms, 1.00MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 100
Requests/sec:   2000.00
`,
			want: wrkResult{Requests: 1000, RequestsPerS: 1800, Non2xx: 100, SocketErrors: 10, DurationS: 0.5, ErrorFraction: 0.11},
		},
		{name: "no summary", out: "unable to connect to 127.0.0.1:1 Connection refused\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseWrk(tt.out)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if math.Abs(got.RequestsPerS-tt.want.RequestsPerS) > 1e-6 || math.Abs(got.ErrorFraction-tt.want.ErrorFraction) > 1e-9 ||
				got.Requests != tt.want.Requests || got.Non2xx != tt.want.Non2xx || got.SocketErrors != tt.want.SocketErrors ||
				math.Abs(got.DurationS-tt.want.DurationS) > 1e-9 {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseGoBench(t *testing.T) {
	out := `goos: linux
goarch: amd64
pkg: github.com/sluice-ai/sluice/internal/gateway
BenchmarkProxyOverhead/direct-2         	   20000	     50000 ns/op	    6000 B/op	      70 allocs/op
BenchmarkProxyOverhead/sluice-2         	   10000	     90000 ns/op	   12000 B/op	     140 allocs/op
BenchmarkProxyOverhead/direct-2         	   20000	     60000 ns/op	    6100 B/op	      70 allocs/op
BenchmarkProxyOverhead/sluice-2         	   10000	    110000 ns/op	   12100 B/op	     141 allocs/op
BenchmarkProxyOverhead/direct-2         	   20000	     55000 ns/op	    6050 B/op	      70 allocs/op
BenchmarkProxyOverhead/sluice-2         	   10000	    100000 ns/op	   12050 B/op	     140 allocs/op
PASS
ok  	github.com/sluice-ai/sluice/internal/gateway	12.3s
`
	rows := parseGoBench(out)
	if len(rows) != 2 {
		t.Fatalf("got %d rows, want 2: %+v", len(rows), rows)
	}
	want := []microRow{
		{Name: "direct", NsPerOp: 55000, BytesPerOp: 6050, AllocsPerOp: 70, AddedNs: 0},
		{Name: "sluice", NsPerOp: 100000, BytesPerOp: 12050, AllocsPerOp: 140, AddedNs: 45000},
	}
	for i, w := range want {
		g := rows[i]
		if g.Name != w.Name || g.NsPerOp != w.NsPerOp || g.BytesPerOp != w.BytesPerOp || g.AllocsPerOp != w.AllocsPerOp || g.AddedNs != w.AddedNs {
			t.Errorf("row %d = %+v, want %+v", i, g, w)
		}
		if len(g.Samples) != 3 {
			t.Errorf("row %d has %d samples, want 3", i, len(g.Samples))
		}
	}
	if rows := parseGoBench("FAIL\n"); len(rows) != 0 {
		t.Errorf("rows from output without benchmarks: %+v", rows)
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP vllm:num_requests_running Requests in the batch.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="sim-llm"} 3
vllm:num_requests_waiting{model_name="sim-llm"} 2
vllm:request_success_total{finished_reason="length",model_name="sim-llm"} 40
vllm:request_success_total{finished_reason="stop",model_name="sim-llm"} 2
go_goroutines 12
`
	m, err := parseMetrics(bufio.NewScanner(strings.NewReader(text)))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]float64{
		"vllm:num_requests_running":  3,
		"vllm:num_requests_waiting":  2,
		"vllm:request_success_total": 42,
		"go_goroutines":              12,
	} {
		if m[name] != want {
			t.Errorf("%s = %v, want %v", name, m[name], want)
		}
	}
}
