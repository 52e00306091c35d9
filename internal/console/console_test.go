package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/sluice-ai/sluice/internal/console"
	"github.com/sluice-ai/sluice/internal/console/consoletest"
)

// scrape is a Gatherer that reads a running gateway's /metrics, so the
// console's /api/stats works from the real gateway's registry.
func scrape(metricsURL string) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		resp, err := http.Get(metricsURL)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(resp.Body)
		if err != nil {
			return nil, err
		}
		out := make([]*dto.MetricFamily, 0, len(fams))
		for _, f := range fams {
			out = append(out, f)
		}
		return out, nil
	})
}

// sluiceBin builds the binary once for the package's tests.
func sluiceBin(t *testing.T) string {
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sluice-console-")
		if err != nil {
			binErr = err
			return
		}
		binDir = dir
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			binErr = err
			return
		}
		bin = filepath.Join(dir, "sluice")
		// -pgo=off: the tests' binary needs no profile, and building the
		// dependencies a second time with cmd/sluice/default.pgo costs minutes.
		cmd := exec.Command("go", "build", "-pgo=off", "-o", bin, "./cmd/sluice")
		cmd.Dir = filepath.Dir(strings.TrimSpace(string(out)))
		if b, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build ./cmd/sluice: %v\n%s", err, b)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return bin
}

var (
	binOnce     sync.Once
	bin, binDir string
	binErr      error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

const adminToken = "admin-t0ken"

var testTenants = func() []console.TenantLimits {
	return []console.TenantLimits{{Name: "team-a", RPM: 10}, {Name: "team-b", TPM: 100000000, Concurrency: 256}}
}

// serve puts the console in front of a gateway's admin API, as the admin
// listener will.
func serve(t *testing.T, admin string) *httptest.Server {
	target, _ := url.Parse(admin)
	proxy := httputil.NewSingleHostReverseProxy(target)
	mux := http.NewServeMux()
	for _, p := range []string{"GET /api/pools", "GET /api/jobs/stats", "GET /api/jobs/failures", "GET /metrics"} {
		mux.Handle(p, proxy)
	}
	mux.Handle("GET /", console.Handler(console.Options{Gatherer: scrape(admin + "/metrics"), Tenants: testTenants}))
	// Like the gateway with admin.token set: the API needs the token, the
	// page and its assets do not.
	guarded := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/") && r.Header.Get("Authorization") != "Bearer "+adminToken {
			http.Error(w, "token", http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	})
	srv := httptest.NewServer(guarded)
	t.Cleanup(srv.Close)
	return srv
}

func TestStatsFromALiveGateway(t *testing.T) {
	g := consoletest.Start(t, sluiceBin(t))
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	g.Load(ctx)
	s, err := console.Collect(scrape(g.Admin+"/metrics"), testTenants)
	if err != nil {
		t.Fatal(err)
	}
	chat := s.Pools["chat"]
	if chat == nil || chat.Requests["200"] == 0 || chat.Duration == nil || chat.Duration.Count == 0 || chat.Tokens["completion"] == 0 {
		t.Fatalf("chat pool stats %+v", chat)
	}
	if d := chat.Duration; len(d.Bounds) != len(d.Buckets) || d.Buckets[len(d.Buckets)-1] > d.Count {
		t.Errorf("duration histogram %+v is not cumulative below its count", d)
	}
	if s.Pools["tiny"].Rejections == 0 {
		t.Error("no queue rejections counted for pool tiny")
	}
	if a := s.Pools["auto"]; a.Desired == nil || a.Ready == 0 {
		t.Errorf("autoscaled pool: desired %v ready %v", a.Desired, a.Ready)
	}
	if ta := s.Tenants["team-a"]; ta == nil || ta.Limited["rpm"] == 0 || ta.Limits == nil || ta.Limits.RPM != 10 {
		t.Errorf("team-a: %+v", ta)
	}
	if len(s.Backends["chat"]) != 3 {
		t.Errorf("chat backends %v, want 3", s.Backends["chat"])
	}
	if s.Jobs["succeeded"]+s.Jobs["queued"]+s.Jobs["running"] == 0 {
		t.Errorf("jobs %v", s.Jobs)
	}
}

func TestHandlerServesEmbeddedAssets(t *testing.T) {
	srv := httptest.NewServer(console.Handler(console.Options{}))
	defer srv.Close()
	for _, tc := range []struct {
		path, contentType string
		code              int
	}{
		{"/", "text/html", 200},
		{"/console/app.js", "javascript", 200},
		{"/console/app.css", "text/css", 200},
		{"/console/uplot.iife.min.js", "javascript", 200},
		{"/console/uplot.LICENSE", "text/plain", 200},
		{"/console/", "", 404},
		{"/api/stats", "", 404}, // no Gatherer
		{"/nope", "", 404},
	} {
		resp, err := http.Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.Contains(resp.Header.Get("Content-Type"), tc.contentType) {
			t.Errorf("GET %s: %d %q, want %d %q", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), tc.code, tc.contentType)
		}
	}
}

// browserResult is what console_browser.js reports.
type browserResult struct {
	First, Later struct {
		Polls, Points int
		KPIs          map[string]string
		Backends      int
		Tenants       map[string]string
		Jobs          string
		Canvases      int
	}
	// Failures are the rows of the recent job failures table: job, tenant,
	// pool, model, attempts, status, error.
	Failures   [][]string
	Filtered   int
	Decisions  int
	Errors     []string
	Screenshot string
}

// TestConsoleInABrowser loads the console in headless Chromium (Debian's
// package, driven by playwright-core) against a gateway under load and
// checks that numbers and charts update; it saves docs/console.png.
func TestConsoleInABrowser(t *testing.T) {
	chromium, node := lookBrowser(t)
	g := consoletest.Start(t, sluiceBin(t))
	srv := serve(t, g.Admin)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	loadDone := make(chan struct{})
	go func() { g.Load(ctx); close(loadDone) }()
	defer func() { cancel(); <-loadDone }()

	dir := t.TempDir()
	shot := filepath.Join(dir, "console.png")
	args := []string{"testdata/console_browser.js", srv.URL, chromium, filepath.Join(dir, "profile"), shot, adminToken}
	update := os.Getenv("SLUICE_UPDATE_SCREENSHOT") != ""
	if update {
		args = append(args, "15") // half a minute of history for docs/console.png
	}
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Env = append(os.Environ(), "NODE_PATH="+nodeModules())
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("browser: %v\n%s\n%s", err, out, stderr)
	}
	var r browserResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("browser output %q: %v", out, err)
	}
	if len(r.Errors) > 0 {
		t.Errorf("page errors: %v", r.Errors)
	}
	if r.Later.Polls <= r.First.Polls || r.Later.Points <= r.First.Points {
		t.Errorf("charts did not update: polls %d→%d, points %d→%d", r.First.Polls, r.Later.Polls, r.First.Points, r.Later.Points)
	}
	if r.Later.Canvases < 5 {
		t.Errorf("%d chart canvases, want 5", r.Later.Canvases)
	}
	for _, k := range []string{"rps", "p99", "ttft", "tps"} {
		if v := number(r.Later.KPIs[k]); !(v > 0) {
			t.Errorf("KPI %s = %q, want a positive number", k, r.Later.KPIs[k])
		}
	}
	if r.First.KPIs["rps"] == r.Later.KPIs["rps"] && r.First.KPIs["tps"] == r.Later.KPIs["tps"] {
		t.Errorf("numbers did not change between reads: %v and %v", r.First.KPIs, r.Later.KPIs)
	}
	// 3 chat, 1 tiny, 1 broken and 1 to 3 auto backends as the
	// autoscaler follows the waves of load.
	up, total, _ := strings.Cut(r.Later.KPIs["up"], "/")
	if n, _ := strconv.Atoi(total); n < 6 || n > 8 || r.Later.Backends != n || number(up) < 3 {
		t.Errorf("backends up %q with %d rows, want 3 to 8 up of 6 to 8, one row each", r.Later.KPIs["up"], r.Later.Backends)
	}
	if r.Filtered != 1 {
		t.Errorf("backend rows filtered by \"tiny\": %d, want 1", r.Filtered)
	}
	if !(number(r.Later.Tenants["team-a"]) > 0) {
		t.Errorf("tenants %v: want team-a's 429s/min > 0", r.Later.Tenants)
	}
	if !strings.Contains(r.Later.Jobs, "succeeded") {
		t.Errorf("jobs panel %q", r.Later.Jobs)
	}
	// The jobs Load sends to pool broken, whose backend answers 500, fail
	// after their retries and show up in the table.
	failed := false
	for _, row := range r.Failures {
		if len(row) == 7 && strings.HasPrefix(row[0], "job_") && row[1] == "team-b" && row[2] == "broken" && row[3] == "broken-llm" &&
			row[4] == "3" && row[5] == "500" && strings.Contains(row[6], "upstream answered 500") {
			failed = true
		}
		if strings.Contains(strings.Join(row, " "), "doomed") {
			t.Errorf("a failure row shows the request body: %q", row)
		}
	}
	if !failed {
		t.Errorf("recent job failures %q: want a job of team-b on pool broken (broken-llm), 3 attempts, status 500", r.Failures)
	}
	if r.Decisions == 0 {
		t.Error("no autoscaler decision marked")
	}
	png, err := os.ReadFile(shot)
	if err != nil || len(png) < 10000 {
		t.Fatalf("screenshot: %v (%d bytes)", err, len(png))
	}
	if update {
		if err := os.WriteFile("../../docs/console.png", png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func number(s string) float64 {
	s = strings.TrimSpace(strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(s, " ms"), " s"), "k"))
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return -1
	}
	return v
}

func nodeModules() string {
	if d := os.Getenv("SLUICE_NODE_MODULES"); d != "" {
		return d
	}
	cache, _ := os.UserCacheDir()
	if x := os.Getenv("XDG_CACHE_HOME"); x != "" {
		cache = x
	}
	return filepath.Join(cache, "sluice", "node", "node_modules")
}

func lookBrowser(t *testing.T) (chromium, node string) {
	t.Helper()
	missing := func(what string, err error) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required (scripts/test-deps.sh installs it): %v", what, err)
		}
		t.Skipf("%s not installed (scripts/test-deps.sh installs it): %v", what, err)
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		missing("chromium", err)
	}
	node, err = exec.LookPath("node")
	if err != nil {
		missing("node", err)
	}
	if _, err := os.Stat(filepath.Join(nodeModules(), "playwright-core", "package.json")); err != nil {
		missing("playwright-core", err)
	}
	return chromium, node
}
