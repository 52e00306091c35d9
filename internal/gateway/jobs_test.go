package gateway

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

type jobView struct {
	ID       string
	Status   string
	Attempts int
	Result   *struct {
		StatusCode int `json:"status_code"`
		Body       json.RawMessage
	}
}

func (g *gw) getJob(t *testing.T, path, key string) (int, jobView) {
	t.Helper()
	req, _ := http.NewRequest("GET", g.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var j jobView
	_ = json.Unmarshal([]byte(readAll(t, resp)), &j)
	return resp.StatusCode, j
}

func TestRequestsBecomeJobs(t *testing.T) {
	be, _ := simBackend(t)
	g := startGateway(t, strings.Replace(tenancyConfig(be.URL), "rpm: 5", "rpm: 1000", 1))
	body := `{"model":"sim-llm","messages":[{"role":"user","content":"later please"}],"max_tokens":3}`

	resp := g.post("/v1/chat/completions", body, "Authorization", "Bearer key-a", "Prefer", "respond-async")
	var j jobView
	if err := json.Unmarshal([]byte(readAll(t, resp)), &j); err != nil || resp.StatusCode != 202 || j.ID == "" {
		t.Fatalf("respond-async: %d %+v %v", resp.StatusCode, j, err)
	}
	if loc := resp.Header.Get("Location"); loc != "/v1/jobs/"+j.ID {
		t.Fatalf("Location %q", loc)
	}
	code, done := g.getJob(t, "/v1/jobs/"+j.ID+"?wait=20s", "key-a")
	if code != 200 || done.Status != "succeeded" || done.Result == nil || done.Result.StatusCode != 200 || !strings.Contains(string(done.Result.Body), "chat.completion") {
		t.Fatalf("job after wait: %d %+v", code, done)
	}
	// The same request answered live gives the same (deterministic) text.
	live := readAll(t, g.post("/v1/chat/completions", body, "Authorization", "Bearer key-a"))
	var a, b struct {
		Choices []struct{ Message struct{ Content string } }
	}
	_ = json.Unmarshal(done.Result.Body, &a)
	_ = json.Unmarshal([]byte(live), &b)
	if len(a.Choices) == 0 || len(b.Choices) == 0 || a.Choices[0].Message.Content != b.Choices[0].Message.Content {
		t.Errorf("job result %s differs from live answer %s", done.Result.Body, live)
	}

	t.Run("another tenant cannot see it", func(t *testing.T) {
		if code, _ := g.getJob(t, "/v1/jobs/"+j.ID, "key-b"); code != 404 {
			t.Fatalf("team-b got %d for team-a's job", code)
		}
	})
	t.Run("bad jobs are refused at submit time", func(t *testing.T) {
		for _, tc := range []struct {
			body string
			want int
		}{
			{`{"method":"POST","path":"/v1/chat/completions","body":{"model":"nope"}}`, 404},
			{`{"method":"POST","path":"/v1/chat/completions","body":{"model":"other"}}`, 403},
			{`{"method":"POST","path":"/v1/chat/completions","body":` + `{"model":"sim-llm","x":"` + strings.Repeat("x", 3000) + `"}}`, 413},
			{`{"method":"POST","path":"/v1/jobs","body":{}}`, 400},
			{`not json`, 400},
		} {
			resp := g.post("/v1/jobs", tc.body, "Authorization", "Bearer key-a")
			if b := readAll(t, resp); resp.StatusCode != tc.want || !strings.Contains(b, `"error"`) {
				t.Errorf("POST /v1/jobs %.60s: %d %s, want %d", tc.body, resp.StatusCode, b, tc.want)
			}
		}
	})
	t.Run("jobs API needs credentials", func(t *testing.T) {
		resp, _ := http.Get(g.url + "/v1/jobs")
		if readAll(t, resp); resp.StatusCode != 401 {
			t.Fatalf("anonymous list: %d", resp.StatusCode)
		}
	})
	t.Run("stats on admin", func(t *testing.T) {
		resp, err := http.Get(g.admin + "/api/jobs/stats")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%v %v", err, resp)
		}
		readAll(t, resp)
	})
}
