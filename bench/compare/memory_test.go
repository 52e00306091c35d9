package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/bench/internal/procs"
)

func TestMemorySamplePerOpen(t *testing.T) {
	m := &memorySample{
		Wanted: 1000, Open: 800,
		Before: procs.Memory{Pss: 10000, Rss: 12000},
		After:  procs.Memory{Pss: 26000, Rss: 28400},
	}
	m.perOpen()
	if m.PssPer != 20 || m.RssPer != 20.5 || !m.measured() {
		t.Errorf("per open: Pss %v RSS %v", m.PssPer, m.RssPer)
	}
	none := &memorySample{Wanted: 10}
	none.perOpen()
	if none.measured() || none.PssPer != 0 {
		t.Errorf("nothing open: %+v", none)
	}
}

func TestChatRequests(t *testing.T) {
	for stream, raw := range map[bool][]byte{false: idleRequest, true: streamRequest} {
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Model  string `json:"model"`
			Stream bool   `json:"stream"`
		}
		if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
			t.Fatalf("stream %v: %v", stream, err)
		}
		if body.Model != "sim-llm" || body.Stream != stream || req.URL.Path != "/v1/chat/completions" {
			t.Errorf("stream %v: %+v %s", stream, body, req.URL)
		}
	}
}

// TestOpenIdleAndStreams holds connections and streams open against the
// backend itself (no proxy) and counts them, then has the server drop them.
func TestOpenIdleAndStreams(t *testing.T) {
	srv := httptest.NewServer(backendHandler(5 * time.Millisecond))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	idle := openIdle(t.Context(), addr, 40)
	if idle.failed != 0 || len(idle.conns) != 40 {
		t.Fatalf("idle: %d open, %d failed (%v)", len(idle.conns), idle.failed, idle.firstErr)
	}
	if n := idle.alive(); n != 40 {
		t.Errorf("idle: %d alive, want 40", n)
	}
	streams := openStreams(t.Context(), addr, 10)
	if streams.failed != 0 || len(streams.conns) != 10 {
		t.Fatalf("streams: %d open, %d failed (%v)", len(streams.conns), streams.failed, streams.firstErr)
	}
	if n := streams.alive(); n != 10 {
		t.Errorf("streams: %d alive, want 10", n)
	}
	srv.CloseClientConnections()
	if n := idle.alive(); n != 0 {
		t.Errorf("idle after the server closed them: %d alive", n)
	}
	idle.close()
	streams.close()
	if n := streams.alive(); n != 0 {
		t.Errorf("streams after close: %d alive", n)
	}
}

// TestBackendStreams checks the slow stream's shape: SSE chunks, the first
// at once.
func TestBackendStreams(t *testing.T) {
	srv := httptest.NewServer(backendHandler(time.Millisecond))
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"sim-llm","stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		var chunk struct {
			Object string `json:"object"`
		}
		if err := json.Unmarshal([]byte(strings.TrimPrefix(strings.TrimSpace(line), "data: ")), &chunk); err != nil || chunk.Object != "chat.completion.chunk" {
			t.Fatalf("event %d: %q (%v)", i, line, err)
		}
		if blank, _ := br.ReadString('\n'); blank != "\n" {
			t.Fatalf("event %d not followed by a blank line: %q", i, blank)
		}
	}
	resp.Body.Close()
	_, _ = io.Copy(io.Discard, br)
}

func TestMaxConnWithin(t *testing.T) {
	for _, tt := range []struct {
		limit uint64
		want  int
	}{{1 << 20, 20000}, {20000, 18976}, {1024, 1024}} {
		if got := maxConnWithin(tt.limit); got != tt.want {
			t.Errorf("maxConnWithin(%d) = %d, want %d", tt.limit, got, tt.want)
		}
	}
}
