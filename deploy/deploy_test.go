// Tests of the shipped Prometheus rules and Grafana dashboards against real
// Prometheus tools: promtool checks and unit-tests the alert rules; every
// PromQL expression of every dashboard is parsed by promtool and evaluated
// by a real Prometheus scraping a real gateway under load, and must return
// data.
package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sluice-ai/sluice/internal/console/consoletest"
)

// tool finds a Prometheus binary; make test installs the Debian package.
func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required (scripts/test-deps.sh installs Debian's prometheus package): %v", name, err)
		}
		t.Skipf("%s not installed (scripts/test-deps.sh installs it): %v", name, err)
	}
	return p
}

func TestAlertRules(t *testing.T) {
	promtool := tool(t, "promtool")
	for _, args := range [][]string{
		{"check", "rules", "prometheus/alerts.yaml"},
		{"test", "rules", "prometheus/alerts_test.yaml"},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// Every alert has a unit test that expects it to fire.
	var rules struct {
		Groups []struct {
			Rules []struct{ Alert string }
		}
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		}
	}
	readYAML(t, "prometheus/alerts.yaml", &rules)
	readYAML(t, "prometheus/alerts_test.yaml", &tests)
	fires := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			}
		}
	}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			if !fires[r.Alert] {
				t.Errorf("alert %s has no unit test in which it fires", r.Alert)
			}
		}
	}
	if n < 10 {
		t.Errorf("found %d alerts, want the full set", n)
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// query is one PromQL expression of a dashboard.
type query struct {
	where string // dashboard / panel
	expr  string // with Grafana's variables substituted
}

// dashboardQueries extracts every expression: panel targets, annotation
// queries and label_values() variable queries (as a selector of the
// metric).
func dashboardQueries(t *testing.T) []query {
	files, err := filepath.Glob("grafana/dashboards/*.json")
	if err != nil || len(files) < 5 {
		t.Fatalf("dashboards: %v %v", files, err)
	}
	vars := strings.NewReplacer("$__rate_interval", "20s", "$__interval", "5s", "$pool", ".*", "$backend", ".*", "$tenant", ".*", "${datasource}", "")
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)
	var out []query
	for _, f := range files {
		var d struct {
			Title  string
			Panels []struct {
				Title   string
				Type    string
				Targets []struct{ Expr string }
			}
			Annotations struct {
				List []struct{ Name, Expr string }
			}
			Templating struct {
				List []struct {
					Type       string
					Definition string
				}
			}
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, p := range d.Panels {
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("%s / %s has no query", d.Title, p.Title)
			}
			for _, tg := range p.Targets {
				out = append(out, query{d.Title + " / " + p.Title, vars.Replace(tg.Expr)})
			}
		}
		for _, a := range d.Annotations.List {
			if a.Expr != "" {
				out = append(out, query{d.Title + " / annotation " + a.Name, vars.Replace(a.Expr)})
			}
		}
		for _, v := range d.Templating.List {
			if v.Type != "query" {
				continue
			}
			m := labelValues.FindStringSubmatch(v.Definition)
			if m == nil {
				t.Errorf("%s: variable query %q is not label_values(metric, label)", d.Title, v.Definition)
				continue
			}
			out = append(out, query{d.Title + " / variable " + m[2], "count by (" + m[2] + ") (" + vars.Replace(m[1]) + ")"})
		}
	}
	return out
}

func TestDashboards(t *testing.T) {
	promtool := tool(t, "promtool")
	prometheus := tool(t, "prometheus")
	queries := dashboardQueries(t)

	// Parse: promtool checks them as recording rules with the real parser.
	dir := t.TempDir()
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboards\n    rules:\n")
	for i, q := range queries {
		e, _ := json.Marshal(q.expr)
		fmt.Fprintf(&rules, "      - record: dashboard:query_%d\n        expr: %s\n", i, e)
	}
	rulesPath := filepath.Join(dir, "dashboards.rules.yaml")
	if err := os.WriteFile(rulesPath, []byte(rules.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", rulesPath).CombinedOutput(); err != nil {
		t.Fatalf("a dashboard query does not parse: %v\n%s", err, out)
	}

	// Evaluate: a real Prometheus scrapes a real gateway under load.
	g := consoletest.Start(t, consoletest.Build(t))
	promAddr := consoletest.FreeAddr(t)
	admin, _ := url.Parse(g.Admin)
	alerts, err := filepath.Abs("prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("global: {scrape_interval: 1s, evaluation_interval: 1s}\nrule_files: [%q]\nscrape_configs:\n  - job_name: sluice\n    static_configs: [{targets: [%q]}]\n", alerts, admin.Host)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	prom := exec.Command(prometheus, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address="+promAddr, "--log.level=warn")
	promLog, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer promLog.Close()
	prom.Stdout, prom.Stderr = promLog, promLog
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	promDone := make(chan struct{})
	go func() { _ = prom.Wait(); close(promDone) }()
	t.Cleanup(func() {
		_ = prom.Process.Signal(os.Interrupt)
		select {
		case <-promDone:
		case <-time.After(10 * time.Second):
			_ = prom.Process.Kill()
			<-promDone
		}
	})

	// Load starts once Prometheus scrapes the idle gateway, so it sees the
	// autoscaler's first decision.
	waitCtx, waitCancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer waitCancel()
	for {
		if n, _ := evaluate(waitCtx, "http://"+promAddr, `up{job="sluice"} == 1`); n == 1 {
			break
		}
		if waitCtx.Err() != nil {
			t.Fatalf("prometheus never scraped the gateway\n%s", readFile(promLog.Name()))
		}
		time.Sleep(200 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	loadDone := make(chan struct{})
	go func() { g.Load(ctx); close(loadDone) }()
	defer func() { cancel(); <-loadDone }()

	// The alert rules and the dashboards name only families the gateway
	// exports. A histogram or a labelled family appears with its first
	// observation, so this waits for the load to produce them all.
	rulesText, err := os.ReadFile("prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	used := families(string(rulesText))
	for _, q := range queries {
		for _, fam := range families(q.expr) {
			if !slices.Contains(used, fam) {
				used = append(used, fam)
			}
		}
	}
	var absent []string
	for {
		exported := metricsText(t, g.Admin)
		absent = absent[:0]
		for _, fam := range used {
			if !strings.Contains(exported, "\n# TYPE "+fam+" ") {
				absent = append(absent, fam)
			}
		}
		if len(absent) == 0 || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Second)
	}
	for _, fam := range absent {
		t.Errorf("the alert rules or dashboards use %s, which the gateway does not export", fam)
	}
	// The burn-rate recording rules, evaluated by Prometheus itself, have
	// data too.
	queries = append(queries,
		query{"alerts.yaml / recording rule", "pool:sluice_request_errors:ratio_rate5m"},
		query{"alerts.yaml / recording rule", "pool:sluice_ttft_slow:ratio_rate5m"})

	// Query every expression until each returns data or the load ends.
	missing := map[int]string{}
	for i := range queries {
		missing[i] = "not evaluated"
	}
	for len(missing) > 0 && ctx.Err() == nil {
		time.Sleep(time.Second)
		for i := range missing {
			q := queries[i]
			n, err := evaluate(ctx, "http://"+promAddr, q.expr)
			switch {
			case err != nil:
				missing[i] = err.Error()
			case n == 0:
				missing[i] = "no data"
			default:
				delete(missing, i)
			}
		}
	}
	var bad []string
	for i, why := range missing {
		bad = append(bad, fmt.Sprintf("%s: %s\n    %s", queries[i].where, why, queries[i].expr))
	}
	sort.Strings(bad)
	for _, b := range bad {
		t.Error(b)
	}
	t.Logf("%d dashboard queries evaluated against a live gateway", len(queries)-len(bad))
	if t.Failed() {
		t.Logf("prometheus log:\n%s", readFile(promLog.Name()))
	}
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// families returns the sluice_* metric families an expression or rule
// file names (a histogram's _bucket, _count and _sum series are its family;
// recording rules' level:metric:operation names are not families).
func families(text string) []string {
	var out []string
	for _, m := range familyRef.FindAllStringSubmatch(text, -1) {
		fam := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m[2], "_bucket"), "_count"), "_sum")
		if !slices.Contains(out, fam) {
			out = append(out, fam)
		}
	}
	return out
}

var familyRef = regexp.MustCompile(`(^|[^:\w])(sluice_[a-z_]+)`)

func metricsText(t *testing.T, admin string) string {
	t.Helper()
	resp, err := http.Get(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return "\n" + string(b)
}

// evaluate runs an instant query and counts the samples with a number
// (NaN, from a quantile of a histogram that saw nothing, is not data).
func evaluate(ctx context.Context, prom, expr string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", prom+"/api/v1/query?query="+url.QueryEscape(expr), nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string
		Error  string
		Data   struct {
			ResultType string
			Result     []struct {
				Value [2]any
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, err
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("query failed: %s", r.Error)
	}
	n := 0
	for _, s := range r.Data.Result {
		if v, _ := s.Value[1].(string); v != "NaN" && v != "" {
			n++
		}
	}
	return n, nil
}
