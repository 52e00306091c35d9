package procs

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestStartStopAll(t *testing.T) {
	s := &Supervisor{LogDir: t.TempDir(), Grace: time.Second}
	// A child that ignores SIGTERM is killed after the grace.
	stubborn, err := s.Start("stubborn one", nil, "sh", "-c", `trap "" TERM; echo started; while :; do sleep 1; done`)
	if err != nil {
		t.Fatal(err)
	}
	polite, err := s.Start("polite", []string{"GREETING=hello"}, "sh", "-c", `echo "$GREETING"; exec sleep 60`)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ready := func(p *Proc, want string) func(context.Context) error {
		return func(context.Context) error {
			if !strings.Contains(p.LogTail(), want) {
				return context.DeadlineExceeded
			}
			return nil
		}
	}
	if err := WaitReady(ctx, stubborn, 10*time.Second, ready(stubborn, "started")); err != nil {
		t.Fatal(err)
	}
	if err := WaitReady(ctx, polite, 10*time.Second, ready(polite, "hello")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s.StopAll()
	for _, p := range []*Proc{stubborn, polite} {
		done, err := p.Exited()
		if !done {
			t.Fatalf("%s still running after StopAll", p.Name)
		}
		if err == nil {
			t.Errorf("%s: exit status nil, want a signal", p.Name)
		}
	}
	if took := time.Since(start); took < time.Second {
		t.Errorf("StopAll took %v: the stubborn child was not given its grace", took)
	}
	if err := syscall.Kill(stubborn.Pid(), 0); err == nil {
		t.Error("stubborn child's pid still exists")
	}
}

func TestWaitReadyReportsExit(t *testing.T) {
	s := &Supervisor{LogDir: t.TempDir()}
	defer s.StopAll()
	p, err := s.Start("crash", nil, "sh", "-c", "echo cannot bind; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	err = WaitReady(context.Background(), p, 10*time.Second, func(context.Context) error { return context.DeadlineExceeded })
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "cannot bind") {
		t.Fatalf("WaitReady = %v, want the exit status and the output", err)
	}
}

func TestHTTPChecks(t *testing.T) {
	healthy := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthy {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		if r.Method == http.MethodPost && !strings.Contains(r.URL.Path, "/v1/chat/completions") {
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	if err := HTTPOK(srv.URL + "/health")(ctx); err != nil {
		t.Errorf("HTTPOK on a healthy server: %v", err)
	}
	if err := ChatOK(srv.URL, "m")(ctx); err != nil {
		t.Errorf("ChatOK on a healthy server: %v", err)
	}
	healthy = false
	if err := HTTPOK(srv.URL + "/health")(ctx); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("HTTPOK on a starting server = %v, want status 503", err)
	}
}

func TestRun(t *testing.T) {
	out, err := Run(context.Background(), t.TempDir(), "sh", "-c", "pwd; echo oops >&2; exit 2")
	if err == nil || !strings.Contains(out, "oops") {
		t.Fatalf("Run = %q, %v; want the output and exit status 2", out, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := Run(ctx, "", "sleep", "30"); err == nil || ctx.Err() == nil {
		t.Fatalf("Run past its context = %v, want the context's error", err)
	}
}

func TestFileSafe(t *testing.T) {
	for in, want := range map[string]string{"sim a0": "sim_a0", "sluice p2c/ewma": "sluice_p2c_ewma", "ok-1.log": "ok-1.log"} {
		if got := FileSafe(in); got != want {
			t.Errorf("FileSafe(%q) = %q, want %q", in, got, want)
		}
	}
}
