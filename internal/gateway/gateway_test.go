package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func poolYAML(name, balancer string, models []string, backends ...*backend) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  - name: %s\n    models: [%s]\n    balancer: %s\n    hash_on: \"header:X-Session-ID\"\n", name, strings.Join(quoteAll(models), ", "), balancer)
	b.WriteString("    health_check: {path: /health, interval: 100ms, timeout: 95ms, healthy_threshold: 1, unhealthy_threshold: 3}\n    backends:\n")
	for _, be := range backends {
		fmt.Fprintf(&b, "      - {url: %q}\n", be.URL)
	}
	return b.String()
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

func header() string {
	return "listen: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\nlog: {level: error}\nlimits: {max_request_body: 1KiB, drain_timeout: 10s}\npools:\n"
}

func TestRouting(t *testing.T) {
	a, b, c, d := newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c"), newBackend(t, "d")
	cfg := header() +
		poolYAML("chat", "round_robin", []string{"m1"}, a) +
		poolYAML("llamas", "round_robin", []string{"llama-*"}, b) +
		poolYAML("classifier", "round_robin", []string{"cls"}, c) +
		poolYAML("images", "round_robin", []string{"img"}, d) +
		"routes:\n  - {path_prefix: /classify, pool: classifier}\n  - {host: img.example.com, path_prefix: /, pool: images}\n"
	g := startGateway(t, cfg)

	cases := []struct {
		name, method, path, host, body string
		wantStatus                     int
		wantBackend, wantCode          string
	}{
		{"exact model", "POST", "/v1/chat/completions", "", chatBody, 200, "a", ""},
		{"glob model", "POST", "/v1/completions", "", `{"model":"llama-3-8b","prompt":"x"}`, 200, "b", ""},
		{"any /v1 path with model", "POST", "/v1/rerank", "", `{"model":"m1"}`, 200, "a", ""},
		{"route by prefix", "POST", "/classify/text", "", `not json at all`, 200, "c", ""},
		{"route prefix is per segment", "POST", "/classifyx", "", ``, 404, "", "unknown_route"},
		{"route by host", "GET", "/anything", "img.example.com", ``, 200, "d", ""},
		{"v2 by model name", "POST", "/v2/models/cls/infer", "", `{"inputs":[]}`, 200, "c", ""},
		{"v2 with version", "POST", "/v2/models/llama-x/versions/2/infer", "", `{}`, 200, "b", ""},
		{"unknown model", "POST", "/v1/chat/completions", "", `{"model":"nope"}`, 404, "", "model_not_found"},
		{"unknown v2 model", "GET", "/v2/models/nope/ready", "", ``, 404, "", "model_not_found"},
		{"malformed json", "POST", "/v1/chat/completions", "", `{"model":`, 400, "", "bad_request"},
		{"no model field", "POST", "/v1/chat/completions", "", `{"messages":[]}`, 400, "", "bad_request"},
		{"oversized body", "POST", "/v1/chat/completions", "", `{"model":"m1","x":"` + strings.Repeat("x", 2000) + `"}`, 413, "", "request_too_large"},
		{"GET on inference path", "GET", "/v1/chat/completions", "", ``, 404, "", "unknown_route"},
		{"unknown path", "GET", "/nope", "", ``, 404, "", "unknown_route"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, g.url+tc.path, strings.NewReader(tc.body))
			if tc.host != "" {
				req.Host = tc.host
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body := readAll(t, resp)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.wantStatus, body)
			}
			if got := resp.Header.Get("X-Backend"); got != tc.wantBackend {
				t.Errorf("backend %q, want %q", got, tc.wantBackend)
			}
			if resp.Header.Get("X-Request-Id") == "" {
				t.Error("no X-Request-ID in response")
			}
			if tc.wantCode != "" {
				var e struct {
					Error struct{ Message, Type, Code string }
				}
				if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Code != tc.wantCode || e.Error.Message == "" || e.Error.Type == "" {
					t.Errorf("error body %s: want OpenAI error with code %q", body, tc.wantCode)
				}
			}
		})
	}

	t.Run("body forwarded unchanged with forwarding headers", func(t *testing.T) {
		resp := g.post("/v1/chat/completions", chatBody, "X-Request-ID", "req-42", "X-Forwarded-For", "10.9.9.9")
		var got struct {
			BodyLen int `json:"body_len"`
			XFF     string
			Rid     string
		}
		if err := json.Unmarshal([]byte(readAll(t, resp)), &got); err != nil {
			t.Fatal(err)
		}
		if got.BodyLen != len(chatBody) || got.Rid != "req-42" || got.XFF != "10.9.9.9, 127.0.0.1" {
			t.Errorf("upstream saw %+v", got)
		}
		if resp.Header.Get("X-Request-Id") != "req-42" {
			t.Errorf("request id not propagated: %q", resp.Header.Get("X-Request-Id"))
		}
	})

	t.Run("GET /v1/models lists configured models", func(t *testing.T) {
		resp, err := http.Get(g.url + "/v1/models")
		if err != nil {
			t.Fatal(err)
		}
		var list struct {
			Object string
			Data   []struct{ ID, Object string }
		}
		if err := json.Unmarshal([]byte(readAll(t, resp)), &list); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range list.Data {
			ids = append(ids, m.ID)
		}
		if list.Object != "list" || strings.Join(ids, ",") != "m1,llama-*,cls,img" {
			t.Errorf("models %v (object %q)", ids, list.Object)
		}
	})
}

func TestBalancersEndToEnd(t *testing.T) {
	for _, bal := range []string{"round_robin", "weighted_round_robin", "random", "least_request", "p2c", "p2c_ewma", "consistent_hash"} {
		t.Run(bal, func(t *testing.T) {
			bs := []*backend{newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c")}
			cfg := header() + poolYAML("chat", bal, []string{"m1"}, bs...)
			if bal == "weighted_round_robin" {
				cfg = strings.Replace(cfg, fmt.Sprintf("{url: %q}", bs[0].URL), fmt.Sprintf("{url: %q, weight: 4}", bs[0].URL), 1)
			}
			g := startGateway(t, cfg)
			const n = 60
			for i := range n {
				hdr := []string{"X-Session-ID", fmt.Sprintf("s%d", i%5)}
				resp := g.post("/v1/chat/completions", chatBody, hdr...)
				if readAll(t, resp); resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
			}
			counts := []int{bs[0].count(), bs[1].count(), bs[2].count()}
			switch bal {
			case "round_robin":
				if counts[0] != 20 || counts[1] != 20 || counts[2] != 20 {
					t.Errorf("round robin shares %v, want 20 each", counts)
				}
			case "weighted_round_robin":
				if counts[0] != 40 || counts[1] != 10 || counts[2] != 10 {
					t.Errorf("weighted shares %v, want 40/10/10", counts)
				}
			case "consistent_hash":
				// Each of 5 sessions sticks to one backend: repeat and compare.
				before := counts
				for range 5 {
					g.post("/v1/chat/completions", chatBody, "X-Session-ID", "s0").Body.Close()
				}
				moved := 0
				for i, b := range bs {
					if d := b.count() - before[i]; d != 0 && d != 5 {
						moved++
					}
				}
				if moved != 0 {
					t.Errorf("session s0 spread over backends")
				}
			default:
				for i, c := range counts {
					if c == 0 {
						t.Errorf("backend %d got no traffic under %s: %v", i, bal, counts)
					}
				}
			}
		})
	}
}

func TestSSEIsStreamedEventByEvent(t *testing.T) {
	release := make(chan struct{})
	be := newBackend(t, "a")
	be.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"n\":1}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "data: {\"n\":2}\n\ndata: [DONE]\n\n")
	})
	g := startGateway(t, header()+poolYAML("chat", "p2c_ewma", []string{"m1"}, be))
	resp := g.post("/v1/chat/completions", `{"model":"m1","stream":true}`)
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	// The backend holds the rest of the stream until we have the first
	// event: this only passes if the gateway forwards without buffering.
	line, err := rd.ReadString('\n')
	if err != nil || line != "data: {\"n\":1}\n" {
		t.Fatalf("first event %q, %v", line, err)
	}
	close(release)
	rest, _ := io.ReadAll(rd)
	if string(rest) != "\ndata: {\"n\":2}\n\ndata: [DONE]\n\n" {
		t.Errorf("rest of stream %q", rest)
	}
}

func TestClientDisconnectCancelsUpstream(t *testing.T) {
	canceled := make(chan struct{})
	started := make(chan struct{})
	be := newBackend(t, "a")
	be.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done()
		close(canceled)
	})
	g := startGateway(t, header()+poolYAML("chat", "round_robin", []string{"m1"}, be))
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", g.url+"/v1/chat/completions", strings.NewReader(chatBody))
	go func() {
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	<-started
	cancel()
	select {
	case <-canceled:
	case <-time.After(10 * time.Second):
		t.Fatal("upstream request not canceled after the client left")
	}
}

func TestHealthChecksDriveFailover(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	g := startGateway(t, header()+poolYAML("chat", "round_robin", []string{"m1"}, a, b))
	a.setHealth(http.StatusInternalServerError)
	eventually(t, "backend a unhealthy", func() bool { return g.pools()[0].Backends[0].State == "unhealthy" })
	for range 10 {
		resp := g.post("/v1/chat/completions", chatBody)
		if readAll(t, resp); resp.Header.Get("X-Backend") != "b" {
			t.Fatalf("request went to %q while a is unhealthy", resp.Header.Get("X-Backend"))
		}
	}
	b.setHealth(http.StatusServiceUnavailable)
	eventually(t, "backend b unhealthy", func() bool { return g.pools()[0].Backends[1].State == "unhealthy" })
	resp := g.post("/v1/chat/completions", chatBody)
	body := readAll(t, resp)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "no_healthy_backend") {
		t.Fatalf("no healthy backend: status %d retry-after %q body %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	a.setHealth(http.StatusOK)
	eventually(t, "backend a healthy again", func() bool { return g.pools()[0].Backends[0].State == "healthy" })
	resp = g.post("/v1/chat/completions", chatBody)
	if readAll(t, resp); resp.StatusCode != 200 || resp.Header.Get("X-Backend") != "a" {
		t.Fatalf("after recovery: %d from %q", resp.StatusCode, resp.Header.Get("X-Backend"))
	}
}

func TestRetryOnConnectFailure(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + ln.Addr().String()
	ln.Close() // nothing listens here now
	live := newBackend(t, "live")
	cfg := header() + "  - name: chat\n    models: [m1]\n    balancer: round_robin\n    health_check: {path: \"\"}\n    backends:\n      - {url: " + dead + "}\n      - {url: " + live.URL + "}\n"
	g := startGateway(t, cfg)
	for range 6 {
		resp := g.post("/v1/chat/completions", chatBody)
		if body := readAll(t, resp); resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
	}
}

func TestBackendClosingMidResponse(t *testing.T) {
	be := newBackend(t, "a")
	g := startGateway(t, header()+poolYAML("chat", "round_robin", []string{"m1"}, be))
	cut := func(sse bool) func(w http.ResponseWriter, r *http.Request) {
		return func(w http.ResponseWriter, r *http.Request) {
			if sse {
				w.Header().Set("Content-Type", "text/event-stream")
			}
			w.Header().Set("Content-Length", "1000")
			w.WriteHeader(200)
			fmt.Fprint(w, "data: {\"partial\":true}\n\n")
			w.(http.Flusher).Flush()
			conn, _, _ := http.NewResponseController(w).Hijack()
			conn.Close()
		}
	}
	t.Run("sse ends with an error event", func(t *testing.T) {
		be.setHandler(cut(true))
		resp := g.post("/v1/chat/completions", chatBody)
		body := readAll(t, resp)
		if !strings.Contains(body, `data: {"error":`) {
			t.Errorf("stream cut without an error event: %q", body)
		}
	})
	t.Run("plain body is aborted, not passed off as complete", func(t *testing.T) {
		be.setHandler(cut(false))
		resp, err := http.Post(g.url+"/v1/chat/completions", "application/json", strings.NewReader(chatBody))
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err == nil {
			t.Error("client read a truncated body without an error")
		}
	})
	be.setHandler(nil)
	resp := g.post("/v1/chat/completions", chatBody)
	if readAll(t, resp); resp.StatusCode != 200 {
		t.Fatalf("gateway not serving after a broken backend: %d", resp.StatusCode)
	}
}

func TestReloadKeepsStreamsAndBackendState(t *testing.T) {
	release := make(chan struct{})
	a, b := newBackend(t, "a"), newBackend(t, "b")
	a.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		<-release
		fmt.Fprint(w, "data: 2\n\n")
	})
	g := startGateway(t, header()+poolYAML("chat", "round_robin", []string{"m1"}, a))
	resp := g.post("/v1/chat/completions", chatBody)
	rd := bufio.NewReader(resp.Body)
	if line, _ := rd.ReadString('\n'); line != "data: 1\n" {
		t.Fatalf("first event %q", line)
	}
	// Reload with a second backend and another balancer while the stream
	// is open, through the admin API.
	g.rewrite(header() + poolYAML("chat", "least_request", []string{"m1", "m2"}, a, b))
	r2, err := http.Post(g.admin+"/api/reload", "", nil)
	if err != nil || r2.StatusCode != 200 {
		t.Fatalf("reload: %v %v", err, r2)
	}
	r2.Body.Close()
	ps := g.pools()[0]
	if len(ps.Backends) != 2 || ps.Backends[0].InFlight != 1 || ps.Balancer != "least_request" {
		t.Fatalf("after reload: %+v (backend a must keep its in-flight stream)", ps)
	}
	close(release)
	rest, err := io.ReadAll(rd)
	resp.Body.Close()
	if err != nil || string(rest) != "\ndata: 2\n\n" {
		t.Fatalf("stream after reload: %q %v", rest, err)
	}
	resp = g.post("/v1/chat/completions", `{"model":"m2"}`)
	if readAll(t, resp); resp.StatusCode != 200 {
		t.Fatalf("new model after reload: %d", resp.StatusCode)
	}

	t.Run("invalid config keeps the old one", func(t *testing.T) {
		g.rewrite(header() + "  - name: chat\n    models: [m1]\n    balancer: nope\n    backends: [{url: " + a.URL + "}]\n")
		r3, _ := http.Post(g.admin+"/api/reload", "", nil)
		body := readAll(t, r3)
		if r3.StatusCode != 400 || !strings.Contains(body, "balancer") {
			t.Errorf("bad reload answered %d %s", r3.StatusCode, body)
		}
		resp := g.post("/v1/chat/completions", `{"model":"m2"}`)
		if readAll(t, resp); resp.StatusCode != 200 {
			t.Errorf("old config not serving: %d", resp.StatusCode)
		}
		m := scrape(t, g.admin)
		if !strings.Contains(m, `sluice_config_reloads_total{result="failure"} `) || strings.Contains(m, `sluice_config_reloads_total{result="failure"} 0`) {
			t.Errorf("failed reload not counted")
		}
	})

	t.Run("file change reloads", func(t *testing.T) {
		g.rewrite(header() + poolYAML("chat", "round_robin", []string{"m1", "m3"}, a, b))
		eventually(t, "model m3 after a file change", func() bool {
			resp := g.post("/v1/chat/completions", `{"model":"m3"}`)
			readAll(t, resp)
			return resp.StatusCode == 200
		})
	})
}

func TestGracefulShutdownDrainsStreams(t *testing.T) {
	release := make(chan struct{})
	be := newBackend(t, "a")
	be.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		<-release
		fmt.Fprint(w, "data: 2\n\n")
	})
	g := startGateway(t, header()+poolYAML("chat", "round_robin", []string{"m1"}, be))
	resp := g.post("/v1/chat/completions", chatBody)
	rd := bufio.NewReader(resp.Body)
	if line, _ := rd.ReadString('\n'); line != "data: 1\n" {
		t.Fatalf("first event %q", line)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- g.stop() }()
	eventually(t, "readiness to drop", func() bool { return !g.srv.ready.Load() })
	// New connections are refused while the stream drains.
	eventually(t, "listener closed", func() bool {
		c, err := net.Dial("tcp", g.srv.Addr())
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	close(release)
	rest, err := io.ReadAll(rd)
	resp.Body.Close()
	if err != nil || string(rest) != "\ndata: 2\n\n" {
		t.Fatalf("stream cut by shutdown: %q %v", rest, err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Run returned %v", err)
	}
}

func TestAdminEndpoints(t *testing.T) {
	be := newBackend(t, "a")
	g := startGateway(t, header()+poolYAML("chat", "p2c_ewma", []string{"m1"}, be))
	g.post("/v1/chat/completions", chatBody).Body.Close()
	for _, p := range []string{"/healthz", "/readyz", "/"} {
		resp, err := http.Get(g.admin + p)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v", p, err, resp)
		}
		resp.Body.Close()
	}
	m := scrape(t, g.admin)
	for _, want := range []string{
		`sluice_requests_total{code="200",pool="chat"} 1`,
		`sluice_upstream_requests_total{backend="` + be.URL + `",code="200",pool="chat"} 1`,
		`sluice_request_duration_seconds_bucket{pool="chat",le="0.005"}`,
		`sluice_time_to_first_byte_seconds_count{pool="chat"} 1`,
		`sluice_backend_up{backend="` + be.URL + `",pool="chat"} 1`,
		`sluice_backend_in_flight{backend="` + be.URL + `",pool="chat"} 0`,
		`sluice_queue_depth{pool="chat"} 0`,
		`sluice_config_reloads_total{result="success"} 0`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	ps := g.pools()
	if len(ps) != 1 || ps[0].Backends[0].EWMAMs <= 0 || ps[0].Backends[0].State != "healthy" {
		t.Errorf("pools %+v", ps)
	}
}

func scrape(t *testing.T, admin string) string {
	t.Helper()
	resp, err := http.Get(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return readAll(t, resp)
}

func TestConcurrentRequestsUnderRace(t *testing.T) {
	bs := []*backend{newBackend(t, "a"), newBackend(t, "b")}
	g := startGateway(t, header()+poolYAML("chat", "p2c_ewma", []string{"m1"}, bs...))
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for range 8 {
		wg.Go(func() {
			for range 25 {
				resp, err := http.Post(g.url+"/v1/chat/completions", "application/json", strings.NewReader(chatBody))
				if err != nil {
					errs <- err
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- fmt.Errorf("status %d", resp.StatusCode)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if bs[0].count()+bs[1].count() != 200 {
		t.Errorf("backends saw %d requests, want 200", bs[0].count()+bs[1].count())
	}
}

// TestLatencyEstimateUsesFirstEvent: a stream's headers come at once but
// its first event only after the model worked; the balancer's latency
// estimate must see the latter, or a slow replica looks fast.
func TestLatencyEstimateUsesFirstEvent(t *testing.T) {
	be := newBackend(t, "a")
	be.setHandler(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.(http.Flusher).Flush()
		time.Sleep(80 * time.Millisecond)
		fmt.Fprint(w, "data: {}\n\ndata: [DONE]\n\n")
	})
	g := startGateway(t, header()+poolYAML("chat", "p2c_ewma", []string{"m1"}, be))
	readAll(t, g.post("/v1/chat/completions", `{"model":"m1","stream":true}`))
	if ms := g.pools()[0].Backends[0].EWMAMs; ms < 75 {
		t.Fatalf("latency estimate %.1fms, want at least the 80ms to the first event", ms)
	}
}
