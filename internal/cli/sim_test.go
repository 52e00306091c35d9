package cli

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer a command and a test may share.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestSimCommand(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stdout, stderr lockedBuffer
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, []string{"sim", "--addr", "127.0.0.1:0", "--id", "cli-sim",
			"--model", "m1", "--model", "m2", "--ttft", "0", "--itl", "0"}, &stdout, &stderr)
	}()

	addrRE := regexp.MustCompile(`msg="sim listening" addr=(\S+)`)
	var addr string
	for deadline := time.Now().Add(10 * time.Second); addr == ""; {
		if m := addrRE.FindStringSubmatch(stderr.String()); m != nil {
			addr = m[1]
			break
		}
		select {
		case err := <-done:
			t.Fatalf("sim exited early: %v; stderr %q", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no start line; stderr %q", stderr.String())
		}
		time.Sleep(time.Millisecond)
	}
	if !strings.Contains(stderr.String(), "models=\"[m1 m2]\"") {
		t.Errorf("start line without the models: %q", stderr.String())
	}

	resp, err := http.Post("http://"+addr+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"m2","messages":[{"role":"user","content":"hi"}],"max_tokens":3}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Sim-Instance") != "cli-sim" {
		t.Errorf("chat: %s, instance %q: %s", resp.Status, resp.Header.Get("X-Sim-Instance"), body)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("sim after cancel: %v", err)
	}
	if stdout.String() != "" {
		t.Errorf("sim wrote to stdout: %q", stdout.String())
	}
}

func TestSimCommandRejectsBadFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--error-rate", "2"}, "error-rate"},
		{[]string{"--max-running", "-1"}, "max-running"},
		{[]string{"--max-body", "lots"}, "--max-body"},
		{[]string{"--ttft", "soon"}, "ttft"},
		{[]string{"extra"}, "unknown command"},
	}
	for _, tc := range tests {
		var out lockedBuffer
		err := Run(t.Context(), append([]string{"sim", "--addr", "127.0.0.1:0"}, tc.args...), &out, &out)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("sim %v: error %v, want one mentioning %q", tc.args, err, tc.want)
		}
	}
}
