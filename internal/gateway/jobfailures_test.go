package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/sim"
)

func TestJobFailuresRing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		add   []string // job IDs, in order
		want  []string // newest first
		wantN int
	}{
		{name: "empty", want: []string{}},
		{name: "newest first", add: []string{"a", "b", "c"}, want: []string{"c", "b", "a"}},
		{name: "a job is kept once", add: []string{"a", "b", "a"}, want: []string{"b", "a"}},
		{name: "bounded", add: ids(jobFailuresKept + 7), wantN: jobFailuresKept},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r jobFailures
			for _, id := range tc.add {
				r.add(JobFailure{ID: id})
			}
			got := r.list()
			var gotIDs []string
			for _, f := range got {
				gotIDs = append(gotIDs, f.ID)
			}
			if tc.want != nil && strings.Join(gotIDs, ",") != strings.Join(tc.want, ",") {
				t.Errorf("list %v, want %v", gotIDs, tc.want)
			}
			if tc.wantN > 0 {
				all := tc.add
				wantFirst, wantLast := all[len(all)-1], all[len(all)-tc.wantN]
				if len(got) != tc.wantN || got[0].ID != wantFirst || got[len(got)-1].ID != wantLast {
					t.Errorf("%d kept, from %s to %s; want %d from %s to %s", len(got), got[0].ID, got[len(got)-1].ID, tc.wantN, wantFirst, wantLast)
				}
			}
		})
	}
}

func ids(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("job_%03d", i)
	}
	return out
}

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly", 7, "exactly"},
		{"longer text", 6, "longer…"},
		{"héllo", 2, "h…"}, // never half a rune
	} {
		if got := truncate(tc.in, tc.n); got != tc.want {
			t.Errorf("truncate(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

// TestJobFailuresAPI runs a job against a backend that answers 500 until
// the job fails, and reads it back from GET /api/jobs/failures: the job's
// ID, tenant, pool, model, last status and error, and nothing of its body.
func TestJobFailuresAPI(t *testing.T) {
	cfg := sim.DefaultConfig()
	cfg.TTFT, cfg.ITL = 0, 0
	cfg.Models = []string{"sim-llm", "other"}
	cfg.ErrorRate = 1
	s, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	broken := httptest.NewServer(s.Handler())
	defer broken.Close()
	g := startGateway(t, strings.Replace(tenancyConfig(broken.URL), "rpm: 5", "rpm: 1000", 1)+"jobs: {max_attempts: 2}\n")

	const secret = "prompt text that must not be shown"
	body := `{"model":"sim-llm","messages":[{"role":"user","content":"` + secret + `"}],"max_tokens":3}`
	resp := g.post("/v1/chat/completions", body, "Authorization", "Bearer key-a", "Prefer", "respond-async")
	var j jobView
	if err := json.Unmarshal([]byte(readAll(t, resp)), &j); err != nil || resp.StatusCode != 202 {
		t.Fatalf("respond-async: %d %+v %v", resp.StatusCode, j, err)
	}
	if code, done := g.getJob(t, "/v1/jobs/"+j.ID+"?wait=30s", "key-a"); code != 200 || done.Status != string(jobs.StatusFailed) {
		t.Fatalf("job after wait: %d %+v, want failed", code, done)
	}

	resp, err = http.Get(g.admin + "/api/jobs/failures")
	if err != nil {
		t.Fatal(err)
	}
	raw := readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /api/jobs/failures: %d %s", resp.StatusCode, raw)
	}
	var got struct {
		Failures []JobFailure
		Kept     int
	}
	if err := json.Unmarshal([]byte(raw), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Failures) != 1 || got.Kept != jobFailuresKept {
		t.Fatalf("failures %s, want the one failed job", raw)
	}
	f := got.Failures[0]
	if f.ID != j.ID || f.Tenant != "team-a" || f.Pool != "chat" || f.Model != "sim-llm" || f.Attempts != 2 || f.Status != 500 ||
		!strings.Contains(f.Error, "500") || time.Since(f.Time) > time.Minute {
		t.Errorf("failure %+v, want job %s of team-a, pool chat, model sim-llm, 2 attempts, status 500, just now", f, j.ID)
	}
	if strings.Contains(raw, secret) || strings.Contains(raw, "key-a") {
		t.Errorf("failures leak the request body or the key: %s", raw)
	}
}
