//go:build linux

package replicas_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/replicas"
	"github.com/sluice-ai/sluice/internal/upstream"
)

// The binary replicas run: `sluice sim` alone (testdata/simd), built once,
// on first use, so these tests do not depend on the gateway building.
var (
	buildOnce sync.Once
	buildDir  string
	buildPath string
	buildErr  error
)

// sluiceBin returns the replica binary, building it the first time.
func sluiceBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() { buildPath, buildErr = buildSluice(buildDir) })
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// childEnv marks the test binary re-executed as a stand-in for a sluice
// process that gets SIGKILLed (TestNoOrphansWhenSluiceIsKilled).
const childEnv = "SLUICE_REPLICAS_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	dir, err := os.MkdirTemp("", "sluice-replicas-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// buildSluice builds testdata/simd of this module into dir.
func buildSluice(dir string) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	bin := filepath.Join(dir, "sluice")
	cmd := exec.Command("go", "build", "-o", bin, "./internal/replicas/testdata/simd")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./internal/replicas/testdata/simd: %w\n%s", err, out)
	}
	return bin, nil
}

// runChild runs a process set of two sim replicas, prints each replica's
// pid once both are ready, and waits to be killed.
func runChild() int {
	pool, err := newPool("orphans")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg := processConfig(simCommand(), 2)
	set, err := replicas.NewProcessSet("orphans", cfg, pool, replicas.Options{Executable: os.Getenv("SLUICE_BIN")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go func() {
		for {
			st := set.Status()
			if st.Ready == 2 {
				for _, r := range st.Replicas {
					fmt.Printf("pid %d\n", r.PID)
				}
				fmt.Println("ready")
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	_ = set.Run(context.Background())
	return 0
}

func newPool(name string) (*upstream.Pool, error) {
	cfg := config.DefaultPool()
	cfg.Name = name
	return upstream.NewPool(&cfg, upstream.Options{})
}

// simCommand is a process command running `sluice sim` on {port} with id
// {id}, plus extra flags.
func simCommand(extra ...string) []string {
	return append([]string{"sluice", "sim", "--addr", "127.0.0.1:{port}", "--id", "{id}"}, extra...)
}

func processConfig(command []string, n int) *config.Process {
	cfg := config.DefaultProcess()
	cfg.Command = command
	cfg.Replicas = n
	cfg.StartTimeout = config.Duration(20 * time.Second)
	cfg.StopTimeout = config.Duration(10 * time.Second)
	return &cfg
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// lines returns the log lines holding every one of subs.
func (s *syncBuffer) lines(subs ...string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s.String()))
	sc.Buffer(nil, 1<<20)
next:
	for sc.Scan() {
		for _, sub := range subs {
			if !strings.Contains(sc.Text(), sub) {
				continue next
			}
		}
		out = append(out, sc.Text())
	}
	return out
}

// harness is a running process set with its pool and log.
type harness struct {
	set  *replicas.ProcessSet
	pool *upstream.Pool
	logs *syncBuffer
	done chan error
}

// start runs a set for cfg and stops it when the test ends.
func start(t *testing.T, name string, cfg *config.Process, opts replicas.Options) *harness {
	t.Helper()
	pool, err := newPool(name)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts.Executable = sluiceBin(t)
	set, err := replicas.NewProcessSet(name, cfg, pool, opts)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{set: set, pool: pool, logs: logs, done: make(chan error, 1)}
	go func() { h.done <- set.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := set.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-h.done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() {
			t.Logf("sluice log:\n%s", logs.String())
		}
	})
	return h
}

// waitFor polls cond every 10ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// backendsIn returns the pool's backends in state st.
func backendsIn(p *upstream.Pool, st upstream.State) []*upstream.Backend {
	var out []*upstream.Backend
	for _, b := range p.Backends() {
		if b.State() == st {
			out = append(out, b)
		}
	}
	return out
}

// alive reports whether pid is a live process (not gone, not a zombie).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesized command name.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}
