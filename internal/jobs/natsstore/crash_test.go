package natsstore_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/jobs/jobstest"
	"github.com/sluice-ai/sluice/internal/jobs/natsstore"
)

// The crash test's child process: a gateway with the embedded store in
// SLUICE_JOBS_CRASH_DIR serving the jobs API, whose slow Exec logs every
// attempt it starts ("<job id> <nonce>") and answers the nonce.
const (
	crashDirEnv = "SLUICE_JOBS_CRASH_DIR"
	crashGenEnv = "SLUICE_JOBS_CRASH_GEN"
	crashJobs   = 300
	crashLease  = time.Second
	crashSlots  = 8
)

// TestHelperProcess is the child of TestKillNineDurability; it does
// nothing in a normal run.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("helper process of TestKillNineDurability")
	}
	if err := runCrashChild(dir, os.Getenv(crashGenEnv)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func runCrashChild(dir, gen string) error {
	ctx := context.Background()
	store, err := natsstore.OpenEmbedded(ctx, filepath.Join(dir, "jobs"), natsstore.Options{Lease: crashLease, Logger: jobstest.TestLogger()})
	if err != nil {
		return err
	}
	log, err := os.OpenFile(filepath.Join(dir, "exec.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	exec := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		j, _ := jobs.FromContext(r.Context())
		nonce := gen + "-" + rand.Text()
		// One write per line: O_APPEND keeps lines whole.
		if _, err := log.WriteString(j.ID + " " + nonce + "\n"); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		select {
		case <-time.After(40 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"job":%q,"nonce":%q}`, j.ID, nonce)
	})
	svc, err := jobs.New(ctx, jobs.Options{Store: store, Exec: exec, Concurrency: crashSlots, Logger: jobstest.TestLogger()})
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

func startCrashChild(t *testing.T, dir, gen string) *crashChild {
	t.Helper()
	os.Remove(filepath.Join(dir, "addr"))
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashGenEnv+"="+gen)
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

// TestKillNineDurability submits hundreds of jobs to a gateway, kills it
// with SIGKILL while jobs are queued and running, restarts it on the same
// data directory, and checks that every accepted job reaches a final
// state with one recorded result: the result of an attempt that ran, and
// for jobs finished before the kill, the very result seen then.
func TestKillNineDurability(t *testing.T) {
	if testing.Short() {
		t.Skip("starts gateway processes")
	}
	dir := t.TempDir()
	first := startCrashChild(t, dir, "g1")

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
	queued, running := first.count(t, "queued"), first.count(t, "running")
	if err := first.cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	first.cmd.Wait()
	if queued < 50 || running == 0 || len(finishedBefore) == 0 {
		t.Fatalf("killed with %d queued (want ≥ 50), %d running (want > 0), %d finished (want > 0)", queued, running, len(finishedBefore))
	}
	t.Logf("killed with ≥%d queued, %d running, %d of the first 40 finished", queued, running, len(finishedBefore))

	second := startCrashChild(t, dir, "g2")
	results := map[string]string{}
	for _, id := range ids {
		var j crashJob
		for deadline := time.Now().Add(60 * time.Second); ; {
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
