package e2e

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// TestStreamSurvivesColdStart: a streamed request that arrives while the
// pool's only replica is still loading its model (15 s) waits in the queue;
// the gateway keeps the stream alive with SSE comments, so a client that
// gives up after 5 s without a byte gets its whole answer.
func TestStreamSurvivesColdStart(t *testing.T) {
	g := startGateway(t, strings.NewReplacer("REPLICAS", "1", `"--itl", "20ms"]`, `"--itl", "20ms", "--startup-delay", "15s"]`).Replace(processPool))
	const idle = 5 * time.Second
	conn, err := net.Dial("tcp", strings.TrimPrefix(g.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"model":"sim-llm","messages":[{"role":"user","content":"tell me a story"}],"max_tokens":8,"stream":true}`
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: sluice\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	start := time.Now()
	br := bufio.NewReader(conn)
	var comments, events int
	var status string
	for {
		// The client's idle timeout: each read must see a byte within 5 s.
		_ = conn.SetReadDeadline(time.Now().Add(idle))
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("after %v (%d keep-alive comments, %d events): %v", time.Since(start).Round(time.Millisecond), comments, events, err)
		}
		switch {
		case status == "":
			status = strings.TrimSpace(line)
			if !strings.Contains(status, " 200 ") {
				t.Fatalf("status line %q", status)
			}
		case strings.HasPrefix(line, ": waiting for a replica"):
			comments++
		case strings.HasPrefix(line, "event: error"):
			t.Fatalf("the stream failed: %q", line)
		case strings.HasPrefix(line, "data: [DONE]"):
			if comments == 0 || events == 0 {
				t.Fatalf("done after %d comments and %d events; want both", comments, events)
			}
			return
		case strings.HasPrefix(line, "data: "):
			events++
		}
	}
}
