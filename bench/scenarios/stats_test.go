package main

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

func TestQuantileNearestRank(t *testing.T) {
	ten := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		q      float64
		want   time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one", []time.Duration{7}, 0.99, 7},
		{"median of ten", ten, 0.5, 5},
		{"p90 of ten", ten, 0.9, 9},
		{"p99 of ten is the max", ten, 0.99, 10},
		{"p0 is the min", ten, 0, 1},
		{"p100 is the max", ten, 1, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := quantile(tc.sorted, tc.q); got != tc.want {
				t.Fatalf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
			}
		})
	}
	d := distOf([]time.Duration{30, 10, 20})
	if d != (dist{Count: 3, P50: 20, P90: 30, P99: 30, Max: 30}) {
		t.Fatalf("distOf = %+v", d)
	}
}

func TestIntegrateHoldsEachSample(t *testing.T) {
	s := func(at time.Duration, ready int) sample { return sample{At: at, Ready: ready} }
	ready := func(x sample) float64 { return float64(x.Ready) }
	samples := []sample{s(time.Second, 2), s(3*time.Second, 4), s(4*time.Second, 1)}
	for _, tc := range []struct {
		name     string
		from, to time.Duration
		want     float64
	}{
		// The first sample also covers the time before it.
		{"whole", 0, 6 * time.Second, 2*3 + 4*1 + 1*2},
		{"inside one sample", 1500 * time.Millisecond, 2500 * time.Millisecond, 2},
		{"across samples", 2 * time.Second, 3500 * time.Millisecond, 2*1 + 4*0.5},
		{"after the last", 5 * time.Second, 7 * time.Second, 2},
		{"empty window", 3 * time.Second, 3 * time.Second, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := integrate(samples, ready, tc.from, tc.to); math.Abs(got-tc.want) > 1e-9 {
				t.Fatalf("integrate = %v, want %v", got, tc.want)
			}
		})
	}
	if got := integrate(nil, ready, 0, time.Second); got != 0 {
		t.Fatalf("integrate of no samples = %v", got)
	}
	if got := maxOf(samples, ready, 2*time.Second, 4*time.Second); got != 4 {
		t.Fatalf("maxOf = %v, want 4", got)
	}
}

func TestRecordStatistics(t *testing.T) {
	recs := []record{
		{At: 0, Latency: 100 * time.Millisecond},
		{At: 500 * time.Millisecond, Latency: 300 * time.Millisecond},
		{At: time.Second, Latency: 50 * time.Millisecond, Fail: failStatus, Status: 503},
		{At: 1500 * time.Millisecond, Latency: 2 * time.Second},
		{At: 2 * time.Second, Latency: 150 * time.Millisecond},
	}
	if got := sloAttainment(recs, 200*time.Millisecond); got != 0.4 {
		t.Errorf("SLO attainment %v, want 0.4 (a failure misses it)", got)
	}
	// Ends: 0.1, 0.8, (1.05 failed), 3.5, 2.15.
	if got := completionRate(recs, 0, 2*time.Second); got != 1 {
		t.Errorf("completion rate over [0,2s) = %v, want 1/s", got)
	}
	if got := completionRate(recs, 2*time.Second, 4*time.Second); got != 1 {
		t.Errorf("completion rate over [2s,4s) = %v, want 1/s", got)
	}
	if got := count(recs, and(isOK, sentIn(time.Second, 3*time.Second))); got != 2 {
		t.Errorf("%d successes sent in [1s,3s), want 2", got)
	}
	pts := bucketQuantile(recs, func(*record) bool { return true }, 0.99, time.Second, 3*time.Second)
	want := []point{{0.5, 300}, {1.5, math.Inf(1)}, {2.5, 150}}
	if len(pts) != len(want) {
		t.Fatalf("buckets %v, want %v", pts, want)
	}
	for i := range want {
		if pts[i] != want[i] {
			t.Errorf("bucket %d = %v, want %v", i, pts[i], want[i])
		}
	}
	if !math.IsNaN(ratio(1, 0)) || ratio(3, 2) != 1.5 {
		t.Error("ratio")
	}
}

func TestJSONRoundTrips(t *testing.T) {
	type all struct {
		D  dist    `json:"d"`
		S  sample  `json:"s"`
		P  []point `json:"p"`
		Ph phase   `json:"ph"`
		N  num     `json:"n"`
		X  num     `json:"x"`
	}
	in := all{
		D:  dist{Count: 3, P50: 1500 * time.Microsecond, P90: 2 * time.Millisecond, P99: 3 * time.Millisecond, Max: time.Second},
		S:  sample{At: 1250 * time.Millisecond, InFlight: 7, QueueDepth: 3, Ready: 2, Alive: 3, Desired: 3, RSSKiB: 4096},
		P:  []point{{1, 2.5}, {2, math.Inf(1)}},
		Ph: phase{Duration: 7500 * time.Millisecond, Rate: 12.5},
		N:  num(math.NaN()),
		X:  1.25,
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"p50_ms":1.5`, `"at_ms":1250`, `[2,null]`, `"seconds":7.5`, `"n":null`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON %s lacks %s", b, want)
		}
	}
	var out all
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out.D != in.D || out.S != in.S || out.Ph != in.Ph || out.X != in.X || !math.IsNaN(float64(out.N)) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", out, in)
	}
	if len(out.P) != 2 || out.P[0] != in.P[0] || !math.IsInf(out.P[1].V, 1) {
		t.Fatalf("points round trip: %v", out.P)
	}
}

func TestRecoveriesMeasureEachBurst(t *testing.T) {
	phases := []phase{
		{Duration: 2 * time.Second, Rate: 10},
		{Duration: 4 * time.Second, Rate: 40}, // the pool catches up
		{Duration: 2 * time.Second, Rate: 10},
		{Duration: 2 * time.Second, Rate: 40}, // it never does
	}
	need := func(rate float64) int { return int(rate / 10) }
	samples := []sample{
		{At: 0, Ready: 1},
		{At: 3500 * time.Millisecond, Ready: 2},
		{At: 4500 * time.Millisecond, Ready: 4},
		{At: 7 * time.Second, Ready: 1},
	}
	slo := 200 * time.Millisecond
	var recs []record
	add := func(at time.Duration, lat time.Duration) { recs = append(recs, record{At: at, Latency: lat}) }
	add(500*time.Millisecond, 100*time.Millisecond)
	add(2100*time.Millisecond, 900*time.Millisecond) // burst 1, second 0: slow
	add(3100*time.Millisecond, 100*time.Millisecond) // second 1: fast, but
	add(4100*time.Millisecond, 700*time.Millisecond) // second 2 is slow again
	add(5100*time.Millisecond, 150*time.Millisecond) // second 3: fast to the end
	add(8500*time.Millisecond, 100*time.Millisecond) // burst 2, second 0: fast
	add(9500*time.Millisecond, 900*time.Millisecond) // its last second: slow

	got := recoveries(phases, 10, need, recs, samples, slo)
	if len(got) != 2 {
		t.Fatalf("%d bursts, want 2: %+v", len(got), got)
	}
	b1, b2 := got[0], got[1]
	if b1.StartS != 2 || b1.DurationS != 4 || float64(b1.ReplicasS) != 2.5 || float64(b1.LatencyS) != 3 {
		t.Errorf("burst 1: %+v, want start 2, 4s long, replicas after 2.5s, latency after 3s", b1)
	}
	if b2.StartS != 8 || !math.IsNaN(float64(b2.ReplicasS)) || !math.IsNaN(float64(b2.LatencyS)) {
		t.Errorf("burst 2: %+v, want start 8 and neither recovery", b2)
	}
}

func TestSumCounter(t *testing.T) {
	text := `# HELP sluice_retries_total Retried upstream attempts.
# TYPE sluice_retries_total counter
sluice_retries_total{pool="chat"} 3
sluice_retries_total{pool="other"} 100
sluice_retries_total_extra{pool="chat"} 7
sluice_upstream_requests_total{backend="a",code="200",pool="chat"} 5
sluice_upstream_requests_total{backend="b",code="502",pool="chat"} 2.5
sluice_upstream_requests_total{backend="b",code="502",pool="chatty"} 9
`
	for _, tc := range []struct {
		family string
		want   float64
	}{
		{"sluice_retries_total", 3},
		{"sluice_upstream_requests_total", 7.5},
		{"sluice_missing_total", 0},
	} {
		if got := sumCounter(text, tc.family); got != tc.want {
			t.Errorf("sumCounter(%s) = %v, want %v", tc.family, got, tc.want)
		}
	}
}
