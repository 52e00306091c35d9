package kvroute

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/sim"
)

// TestWithSimReplicas routes the turns of conversations to three real
// sluice sim replicas (prefix cache on) the way the gateway will: hash the
// body, pick, observe the first-token time. Every turn after the first must
// find its prefix cached on the replica it lands on, and the router must
// read the sims' /metrics.
func TestWithSimReplicas(t *testing.T) {
	var bs []*backend
	for i := range 3 {
		s, err := sim.New(sim.Config{ID: fmt.Sprint("sim", i), PrefillPerToken: time.Microsecond, ITL: time.Millisecond, TTFT: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(s.Handler())
		t.Cleanup(srv.Close)
		bs = append(bs, &backend{key: srv.URL})
	}
	r := New(Config{Pool: "chat"}, Options{})
	t.Cleanup(r.Close)
	hc := &http.Client{}
	t.Cleanup(hc.CloseIdleConnections)
	blocks := make([]uint64, 0, DefaultMaxBlocks)
	type msg struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	convs := make([][]msg, 7) // 7: a fixed rotation over 3 replicas would not keep them home
	for i := range convs {
		convs[i] = []msg{{"system", fmt.Sprintf("You are assistant number %d. %s", i, strings.Repeat("Answer with care and cite sources. ", 30))}}
	}
	var later, laterCached int
	for turn := range 4 {
		for i := range convs {
			convs[i] = append(convs[i], msg{"user", fmt.Sprintf("Question %d of conversation %d: %s", turn, i, strings.Repeat("why is the sky blue? ", 10))})
			body, _ := json.Marshal(map[string]any{"model": "sim-llm", "messages": convs[i], "max_tokens": 4})
			blocks = r.HashPrompt(body, blocks)
			b := r.Pick(cands(bs...), Request{Blocks: blocks})
			start := time.Now()
			resp, err := hc.Post(b.Key()+"/v1/chat/completions", "application/json", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			var out struct {
				Choices []struct {
					Message msg `json:"message"`
				} `json:"choices"`
				Usage struct {
					PromptTokens        int `json:"prompt_tokens"`
					PromptTokensDetails struct {
						CachedTokens int `json:"cached_tokens"`
					} `json:"prompt_tokens_details"`
				} `json:"usage"`
			}
			err = json.NewDecoder(resp.Body).Decode(&out)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || len(out.Choices) == 0 {
				t.Fatalf("status %d, err %v", resp.StatusCode, err)
			}
			r.ObserveTTFT(b.Key(), time.Since(start), len(blocks))
			convs[i] = append(convs[i], out.Choices[0].Message)
			if turn > 0 {
				later++
				if out.Usage.PromptTokensDetails.CachedTokens*2 > out.Usage.PromptTokens {
					laterCached++
				}
			}
		}
	}
	if laterCached != later {
		t.Errorf("%d of %d later turns found over half their prompt cached", laterCached, later)
	}
	r.ScrapeOnce(t.Context())
	st := r.Status()
	used := 0
	for _, rs := range st.Replicas {
		if rs.Load == nil || rs.Load.Engine != "vllm" || !rs.Load.HasKV || rs.ScrapeError != "" {
			t.Errorf("%s: load %+v, scrape error %q", rs.Key, rs.Load, rs.ScrapeError)
		}
		if rs.Picks > 0 {
			used++
		}
	}
	if used < 2 {
		t.Errorf("the conversations used %d of 3 replicas", used)
	}
}
