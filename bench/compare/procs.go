package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stopGrace is how long a child gets to exit after SIGTERM before SIGKILL.
const stopGrace = 5 * time.Second

// supervisor starts the suite's servers and owns them: each runs in its own
// process group (so that a terminal's Ctrl-C reaches only the suite, which
// then stops them in order) and stopAll ends whatever is still running.
type supervisor struct {
	logDir string

	mu    sync.Mutex
	procs []*proc
}

// proc is one child server.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has exited
	err     error         // its exit status; read after done

	stopOnce sync.Once
}

// start runs argv as a server named name, its stdout and stderr going to a
// log file in the supervisor's log directory. env is added to the suite's
// own environment.
func (s *supervisor) start(name string, env []string, argv ...string) (*proc, error) {
	logPath := filepath.Join(s.logDir, fileSafe(name)+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), env...)
	// A process group of its own: stop signals the group, so a server's
	// workers (nginx) go with it. Pdeathsig is a backstop for the suite
	// being killed outright.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p, nil
}

// stop ends p: SIGTERM to its process group, SIGKILL after stopGrace, and
// waits for it to exit. It is safe to call more than once.
func (p *proc) stop() {
	p.stopOnce.Do(func() {
		pgid := p.cmd.Process.Pid
		select {
		case <-p.done:
		default:
			_ = syscall.Kill(-pgid, syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(stopGrace):
				_ = syscall.Kill(-pgid, syscall.SIGKILL)
				<-p.done
			}
		}
		// Anything the group left behind (a worker that outlived its
		// master) goes too.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	})
}

// exited reports whether p has exited, with its status.
func (p *proc) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// logTail returns the last lines of p's log, newest first, for error
// messages whose first line should say the most.
func (p *proc) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return "(no output)"
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	slices.Reverse(lines)
	return strings.Join(lines, "\n")
}

// stopAll stops every child still running, newest first (proxies before
// the backends behind them).
func (s *supervisor) stopAll() {
	s.mu.Lock()
	procs := s.procs
	s.procs = nil
	s.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop()
	}
}

// forget drops stopped processes from the supervisor's list.
func (s *supervisor) forget(stopped ...*proc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.procs[:0]
	for _, p := range s.procs {
		gone := false
		for _, q := range stopped {
			gone = gone || p == q
		}
		if !gone {
			kept = append(kept, p)
		}
	}
	s.procs = kept
}

// freePort returns a loopback address whose port was free a moment ago.
// Another process could take it before the child binds it; the child then
// fails to start and says so.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// waitReady polls check every 100ms until it succeeds, p exits, ctx ends or
// timeout passes.
func waitReady(ctx context.Context, p *proc, timeout time.Duration, check func(context.Context) error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if done, err := p.exited(); done {
			return fmt.Errorf("%s exited (%v) before it was ready: %s", p.name, err, p.logTail())
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		last = check(cctx)
		cancel()
		if last == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v: %w: %s", p.name, timeout, last, p.logTail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// probeClient sends readiness probes; it keeps no connections, so that a
// probe never leaves an idle connection in a proxy's pool.
var probeClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// httpOK is a readiness check: GET url answers 200.
func httpOK(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		return expect200(probeClient.Do(req))
	}
}

// chatOK is a readiness check for a proxy: a small chat completion through
// it answers 200, so the proxy is listening and has a healthy upstream.
func chatOK(base string) func(context.Context) error {
	body := []byte(`{"model":"sim-llm","messages":[{"role":"user","content":"ready"}],"max_tokens":1}`)
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/chat/completions", bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		return expect200(probeClient.Do(req))
	}
}

func expect200(resp *http.Response, err error) error {
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %.200s", resp.StatusCode, b.String())
	}
	return nil
}

// runCommand runs a short-lived command to completion in its own process
// group, killing the group if ctx ends, and returns its combined output.
func runCommand(ctx context.Context, dir string, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = stopGrace
	err := cmd.Run()
	if err != nil && ctx.Err() != nil {
		err = errors.Join(ctx.Err(), err)
	}
	return out.String(), err
}

func fileSafe(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, name)
}
