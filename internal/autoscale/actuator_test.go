package autoscale

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/sluice-ai/sluice/internal/config"
)

// recorder writes a script that appends its arguments to a file and exits
// with status code, printing out first; it returns the script and the file.
func recorder(t *testing.T, code int, out string) (script, calls string) {
	t.Helper()
	dir := t.TempDir()
	calls = filepath.Join(dir, "calls")
	script = filepath.Join(dir, "scale.sh")
	body := "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '" + calls + "'\necho '" + out + "'\nexit " + string(rune('0'+code)) + "\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return script, calls
}

func readCalls(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func TestCommandActuator(t *testing.T) {
	script, calls := recorder(t, 0, "desired capacity set")
	var logs syncBuffer
	a, err := NewExternalActuator("chat", config.Actuator{
		// An argument with a space and shell syntax reaches the program
		// as one literal argument: no shell runs.
		Command: []string{script, "--auto-scaling-group-name", "{pool}-asg", "--desired-capacity", "{replicas}", "a b; $(x)"},
		Timeout: config.Duration(10 * time.Second),
	}, ExternalOptions{Initial: 1, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if a.Desired() != 1 {
		t.Fatalf("Desired before any Scale = %d, want Initial 1", a.Desired())
	}
	ctx := t.Context()
	for _, n := range []int{3, 5} {
		if err := a.Scale(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{
		"--auto-scaling-group-name chat-asg --desired-capacity 3 a b; $(x)",
		"--auto-scaling-group-name chat-asg --desired-capacity 5 a b; $(x)",
	}
	if got := readCalls(t, calls); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("calls %q, want %q", got, want)
	}
	if a.Desired() != 5 {
		t.Errorf("Desired = %d, want 5", a.Desired())
	}
	if !strings.Contains(logs.String(), `output="desired capacity set"`) || !strings.Contains(logs.String(), "replicas=5") {
		t.Errorf("run not logged with its output:\n%s", logs.String())
	}
}

func TestCommandActuatorFailures(t *testing.T) {
	failing, calls := recorder(t, 3, "AccessDenied: not authorized")
	var logs syncBuffer
	a, err := NewExternalActuator("chat", config.Actuator{Command: []string{failing, "{replicas}"}, Timeout: config.Duration(10 * time.Second)},
		ExternalOptions{Initial: 2, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	err = a.Scale(t.Context(), 4)
	if err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("Scale = %v, want exit status 3", err)
	}
	if a.Desired() != 2 || len(readCalls(t, calls)) != 1 {
		t.Errorf("after a failed run: desired %d, calls %v; want 2 kept and one call", a.Desired(), readCalls(t, calls))
	}
	if !strings.Contains(logs.String(), "AccessDenied") || !strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("failure not logged with its output:\n%s", logs.String())
	}

	// A command that outlasts the timeout is killed with its children.
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	slow, err := NewExternalActuator("chat", config.Actuator{
		Command: []string{"sh", "-c", "sleep 30 & echo $! > " + pidFile + "; wait", "{replicas}"},
		Timeout: config.Duration(300 * time.Millisecond),
	}, ExternalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = slow.Scale(t.Context(), 2)
	if err == nil || !strings.Contains(err.Error(), "no exit within 300ms") {
		t.Fatalf("Scale of a hanging command = %v", err)
	}
	// The group was sent SIGKILL; the child is gone (or a zombie) once the
	// kernel has delivered it, which is not instantaneous on a busy machine.
	b, _ := os.ReadFile(pidFile)
	if pid := strings.TrimSpace(string(b)); pid != "" {
		alive := func() bool {
			st, err := os.ReadFile("/proc/" + pid + "/stat")
			return err == nil && !strings.Contains(string(st), ") Z")
		}
		deadline := time.Now().Add(10 * time.Second)
		for alive() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if alive() {
			t.Errorf("the command's child %s outlived the timeout", pid)
		}
	}
}

func TestWebhookActuator(t *testing.T) {
	var mu sync.Mutex
	var got []map[string]any
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &body)
		mu.Lock()
		got = append(got, body)
		st := status
		mu.Unlock()
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			st = http.StatusBadRequest
		}
		w.WriteHeader(st)
		_, _ = w.Write([]byte("job scaled"))
	}))
	defer srv.Close()
	a, err := NewExternalActuator("chat", config.Actuator{Webhook: srv.URL + "/scale", Timeout: config.Duration(5 * time.Second)}, ExternalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Scale(t.Context(), 6); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	status = http.StatusConflict
	mu.Unlock()
	if err := a.Scale(t.Context(), 7); err == nil || !strings.Contains(err.Error(), "409") {
		t.Errorf("Scale against a 409 = %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[0]["pool"] != "chat" || got[0]["replicas"] != float64(6) || got[1]["replicas"] != float64(7) {
		t.Errorf("webhook received %v", got)
	}
	if a.Desired() != 6 {
		t.Errorf("Desired = %d, want 6 (the refused 7 not recorded)", a.Desired())
	}
}

// TestControllerDrivesCommand: the controller scales an external platform
// through a real command when demand rises.
func TestControllerDrivesCommand(t *testing.T) {
	script, calls := recorder(t, 0, "ok")
	cfg := config.DefaultAutoscale()
	cfg.Actuator = &config.Actuator{Command: []string{script, "{pool}", "{replicas}"}, Timeout: config.Duration(10 * time.Second)}
	act, err := NewExternalActuator("asg", *cfg.Actuator, ExternalOptions{Initial: cfg.Min})
	if err != nil {
		t.Fatal(err)
	}
	clk := clockwork.NewFakeClockAt(epoch)
	c, err := NewController("asg", cfg, act, ControllerOptions{
		Inputs: func() Inputs { return Inputs{Active: 20} },
		Ready:  act.Desired,
		Clock:  clk,
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		c.Step(t.Context())
		clk.Advance(time.Second)
	}
	if got := readCalls(t, calls); len(got) != 1 || got[0] != "asg 5" {
		t.Errorf("calls %q, want one: asg 5 (20 in flight / target 4)", got)
	}
}
