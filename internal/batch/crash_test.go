package batch

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-ai/sluice/internal/jobs"
	"github.com/sluice-ai/sluice/internal/jobs/natsstore"
)

// The crash test's child process: a gateway with the embedded store in
// SLUICE_BATCH_CRASH_DIR serving the Files and Batch APIs, whose Exec logs
// every attempt it starts ("<content> <job id>") and answers after a
// moment with the content and the job.
const (
	crashDirEnv = "SLUICE_BATCH_CRASH_DIR"
	crashLines  = 1000
	crashSlots  = 8
)

// TestCrashHelperProcess is the child of TestKillNineBatch; it does
// nothing in a normal run.
func TestCrashHelperProcess(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("helper process of TestKillNineBatch")
	}
	if err := runCrashChild(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func runCrashChild(dir string) error {
	ctx := context.Background()
	store, err := natsstore.OpenEmbedded(ctx, filepath.Join(dir, "jobs"), natsstore.Options{Lease: time.Second, Logger: testLogger()})
	if err != nil {
		return err
	}
	log, err := os.OpenFile(filepath.Join(dir, "exec.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	execH := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		j, _ := jobs.FromContext(r.Context())
		var body struct {
			Messages []struct{ Content string } `json:"messages"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		content := body.Messages[0].Content
		// One write per line: O_APPEND keeps lines whole.
		if _, err := log.WriteString(content + " " + j.ID + "\n"); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		select {
		case <-time.After(15 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"content":%q,"job":%q}`, content, j.ID)
	})
	svc, err := jobs.New(ctx, jobs.Options{Store: store, Exec: execH, Concurrency: crashSlots, Logger: testLogger()})
	if err != nil {
		return err
	}
	b, err := New(ctx, Options{Jobs: svc, Store: store, Lease: time.Second, Window: 64, Logger: testLogger()})
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
	return http.Serve(ln, b.Handler(nil, nil))
}

func startCrashChild(t *testing.T, dir string) (*exec.Cmd, string) {
	t.Helper()
	os.Remove(filepath.Join(dir, "addr"))
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelperProcess$")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
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
			return cmd, "http://" + string(addr)
		}
		if time.Now().After(deadline) {
			t.Fatal("child gateway did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestKillNineBatch runs a 1,000-line batch on a gateway process, kills it
// with SIGKILL part-way, restarts it on the same data directory, and
// checks that the batch completes with every custom_id exactly once in
// its output, that each line became exactly one job, and that the only
// lines a model saw twice are those whose attempt the kill interrupted.
func TestKillNineBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts gateway processes")
	}
	dir := t.TempDir()
	first, base := startCrashChild(t, dir)
	// The child serves the API without a tenant function: one tenant "".
	g := &gateway{t: t, srv: &httptest.Server{URL: base}}
	f := g.mustUpload("", inputFile(crashLines, "line", sim))
	b := g.mustCreate("", f.ID)

	deadline := time.Now().Add(waitLimit)
	var before batchObject
	for {
		before = g.getBatch("", b.ID)
		if before.RequestCounts.Completed >= 250 {
			break
		}
		if time.Now().After(deadline) || before.Status.Final() {
			t.Fatalf("batch before the kill: %+v", before)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	first.Wait()
	t.Logf("killed with %d of %d lines committed", before.RequestCounts.Completed, crashLines)

	_, base = startCrashChild(t, dir)
	g.srv.URL = base
	done := g.await("", b.ID, nil)
	if done.Status != StatusCompleted || done.RequestCounts != (requestCounts{Total: crashLines, Completed: crashLines}) {
		t.Fatalf("after the restart: %s %+v %+v", done.Status, done.RequestCounts, done.Errors)
	}
	output := parseFile(t, g.content("", done.OutputFileID))
	lines := checkExactlyOnce(t, crashLines, output, nil)

	// The attempts the model saw, by line.
	logf, err := os.Open(filepath.Join(dir, "exec.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	attempts := map[string][]string{}
	sc := bufio.NewScanner(logf)
	for sc.Scan() {
		content, job, _ := strings.Cut(sc.Text(), " ")
		attempts[content] = append(attempts[content], job)
	}
	twice := 0
	for i := range crashLines {
		content := fmt.Sprintf("line-%d", i)
		jobsSeen := attempts[content]
		if len(jobsSeen) == 0 {
			t.Fatalf("line %d never reached the model", i)
		}
		for _, j := range jobsSeen[1:] {
			if j != jobsSeen[0] {
				t.Fatalf("line %d became two jobs: %v", i, jobsSeen)
			}
		}
		if len(jobsSeen) > 1 {
			twice++
		}
		var body struct{ Content, Job string }
		l := lines[fmt.Sprintf("req-%d", i)]
		if err := json.Unmarshal(l.Response.Body, &body); err != nil || body.Content != content || body.Job != jobsSeen[0] {
			t.Fatalf("line %d output %s, want the answer of job %s", i, l.Response.Body, jobsSeen[0])
		}
	}
	// Only attempts running at the kill may have been sent again.
	if twice > crashSlots {
		t.Fatalf("%d lines reached the model twice; at most %d attempts ran at the kill", twice, crashSlots)
	}
	t.Logf("%d lines were sent to the model twice (interrupted by the kill)", twice)
}
