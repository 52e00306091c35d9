package jobstest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/jobs"
)

// The kill -9 test of a store whose engine runs outside the gateway's
// process (RabbitMQ, Kafka, Redis): a child gateway process serves the
// jobs API on the store, its slow Exec logging every attempt it starts
// ("<job id> <nonce>") and answering the nonce (after 40 ms; every 25th
// job after 3 s); the parent submits jobs,
// kills the child with SIGKILL while jobs are queued and running, starts
// another child on the same store, and checks every accepted job.
const (
	crashDirEnv = "SLUICE_JOBS_CRASH_DIR"
	crashGenEnv = "SLUICE_JOBS_CRASH_GEN"
	crashJobs   = 300
	// CrashLease is the lease the child's store should use.
	CrashLease = time.Second
	crashSlots = 8
)

// CrashChild runs the child gateway when this test process is one (the
// environment says so), and skips otherwise. Call it from a test named
// as KillNine's helper argument; open opens the store under test.
func CrashChild(t *testing.T, open func(ctx context.Context) (jobs.Store, error)) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("helper process of a kill -9 test")
	}
	if err := runCrashChild(dir, os.Getenv(crashGenEnv), open); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func runCrashChild(dir, gen string, open func(ctx context.Context) (jobs.Store, error)) error {
	ctx := context.Background()
	store, err := open(ctx)
	if err != nil {
		return err
	}
	log, err := os.OpenFile(filepath.Join(dir, "exec.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	execute := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		j, _ := jobs.FromContext(r.Context())
		nonce := gen + "-" + rand.Text()
		// One write per line: O_APPEND keeps lines whole.
		if _, err := log.WriteString(j.ID + " " + nonce + "\n"); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		// Every 25th job is slow, so that some run at the kill however
		// loaded the machine.
		took := 40 * time.Millisecond
		var in struct{ Input string }
		if b, err := io.ReadAll(r.Body); err == nil && json.Unmarshal(b, &in) == nil {
			if n, err := strconv.Atoi(in.Input); err == nil && n%25 == 7 {
				took = 3 * time.Second
			}
		}
		select {
		case <-time.After(took):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"job":%q,"nonce":%q}`, j.ID, nonce)
	})
	svc, err := jobs.New(ctx, jobs.Options{Store: store, Exec: execute, Concurrency: crashSlots, Logger: TestLogger()})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "addr.tmp")
	if err := os.WriteFile(tmp, []byte(ln.Addr().String()), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, "addr")); err != nil {
		return err
	}
	// Serves until the parent kills the process.
	return http.Serve(ln, svc.Handler(nil, nil))
}

// crashChild is a running child gateway.
type crashChild struct {
	cmd  *exec.Cmd
	base string
}

func startCrashChild(t *testing.T, helper, dir, gen string, env []string) *crashChild {
	t.Helper()
	os.Remove(filepath.Join(dir, "addr"))
	cmd := exec.Command(os.Args[0], "-test.run=^"+helper+"$")
	cmd.Env = append(append(os.Environ(), env...), crashDirEnv+"="+dir, crashGenEnv+"="+gen)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		addr, err := os.ReadFile(filepath.Join(dir, "addr"))
		if err == nil {
			return &crashChild{cmd: cmd, base: "http://" + string(addr)}
		}
		if time.Now().After(deadline) {
			t.Fatal("child gateway did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type crashJob struct {
	ID       string `json:"id"`
	Status   string `json:"status"`
	Attempts int    `json:"attempts"`
	Result   *struct {
		StatusCode int `json:"status_code"`
		Body       struct {
			Job   string `json:"job"`
			Nonce string `json:"nonce"`
		} `json:"body"`
	} `json:"result"`
}

func (c *crashChild) get(t *testing.T, path string) []byte {
	t.Helper()
	resp, err := http.Get(c.base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b.String())
	}
	return b.Bytes()
}

func (c *crashChild) count(t *testing.T, status string) int {
	t.Helper()
	var page struct{ Data []crashJob }
	json.Unmarshal(c.get(t, "/v1/jobs?limit=100&status="+status), &page)
	return len(page.Data)
}

// KillNine submits hundreds of jobs to a child gateway (the test named
// helper, which calls CrashChild; env is added to its environment), kills
// it with SIGKILL while jobs are queued and running, starts a second
// child on the same store, and checks that every accepted job reaches a
// final state with one recorded result: the result of an attempt that
// ran, and for jobs finished before the kill, the very result seen then.
func KillNine(t *testing.T, helper string, env []string) {
	if testing.Short() {
		t.Skip("starts gateway processes")
	}
	dir := t.TempDir()
	first := startCrashChild(t, helper, dir, "g1", env)

	ids := make([]string, crashJobs)
	var wg sync.WaitGroup
	errs := make(chan error, crashJobs)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < crashJobs; i += 8 {
				body := fmt.Sprintf(`{"path":"/v1/embeddings","body":{"model":"sim","input":"%d"}}`, i)
				resp, err := http.Post(first.base+"/v1/jobs", "application/json", strings.NewReader(body))
				if err != nil {
					errs <- err
					return
				}
				var j crashJob
				json.NewDecoder(resp.Body).Decode(&j)
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					errs <- fmt.Errorf("submit: %d", resp.StatusCode)
					return
				}
				ids[i] = j.ID
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// Let some finish, then remember what they recorded.
	var j crashJob
	json.Unmarshal(first.get(t, "/v1/jobs/"+ids[0]+"?wait=30s"), &j)
	finishedBefore := map[string]string{}
	for _, id := range ids[:40] {
		var j crashJob
		json.Unmarshal(first.get(t, "/v1/jobs/"+id), &j)
		if j.Status == "succeeded" {
			finishedBefore[id] = j.Result.Body.Nonce
		}
	}
	// Kill while jobs run: a loaded machine can leave the dispatcher
	// between attempts for a moment, so look a few times.
	var queued, running int
	for deadline := time.Now().Add(3 * time.Second); ; {
		queued, running = first.count(t, "queued"), first.count(t, "running")
		if (queued >= 50 && running > 0) || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := first.cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	first.cmd.Wait()
	if queued < 50 || running == 0 || len(finishedBefore) == 0 {
		t.Fatalf("killed with %d queued (want ≥ 50), %d running (want > 0), %d finished (want > 0)", queued, running, len(finishedBefore))
	}
	t.Logf("killed with ≥%d queued, %d running, %d of the first 40 finished", queued, running, len(finishedBefore))

	second := startCrashChild(t, helper, dir, "g2", env)
	results := map[string]string{}
	for _, id := range ids {
		var j crashJob
		for deadline := time.Now().Add(90 * time.Second); ; {
			json.Unmarshal(second.get(t, "/v1/jobs/"+id+"?wait=30s"), &j)
			if j.Status != "queued" && j.Status != "running" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("job %s still %s after the restart", id, j.Status)
			}
		}
		if j.Status != "succeeded" || j.Result == nil || j.Result.Body.Job != id {
			t.Fatalf("job %s after the restart: %+v", id, j)
		}
		results[id] = j.Result.Body.Nonce
	}

	attempts := readExecLog(t, filepath.Join(dir, "exec.log"))
	interrupted, rerun := 0, 0
	for _, id := range ids {
		nonces := attempts[id]
		if !slices.Contains(nonces, results[id]) {
			t.Fatalf("job %s recorded %q, which no attempt answered (attempts %v)", id, results[id], nonces)
		}
		if len(nonces) > 1 {
			rerun++
		}
		ranBefore := slices.ContainsFunc(nonces, func(n string) bool { return strings.HasPrefix(n, "g1-") })
		if strings.HasPrefix(results[id], "g2-") && ranBefore {
			interrupted++
		}
	}
	for id, nonce := range finishedBefore {
		if results[id] != nonce {
			t.Fatalf("job %s recorded %q before the kill and %q after", id, nonce, results[id])
		}
	}
	if interrupted == 0 {
		t.Fatal("no job was running at the kill: the test did not test that")
	}
	t.Logf("%d jobs ran again after the kill (at-least-once), %d of them interrupted mid-attempt", rerun, interrupted)
}

func readExecLog(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		id, nonce, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			t.Fatalf("torn exec log line %q", sc.Text())
		}
		out[id] = append(out[id], nonce)
	}
	return out
}
