package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sluiceBin is the sluice binary built once for the package's tests.
var sluiceBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sluice-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	sluiceBin = filepath.Join(dir, "sluice")
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, "go env GOMOD:", err)
		return 1
	}
	// -pgo=off: the tests' binary needs no profile, and building the
	// dependencies a second time with cmd/sluice/default.pgo costs minutes.
	build := exec.Command("go", "build", "-pgo=off", "-o", sluiceBin, "./cmd/sluice")
	build.Dir = filepath.Dir(strings.TrimSpace(string(out)))
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build sluice:", err)
		return 1
	}
	return m.Run()
}

// freePort returns a port nothing listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// proc is a child process owned by a test.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	addr string
	done chan struct{}
	log  *strings.Builder
}

func start(t *testing.T, addr string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(sluiceBin, args...)
	var logBuf strings.Builder
	stderr, _ := cmd.StderrPipe()
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, addr: addr, done: make(chan struct{}), log: &logBuf}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if logBuf.Len() < 1<<20 {
				logBuf.WriteString(sc.Text() + "\n")
			}
		}
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("log of %s %v:\n%s", filepath.Base(cmd.Path), args, tail(logBuf.String(), 40))
		}
	})
	return p
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// signal sends sig to the process.
func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// waitHTTP waits until url answers 200.
func waitHTTP(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready: %v", url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startSim runs a `sluice sim` replica with extra flags and waits for it.
func startSim(t *testing.T, id string, flags ...string) *proc {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	args := append([]string{"sim", "--addr", addr, "--id", id, "--model", "sim-llm"}, flags...)
	p := start(t, addr, args...)
	waitHTTP(t, "http://"+addr+"/health")
	return p
}

// gateway is a running `sluice serve`.
type gateway struct {
	*proc
	url, admin string
}

// startGateway writes the config (with LISTEN and ADMIN placeholders
// replaced by free addresses) and runs `sluice serve`.
func startGateway(t *testing.T, cfg string) *gateway {
	t.Helper()
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg = strings.NewReplacer("LISTEN", listen, "ADMIN", admin).Replace(cfg)
	dir := t.TempDir()
	if !strings.Contains(cfg, "data_dir:") {
		cfg = "data_dir: " + filepath.Join(dir, "data") + "\n" + cfg
	}
	path := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := start(t, listen, "serve", "-c", path)
	waitHTTP(t, "http://"+admin+"/readyz")
	return &gateway{proc: p, url: "http://" + listen, admin: "http://" + admin}
}

// backendsYAML lists sims as static backends.
func backendsYAML(sims ...*proc) string {
	var b strings.Builder
	for _, s := range sims {
		fmt.Fprintf(&b, "      - {url: \"http://%s\"}\n", s.addr)
	}
	return b.String()
}

type poolStatus struct {
	Name       string
	QueueDepth int `json:"queue_depth"`
	InFlight   int `json:"in_flight"`
	Backends   []struct {
		URL      string
		State    string
		Breaker  string
		InFlight int `json:"in_flight"`
	}
}

func (g *gateway) pools(t *testing.T) []poolStatus {
	t.Helper()
	resp, err := http.Get(g.admin + "/api/pools")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Pools []poolStatus }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out.Pools
}

// chat sends one chat completion; stream selects SSE.
func chat(ctx context.Context, client *http.Client, url string, maxTokens int, stream bool, hdr ...string) (status int, body string, err error) {
	payload := fmt.Sprintf(`{"model":"sim-llm","messages":[{"role":"user","content":"tell me a story"}],"max_tokens":%d,"stream":%v}`, maxTokens, stream)
	req, _ := http.NewRequestWithContext(ctx, "POST", url+"/v1/chat/completions", strings.NewReader(payload))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}, Timeout: 60 * time.Second}
