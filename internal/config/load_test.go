package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite the .err golden files of testdata/*.bad.yaml")

// testEnv is the environment the test files see, so results do not depend
// on the machine's.
var testEnv = map[string]string{
	"REDIS_PASSWORD":        "s3cret",
	"SIM_TOKEN":             "tok-123",
	"TEAM_B_KEY":            "team-b-key",
	"SLUICE_WEBHOOK_SECRET": "whsec_dGVzdA==",
	"PORT":                  "9100",
	"UPSTREAM":              "127.0.0.1:9001",
	"WEIGHT":                "2",
	"BALANCER":              "round_robin",
	"REPLICAS":              "3",
	"EMPTY":                 "",
	"TEXT":                  "many",
	"YAML":                  "{a: 1}",
}

func testLookup(name string) (string, bool) {
	v, ok := testEnv[name]
	return v, ok
}

func parseFile(t testing.TB, path string) (*Config, error) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return parse(path, data, testLookup)
}

func mustParse(t testing.TB, src string) *Config {
	t.Helper()
	c, err := parse("test.yaml", []byte(src), testLookup)
	if err != nil {
		t.Fatalf("parse:\n%v", err)
	}
	return c
}

func glob(t testing.TB, pattern string) []string {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil || len(files) == 0 {
		t.Fatalf("no files match %s (%v)", pattern, err)
	}
	return files
}

var errorLineRE = regexp.MustCompile(`^[^:]+:[1-9][0-9]*:[1-9][0-9]*: \S.*$`)

// TestBadConfigs loads each testdata/*.bad.yaml and compares every problem
// reported, in order, with the sibling .err file.
func TestBadConfigs(t *testing.T) {
	for _, file := range glob(t, "testdata/*.bad.yaml") {
		t.Run(filepath.Base(file), func(t *testing.T) {
			c, err := parseFile(t, file)
			if err == nil {
				t.Fatalf("loaded without error: %+v", c)
			}
			if c != nil {
				t.Error("a Config came back with the error")
			}
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error is %T, want Errors: %v", err, err)
			}
			got := err.Error() + "\n"
			for _, line := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
				if !errorLineRE.MatchString(line) || !strings.HasPrefix(line, file+":") {
					t.Errorf("line not in FILE:LINE:COL: message form: %q", line)
				}
			}
			golden := strings.TrimSuffix(file, ".bad.yaml") + ".err"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("problems differ from %s\n--- got\n%s--- want\n%s", golden, got, want)
			}
		})
	}
}

func TestGoodConfigs(t *testing.T) {
	for _, file := range glob(t, "testdata/*.good.yaml") {
		t.Run(filepath.Base(file), func(t *testing.T) {
			c, err := parseFile(t, file)
			if err != nil {
				t.Fatalf("load:\n%v", err)
			}
			if c.Path != file {
				t.Errorf("Path = %q, want %q", c.Path, file)
			}
			if err := c.Validate(); err != nil {
				t.Errorf("Validate after load:\n%v", err)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	c, err := Load("testdata/minimal.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Pools[0].Name != "chat" {
		t.Errorf("pool name %q", c.Pools[0].Name)
	}
	if _, err := Load("testdata/no-such-file.yaml"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: got %v, want an error wrapping os.ErrNotExist", err)
	}
}

// TestFullConfig checks that every key of full.good.yaml lands in its field.
func TestFullConfig(t *testing.T) {
	got, err := parseFile(t, "testdata/full.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d := func(s string) Duration {
		v, err := time.ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		return Duration(v)
	}
	want := &Config{
		Listen:  "127.0.0.1:9080",
		TLS:     &TLS{CertFile: "certs/gateway.pem", KeyFile: "certs/gateway-key.pem"},
		Admin:   Admin{Listen: "127.0.0.1:9081", Token: "admin-s3cret"},
		DataDir: "/var/lib/sluice",
		Log:     Log{Level: "debug", Format: "json"},
		Limits: Limits{
			MaxRequestBody: 8 << 20, ReadHeaderTimeout: d("5s"), DrainTimeout: d("45s"),
			BodyReadTimeout: d("20s"), MaxBufferedBody: 64 << 20, MaxHeaderBytes: 32 << 10, MaxHeaders: 64, HTTP2MaxStreams: 50,
		},
		Redis: Redis{URL: "redis://:s3cret@redis.internal:6379/2"},
		Pools: []Pool{
			{
				Name:     "chat",
				Models:   []string{"sim-llm", "llama-*"},
				Balancer: "consistent_hash",
				HashOn:   "header:X-Session-ID",
				KVAware:  DefaultPool().KVAware,
				Backends: []Backend{
					{URL: "http://127.0.0.1:9001", Weight: 3, Headers: map[string]string{"Authorization": "Bearer backend-key"}},
					{URL: "h2c://127.0.0.1:9002", Weight: 1},
				},
				UpstreamHeaders: map[string]string{"Authorization": "Bearer pool-key", "X-Org": "sluice"},
				MaxConcurrency:  16,
				SlowStart:       Duration(20 * time.Second),
				Queue:           Queue{Size: 256, Timeout: d("10s")},
				HealthCheck:     HealthCheck{Path: "/ready", Interval: d("3s"), Timeout: d("1s"), HealthyThreshold: 1, UnhealthyThreshold: 4},
				OutlierDetection: OutlierDetection{
					ConsecutiveFailures: 7, ErrorRate: 0.5, Window: d("20s"), MinRequests: 40,
					EjectionTime: d("15s"), MaxEjectedPercent: 34,
				},
				Retry:    Retry{Attempts: 1, Budget: 0.1, Backoff: d("50ms"), On: []string{"connect_failure", "timeout", "429", "503"}},
				Timeouts: Timeouts{Connect: d("1s"), FirstByte: d("2m"), StreamIdle: d("30s")},
				Fallback: []string{"local", "cluster"},
				Cache:    PoolCache{TTL: d("5m"), PerTenant: true},
			},
			func() Pool {
				p := DefaultPool()
				p.Name = "local"
				p.Models = []string{"sim-embed"}
				p.Balancer = "least_request"
				p.Process = &Process{
					Command:      []string{"sluice", "sim", "--addr", "127.0.0.1:{port}", "--model", "sim-embed"},
					Env:          map[string]string{"SIM_SEED": "7", "TOKEN": "tok-123", "CUDA_VISIBLE_DEVICES": "{gpu}"},
					ReadyPath:    "/v2/health/ready",
					StartTimeout: d("90s"),
					StopTimeout:  d("10s"),
					Replicas:     3,

					UnhealthyTimeout: d("20s"),
				}
				p.Autoscale = &Autoscale{
					Min: 0, Max: 12, TargetConcurrency: 2.5,
					StableWindow: d("2m"), PanicWindow: d("10s"), PanicThreshold: 3,
					ScaleDownDelay: d("1m"), ScaleToZeroAfter: d("5m"),
					Predictive: Predictive{Enabled: true, Season: d("168h"), History: "/var/lib/sluice/local-demand.csv"},
					Signals:    Signals{ReplicaQueue: 0.5, KVCache: 0.8, Tokens: 16000, ScrapeInterval: d("2s")},
					SLO:        SLO{TTFT: d("800ms"), Percentile: 0.95, MaxBoost: 2},
				}
				return p
			}(),
			func() Pool {
				p := DefaultPool()
				p.Name = "cluster"
				p.Models = []string{"vllm/*"}
				p.Balancer = "p2c"
				p.Kubernetes = &Kubernetes{
					Namespace: "inference", Service: "vllm", Port: "http", Kubeconfig: "/etc/sluice/kubeconfig",
					ScaleTarget: ScaleTarget{Kind: "StatefulSet", Name: "vllm-workers"},
				}
				a := DefaultAutoscale()
				a.Min, a.Max = 2, 20
				p.Autoscale = &a
				return p
			}(),
			func() Pool {
				p := DefaultPool()
				p.Name = "asg"
				p.Models = []string{"asg-llm"}
				p.Backends = []Backend{{URL: "http://10.0.0.5:8000", Weight: 1}}
				a := DefaultAutoscale()
				a.Actuator = &Actuator{
					Command: []string{"aws", "autoscaling", "set-desired-capacity", "--auto-scaling-group-name", "{pool}", "--desired-capacity", "{replicas}"},
					Timeout: d("45s"),
				}
				p.Autoscale = &a
				return p
			}(),
			func() Pool {
				p := DefaultPool()
				p.Name = "nomad"
				p.Models = []string{"nomad-llm"}
				p.Backends = []Backend{{URL: "http://10.0.0.6:8000", Weight: 1}}
				p.Cache = PoolCache{TTL: d("1m"), Shared: true}
				a := DefaultAutoscale()
				a.Actuator = &Actuator{Webhook: "https://scaler.internal/v1/scale", Timeout: d("30s")}
				p.Autoscale = &a
				return p
			}(),
		},
		Routes: []Route{
			{PathPrefix: "/classify", Pool: "local"},
			{Host: "img.example.com", PathPrefix: "/", Pool: "cluster"},
		},
		Auth: &Auth{
			Keys: []APIKey{
				{
					Name:      "team-a",
					KeySHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
					Models:    []string{"sim-*"},
					Limits:    TenantLimits{RPM: 600, TPM: 200000, Concurrency: 16},
				},
				{Name: "team-b", Key: "team-b-key", Models: []string{"*"}},
			},
			JWT: &JWT{
				JWKSURL:     "https://issuer.example.com/.well-known/jwks.json",
				Issuer:      "https://issuer.example.com/",
				Audience:    "sluice",
				TenantClaim: "org",
				Models:      []string{"llama-*"},
				Limits:      TenantLimits{RPM: 60, TPM: 1000, Concurrency: 2},
			},
		},
		Cache: Cache{Memory: 1 << 30, Redis: true},
		Jobs: Jobs{
			Store: "nats://127.0.0.1:4222", Concurrency: 8, MaxAttempts: 5,
			Retention: d("72h"), WebhookSecret: "whsec_dGVzdA==", MaxFileSize: 200 << 20, FileRetention: d("720h"),
			CallbackAllow: []string{"10.0.0.0/8", "hooks.internal:443", "*.hooks.internal"},
		},
		Tracing: Tracing{OTLPEndpoint: "http://127.0.0.1:4317", Protocol: "grpc", SampleRatio: 0.25, Headers: map[string]string{"Authorization": "Bearer whsec_dGVzdA=="}},
		KEDA:    KEDA{Listen: "127.0.0.1:9090"},
		Path:    "testdata/full.good.yaml",
	}
	got.pos = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("loaded config differs\n--- got\n%s--- want\n%s", marshal(t, got), marshal(t, want))
	}
}

func marshal(t testing.TB, c *Config) string {
	t.Helper()
	out, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// TestRoundTrip writes each good config back out as YAML and loads it again.
func TestRoundTrip(t *testing.T) {
	for _, file := range glob(t, "testdata/*.good.yaml") {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(data, []byte("$${")) {
				t.Skip("a literal ${ would be expanded when read back")
			}
			first, err := parse(file, data, testLookup)
			if err != nil {
				t.Fatal(err)
			}
			out := marshal(t, first)
			second, err := parse(file, []byte(out), testLookup)
			if err != nil {
				t.Fatalf("reading back:\n%v\n%s", err, out)
			}
			if again := marshal(t, second); again != out {
				t.Errorf("round trip changed the config\n--- first\n%s--- second\n%s", out, again)
			}
		})
	}
}

// TestEveryKeyCovered keeps the good configs honest: together they set every
// key of the Config tree, so TestGoodConfigs and TestRoundTrip exercise all.
func TestEveryKeyCovered(t *testing.T) {
	set := make(map[string]bool)
	index := regexp.MustCompile(`\[\d+\]`)
	for _, file := range glob(t, "testdata/*.good.yaml") {
		c, err := parseFile(t, file)
		if err != nil {
			t.Fatal(err)
		}
		for p := range c.pos {
			set[index.ReplaceAllString(p, "[]")] = true
		}
	}
	var walk func(typ reflect.Type, path string)
	walk = func(typ reflect.Type, path string) {
		for _, name := range fieldsOf(typ).names {
			f := typ.Field(fieldsOf(typ).index[name])
			p := joinPath(path, name)
			if !set[p] {
				t.Errorf("no good config sets %s", p)
			}
			ft := f.Type
			if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
				walk(ft.Elem(), p+"[]")
				continue
			}
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				walk(ft, p)
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
}

func TestDefaults(t *testing.T) {
	c := Default()
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", c.Listen, ":8080"},
		{"admin.listen", c.Admin.Listen, "127.0.0.1:8081"},
		{"data_dir", c.DataDir, "./sluice-data"},
		{"log", c.Log, Log{Level: "info", Format: "text"}},
		{"limits.max_request_body", c.Limits.MaxRequestBody, Size(32 << 20)},
		{"limits.read_header_timeout", c.Limits.ReadHeaderTimeout.D(), 10 * time.Second},
		{"limits.drain_timeout", c.Limits.DrainTimeout.D(), 30 * time.Second},
		{"tls", c.TLS, (*TLS)(nil)},
		{"auth", c.Auth, (*Auth)(nil)},
		{"redis.url", c.Redis.URL, ""},
		{"cache", c.Cache, Cache{Memory: 256 << 20}},
		{"jobs.store", c.Jobs.Store, "embedded"},
		{"jobs.concurrency", c.Jobs.Concurrency, 64},
		{"jobs.max_attempts", c.Jobs.MaxAttempts, 3},
		{"jobs.retention", c.Jobs.Retention.D(), 24 * time.Hour},
		{"tracing", c.Tracing.OTLPEndpoint, ""},
	}
	p := DefaultPool()
	checks = append(checks, []struct {
		name      string
		got, want any
	}{
		{"balancer", p.Balancer, "p2c_ewma"},
		{"hash_on", p.HashOn, "client_ip"},
		{"max_concurrency", p.MaxConcurrency, 0},
		{"queue", p.Queue, Queue{Size: 1024, Timeout: Duration(30 * time.Second)}},
		{"health_check", p.HealthCheck, HealthCheck{"/health", Duration(5 * time.Second), Duration(2 * time.Second), 2, 3}},
		{"outlier_detection", p.OutlierDetection, OutlierDetection{
			ConsecutiveFailures: 5, Window: Duration(10 * time.Second), MinRequests: 20,
			EjectionTime: Duration(30 * time.Second), MaxEjectedPercent: 50,
		}},
		{"retry", p.Retry, Retry{2, 0.2, Duration(25 * time.Millisecond), []string{"connect_failure", "502", "503", "504"}}},
		{"timeouts", p.Timeouts, Timeouts{Duration(3 * time.Second), Duration(60 * time.Second), Duration(60 * time.Second)}},
		{"cache", p.Cache, PoolCache{}},
		{"autoscale", p.Autoscale, (*Autoscale)(nil)},
		{"backend", DefaultBackend(), Backend{Weight: 1}},
		{"process", DefaultProcess(), Process{ReadyPath: "/health", StartTimeout: Duration(time.Minute), StopTimeout: Duration(30 * time.Second), Replicas: 1, UnhealthyTimeout: Duration(30 * time.Second)}},
		{"kubernetes", DefaultKubernetes(), Kubernetes{Namespace: "default", ScaleTarget: ScaleTarget{Kind: "Deployment"}}},
		{"autoscale block", DefaultAutoscale(), Autoscale{
			Min: 1, Max: 8, TargetConcurrency: 4, StableWindow: Duration(time.Minute), PanicWindow: Duration(6 * time.Second),
			PanicThreshold: 2, ScaleDownDelay: Duration(30 * time.Second), Predictive: Predictive{Season: Duration(24 * time.Hour)},
			Signals: Signals{ScrapeInterval: Duration(5 * time.Second)}, SLO: SLO{Percentile: 0.9, MaxBoost: 4},
		}},
		{"route", DefaultRoute(), Route{PathPrefix: "/"}},
		{"api key", DefaultAPIKey(), APIKey{Models: []string{"*"}}},
		{"jwt", DefaultJWT(), JWT{TenantClaim: "sub", Models: []string{"*"}}},
	}...)
	for _, tc := range checks {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("default %s = %+v, want %+v", tc.name, tc.got, tc.want)
		}
	}

	// Defaults are fresh values: changing one leaves the next untouched.
	p.Retry.On[0] = "timeout"
	if DefaultPool().Retry.On[0] != "connect_failure" {
		t.Error("DefaultPool shares its retry.on slice between calls")
	}
}

// TestListElementDefaults checks that a list element or optional block the
// file creates starts from its defaults.
func TestListElementDefaults(t *testing.T) {
	c := mustParse(t, `
pools:
  - name: a
    models: [m]
    backends: [{url: "http://127.0.0.1:1"}]
    queue: {size: 8}
  - name: b
    models: [n]
    kubernetes: {service: vllm, scale_target: {name: vllm}}
    autoscale: {max: 3}
  - name: c
    models: [o]
    process: {command: [server, "{port}"]}
routes: [{pool: a}]
auth:
  keys: [{name: t, key: k}]
  jwt: {jwks_file: j.json}
`)
	a := DefaultPool()
	a.Name, a.Models = "a", []string{"m"}
	a.Backends = []Backend{{URL: "http://127.0.0.1:1", Weight: 1}}
	a.Queue.Size = 8
	if !reflect.DeepEqual(c.Pools[0], a) {
		t.Errorf("pool a = %+v\nwant %+v", c.Pools[0], a)
	}
	k := DefaultKubernetes()
	k.Service, k.ScaleTarget.Name = "vllm", "vllm"
	if !reflect.DeepEqual(*c.Pools[1].Kubernetes, k) {
		t.Errorf("kubernetes = %+v, want %+v", *c.Pools[1].Kubernetes, k)
	}
	as := DefaultAutoscale()
	as.Max = 3
	if !reflect.DeepEqual(*c.Pools[1].Autoscale, as) {
		t.Errorf("autoscale = %+v, want %+v", *c.Pools[1].Autoscale, as)
	}
	pr := DefaultProcess()
	pr.Command = []string{"server", "{port}"}
	if !reflect.DeepEqual(*c.Pools[2].Process, pr) {
		t.Errorf("process = %+v, want %+v", *c.Pools[2].Process, pr)
	}
	if c.Pools[0].Process != nil || c.Pools[0].Autoscale != nil {
		t.Error("pool a got a process or autoscale block it did not ask for")
	}
	if want := (Route{PathPrefix: "/", Pool: "a"}); c.Routes[0] != want {
		t.Errorf("route = %+v, want %+v", c.Routes[0], want)
	}
	if want := []string{"*"}; !reflect.DeepEqual(c.Auth.Keys[0].Models, want) {
		t.Errorf("key models = %q, want %q", c.Auth.Keys[0].Models, want)
	}
	if j := c.Auth.JWT; j.TenantClaim != "sub" || !reflect.DeepEqual(j.Models, []string{"*"}) {
		t.Errorf("jwt = %+v, want tenant_claim sub and models [*]", j)
	}
}

// TestExplicitZeros checks that a key set to zero keeps the zero, not the
// default, and that null leaves the default.
func TestExplicitZeros(t *testing.T) {
	c := mustParse(t, `
pools:
  - name: a
    models: [m]
    backends: [{url: "http://127.0.0.1:1"}]
    max_concurrency: 0
    queue: {size: 0}
    health_check: {path: ""}
    outlier_detection: {consecutive_failures: 0}
    retry: {attempts: 0, budget: 0, on: []}
    cache: {ttl: 0s}
  - name: b
    models: [n]
    balancer:
    queue: ~
    process: {command: [s, "{port}"], stop_timeout: 0s}
    autoscale: {min: 0, scale_down_delay: 0s}
cache: {memory: 0}
jobs: {webhook_secret: ""}
`)
	a := c.Pools[0]
	if a.Queue.Size != 0 || a.Queue.Timeout.D() != 30*time.Second {
		t.Errorf("queue = %+v, want size 0 and the default 30s timeout", a.Queue)
	}
	if a.HealthCheck.Path != "" || a.HealthCheck.Interval.D() != 5*time.Second {
		t.Errorf("health_check = %+v, want path \"\" and default interval", a.HealthCheck)
	}
	if a.OutlierDetection.ConsecutiveFailures != 0 || a.OutlierDetection.MaxEjectedPercent != 50 {
		t.Errorf("outlier_detection = %+v", a.OutlierDetection)
	}
	if a.Retry.Attempts != 0 || a.Retry.Budget != 0 || a.Retry.On == nil || len(a.Retry.On) != 0 {
		t.Errorf("retry = %+v, want attempts 0, budget 0, on []", a.Retry)
	}
	b := c.Pools[1]
	if b.Balancer != "p2c_ewma" || b.Queue != DefaultPool().Queue {
		t.Errorf("null values: balancer %q, queue %+v; want the defaults", b.Balancer, b.Queue)
	}
	if b.Process.StopTimeout != 0 || b.Autoscale.Min != 0 || b.Autoscale.ScaleDownDelay != 0 || b.Autoscale.Max != 8 {
		t.Errorf("process %+v autoscale %+v", b.Process, b.Autoscale)
	}
	if c.Cache.Memory != 0 {
		t.Errorf("cache.memory = %d, want 0", c.Cache.Memory)
	}

	// A null optional block is no block, even over a merged one.
	c = mustParse(t, `
pools:
  - &a {name: a, models: [m], process: {command: [s, "{port}"]}, autoscale: {max: 2}}
  - {<<: *a, name: b, models: [n], autoscale: ~}
`)
	if c.Pools[0].Autoscale == nil || c.Pools[1].Autoscale != nil {
		t.Errorf("autoscale: pool a %v, pool b %v; want set, nil", c.Pools[0].Autoscale, c.Pools[1].Autoscale)
	}
}

func TestAnchorsAndMerge(t *testing.T) {
	c, err := parseFile(t, "testdata/anchors.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	a, b := c.Pools[0], c.Pools[1]
	if b.Name != "b" || !reflect.DeepEqual(b.Models, []string{"model-b"}) {
		t.Errorf("pool b's own keys lost to the merge: %q %q", b.Name, b.Models)
	}
	if !reflect.DeepEqual(a.Backends, b.Backends) || b.Timeouts.Connect.D() != time.Second {
		t.Errorf("pool b did not take pool a's keys: %+v %+v", b.Backends, b.Timeouts)
	}
	if c.Admin.Listen != "" {
		t.Errorf("admin.listen = %q, want \"\" (off)", c.Admin.Listen)
	}
	want := HealthCheck{Path: "/ready", Interval: Duration(2 * time.Second), Timeout: Duration(2 * time.Second), HealthyThreshold: 2, UnhealthyThreshold: 3}
	if a.HealthCheck != want || b.HealthCheck != want {
		t.Errorf("health checks %+v %+v, want %+v", a.HealthCheck, b.HealthCheck, want)
	}
}

func TestEnvExpansion(t *testing.T) {
	c, err := parseFile(t, "testdata/env.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := c.Pools[0]
	if c.Listen != ":9100" || p.Models[0] != "sim-llm" || p.Balancer != "round_robin" || p.Process.Replicas != 3 {
		t.Errorf("listen %q models %q balancer %q replicas %d", c.Listen, p.Models, p.Balancer, p.Process.Replicas)
	}
	if got, want := p.Process.Command[2], "exec my-server --port {port} --name ${HOSTNAME}"; got != want {
		t.Errorf("literal ${: got %q, want %q", got, want)
	}
	if b := c.Pools[1].Backends[0]; b.URL != "http://127.0.0.1:9001" || b.Weight != 2 {
		t.Errorf("backend from the environment = %+v", b)
	}

	// A value from the environment stays one scalar whatever it holds.
	c = mustParse(t, `
pools: [{name: a, models: ["${YAML}"], backends: [{url: "http://127.0.0.1:1"}], hash_on: "json:${EMPTY:-user}"}]
`)
	if c.Pools[0].Models[0] != "{a: 1}" || c.Pools[0].HashOn != "json:user" {
		t.Errorf("models %q hash_on %q", c.Pools[0].Models, c.Pools[0].HashOn)
	}
}

func TestExpandEnv(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{in: "plain", want: "plain"},
		{in: "${PORT}", want: "9100"},
		{in: "a${PORT}b${PORT}", want: "a9100b9100"},
		{in: "${EMPTY}", want: ""},
		{in: "${EMPTY:-x}", want: "x"},
		{in: "${UNSET:-x:y}", want: "x:y"},
		{in: "${UNSET:-}", want: ""},
		{in: "${PORT:-x}", want: "9100"},
		{in: "$${PORT}", want: "${PORT}"},
		{in: "$PORT $ $$ $}", want: "$PORT $ $$ $}"},
		{in: "${UNSET}", err: "environment variable UNSET is not set; set it, or write ${UNSET:-default}"},
		{in: "x ${PORT", err: `unterminated "${"`},
		{in: "${1X}", err: "invalid reference ${1X}"},
		{in: "${}", err: "invalid reference ${}"},
		{in: "${A B}", err: "invalid reference ${A B}"},
	}
	for _, tc := range tests {
		got, err := expandEnv(tc.in, testLookup)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("expandEnv(%q) error = %v, want %q", tc.in, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("expandEnv(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// TestParseUsesEnvironment checks that Parse (unlike the tests' parse)
// reads the process environment.
func TestParseUsesEnvironment(t *testing.T) {
	t.Setenv("SLUICE_TEST_MODEL", "from-env")
	c, err := Parse("env.yaml", []byte(`pools: [{name: a, models: ["${SLUICE_TEST_MODEL}"], backends: [{url: "http://127.0.0.1:1"}]}]`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Pools[0].Models[0] != "from-env" {
		t.Errorf("model %q, want from-env", c.Pools[0].Models[0])
	}
}

// TestValidateInCode checks a Config built in code: valid once it has a
// pool, and problems without a place.
func TestValidateInCode(t *testing.T) {
	c := Default()
	c.Pools = []Pool{DefaultPool()}
	c.Pools[0].Name = "a"
	c.Pools[0].Models = []string{"m"}
	c.Pools[0].Backends = []Backend{DefaultBackend()}
	c.Pools[0].Backends[0].URL = "http://127.0.0.1:9001"
	if err := c.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	c.Pools[0].Balancer = "fastest"
	c.Pools[0].Retry.Budget = -1
	err := c.Validate()
	want := `pools[0].balancer: unknown balancer "fastest"; want one of: round_robin, weighted_round_robin, random, least_request, p2c, p2c_ewma, consistent_hash, kv_aware
pools[0].retry.budget: -1 must be from 0 to 1 (the share of requests that may be retries)`
	if err == nil || err.Error() != want {
		t.Errorf("Validate =\n%v\nwant\n%s", err, want)
	}
}

func TestPoolByName(t *testing.T) {
	c := mustParse(t, `
pools:
  - {name: a, models: [m], backends: [{url: "http://127.0.0.1:1"}]}
  - {name: b, models: [n], backends: [{url: "http://127.0.0.1:2"}]}
`)
	if p := c.PoolByName("b"); p == nil || p != &c.Pools[1] {
		t.Errorf("PoolByName(b) = %p, want %p", p, &c.Pools[1])
	}
	if p := c.PoolByName("z"); p != nil {
		t.Errorf("PoolByName(z) = %+v, want nil", p)
	}
}

func TestErrorFormat(t *testing.T) {
	tests := []struct {
		e    Error
		want string
	}{
		{Error{File: "s.yaml", Line: 3, Col: 7, Msg: "m"}, "s.yaml:3:7: m"},
		{Error{Line: 3, Col: 7, Msg: "m"}, "3:7: m"},
		{Error{File: "s.yaml", Msg: "m"}, "s.yaml: m"},
		{Error{Msg: "m"}, "m"},
	}
	for _, tc := range tests {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("%+v: got %q, want %q", tc.e, got, tc.want)
		}
	}
	if got := (Errors{{Msg: "a"}, {Msg: "b"}}).Error(); got != "a\nb" {
		t.Errorf("Errors: got %q", got)
	}
}

// TestAliasExpansionBounded checks that a file whose aliases multiply into
// a huge tree is refused instead of decoded.
func TestAliasExpansionBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("pools:\n  - &p {name: a, backends: [{url: 'http://127.0.0.1:1'}], models: [")
	for i := range 1000 {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "m%d", i)
	}
	b.WriteString("]}\n")
	for range 1000 {
		b.WriteString("  - *p\n")
	}
	// About 20 KB that would decode to a million values.
	_, err := parse("bomb.yaml", []byte(b.String()), testLookup)
	want := "aliases (*name) expand the file too much; repeat fewer of them"
	if err == nil || !errorLineRE.MatchString(err.Error()) || !strings.HasSuffix(err.Error(), ": "+want) {
		t.Fatalf("got %.500v, want FILE:LINE:COL: %s", err, want)
	}
	var errs Errors
	if errors.As(err, &errs); len(errs) != 1 {
		t.Errorf("got %d problems, want only the budget one", len(errs))
	}
}

// TestHealthCheckTimeoutFollowsInterval: an interval shorter than the
// default timeout is valid on its own; a timeout the file sets is kept and
// checked as it is.
func TestHealthCheckTimeoutFollowsInterval(t *testing.T) {
	for _, tc := range []struct {
		name, hc string
		want     time.Duration // timeout; 0: an error is expected
	}{
		{"interval alone", "{interval: 1s}", time.Second},
		{"short interval", "{interval: 250ms}", 250 * time.Millisecond},
		{"long interval keeps the default", "{interval: 30s}", 2 * time.Second},
		{"timeout set", "{interval: 1s, timeout: 500ms}", 500 * time.Millisecond},
		{"timeout alone", "{timeout: 1s}", time.Second},
		{"timeout set longer than interval", "{interval: 1s, timeout: 2s}", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "pools:\n  - name: p\n    models: [m]\n    backends: [{url: \"http://127.0.0.1:9001\"}]\n    health_check: " + tc.hc + "\n"
			c, err := parse("test.yaml", []byte(src), testLookup)
			if tc.want == 0 {
				if err == nil || !strings.Contains(err.Error(), "pools[0].health_check.timeout: timeout 2s is longer than interval 1s") {
					t.Fatalf("err = %v, want the timeout rejected", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Pools[0].HealthCheck.Timeout.D(); got != tc.want {
				t.Errorf("timeout = %s, want %s", got, tc.want)
			}
		})
	}
}
