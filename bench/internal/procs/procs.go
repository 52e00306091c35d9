// Package procs starts and owns the child processes of the benchmark suites
// (proxies, simulated replicas, gateways): each runs in a process group of its
// own with its output in a log file, and the Supervisor stops whatever is
// still running, newest first.
package procs

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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultGrace is how long a child gets to exit after SIGTERM before SIGKILL
// when Supervisor.Grace is zero.
const DefaultGrace = 5 * time.Second

// Supervisor starts the suite's child processes and owns them. Each child
// runs in a process group of its own, so a terminal's Ctrl-C reaches only the
// suite, which then stops them in order; Pdeathsig kills them should the
// suite itself be killed outright.
type Supervisor struct {
	// LogDir holds one log file per child (stdout and stderr).
	LogDir string
	// Grace is how long StopAll and StopAndForget give a child between
	// SIGTERM and SIGKILL. Zero means DefaultGrace.
	Grace time.Duration

	mu   sync.Mutex
	list []*Proc
}

// Proc is one child process.
type Proc struct {
	Name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has exited
	err     error         // its exit status; read after done

	stopOnce sync.Once
}

// Start runs argv as a child named name, with stdout and stderr in a log file
// of the log directory. env is added to the suite's own environment.
func (s *Supervisor) Start(name string, env []string, argv ...string) (*Proc, error) {
	logPath := filepath.Join(s.LogDir, FileSafe(name)+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	s.mu.Lock()
	s.list = append(s.list, p)
	s.mu.Unlock()
	return p, nil
}

func (s *Supervisor) grace() time.Duration {
	if s.Grace > 0 {
		return s.Grace
	}
	return DefaultGrace
}

// StopAll stops every child still running, newest first, so a proxy or a
// gateway stops before the backends behind it.
func (s *Supervisor) StopAll() {
	s.mu.Lock()
	list := s.list
	s.list = nil
	s.mu.Unlock()
	for _, p := range slices.Backward(list) {
		p.Stop(s.grace())
	}
}

// StopAndForget stops the given children, last first, and drops them from
// the supervisor's list.
func (s *Supervisor) StopAndForget(ps ...*Proc) {
	for _, p := range slices.Backward(ps) {
		p.Stop(s.grace())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.list = slices.DeleteFunc(s.list, func(p *Proc) bool { return slices.Contains(ps, p) })
}

// Pid is the child's process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Kill sends SIGKILL to the child alone (not its group), as a crash would,
// and waits for it to exit.
func (p *Proc) Kill() error {
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill %s: %w", p.Name, err)
	}
	<-p.done
	return nil
}

// Stop ends the child: SIGTERM to its process group, SIGKILL after grace, and
// waits for it. Whatever the group left behind (a worker that outlived its
// master) is killed too. Safe to call more than once.
func (p *Proc) Stop(grace time.Duration) {
	p.stopOnce.Do(func() {
		pgid := p.cmd.Process.Pid
		select {
		case <-p.done:
		default:
			_ = syscall.Kill(-pgid, syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(grace):
				_ = syscall.Kill(-pgid, syscall.SIGKILL)
				<-p.done
			}
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	})
}

// Exited reports whether the child has exited, with its status.
func (p *Proc) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// LogTail returns the last eight lines of the child's log, oldest first.
func (p *Proc) LogTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return "(no output)"
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return strings.Join(lines, "\n")
}

// FreeAddr returns a loopback address whose port was free a moment ago.
// Another process could take it before the child binds it; the child then
// fails to start and says so.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// WaitReady polls check every 50ms until it succeeds, p exits, ctx ends or
// timeout passes.
func WaitReady(ctx context.Context, p *Proc, timeout time.Duration, check func(context.Context) error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if done, err := p.Exited(); done {
			return fmt.Errorf("%s exited (%v) before it was ready:\n%s", p.Name, err, p.LogTail())
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		last = check(cctx)
		cancel()
		if last == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v: %w:\n%s", p.Name, timeout, last, p.LogTail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ProbeClient sends readiness probes and admin polls. It keeps no
// connections, so a probe never sits in a server's connection count or a
// proxy's idle pool.
var ProbeClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}

// HTTPOK is a readiness check: GET url answers 200.
func HTTPOK(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		return expect200(ProbeClient.Do(req))
	}
}

// ChatOK is a readiness check for a proxy: a one-token chat completion for
// model through base answers 200, so the proxy listens and has a healthy
// upstream.
func ChatOK(base, model string) func(context.Context) error {
	body := []byte(`{"model":"` + model + `","messages":[{"role":"user","content":"ready"}],"max_tokens":1}`)
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/chat/completions", bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		return expect200(ProbeClient.Do(req))
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
		return fmt.Errorf("%s %s: status %d: %.200s", resp.Request.Method, resp.Request.URL, resp.StatusCode, b.String())
	}
	return nil
}

// Run runs a short-lived command to completion in dir, in its own process
// group that is killed if ctx ends, and returns its combined output.
func Run(ctx context.Context, dir string, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = DefaultGrace
	err := cmd.Run()
	if err != nil && ctx.Err() != nil {
		err = errors.Join(ctx.Err(), err)
	}
	return out.String(), err
}

// RSSKiB reads a process's resident set size (VmRSS) and its high-water mark
// (VmHWM) in KiB from /proc.
func RSSKiB(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, fmt.Errorf("read memory of pid %d: %w", pid, err)
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			rss, _ = strconv.ParseInt(f[1], 10, 64)
		case "VmHWM:":
			hwm, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	if rss == 0 {
		return 0, 0, errors.New("no VmRSS in /proc/" + strconv.Itoa(pid) + "/status")
	}
	return rss, hwm, nil
}

func FileSafe(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, name)
}
