package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/sluice-ai/sluice/bench/internal/procs"
)

// proxyReadyTimeout bounds a proxy's start: listening, and a first request
// answered through it once its health checks passed.
const proxyReadyTimeout = 20 * time.Second

// configData is what a config template in bench/configs is rendered with.
type configData struct {
	// Listen is the loopback address to listen on, Port its port alone.
	Listen, Port string
	// Backends are the upstreams, as host:port.
	Backends []string
	// Balancer is the policy in the proxy's own vocabulary ("" for
	// NGINX's round robin).
	Balancer string
	// LogLevel is sluice's log level.
	LogLevel string
	// Dir is a scratch directory private to this instance.
	Dir string
	// MaxConn is how many client connections the proxy is to accept at
	// once (HAProxy's maxconn, NGINX's worker_connections).
	MaxConn int
	// FileLimit is the open-file limit the proxy runs with.
	FileLimit uint64
}

// policy is one load-balancing policy of one proxy.
type policy struct {
	// Name is the policy as the results show it.
	Name string
	// Directive is what the proxy's config calls it.
	Directive string
	// Smoke marks the policies a -quick run compares.
	Smoke bool
}

// proxy is one of the proxies under test.
type proxy struct {
	Name string
	// Template is the config template's file name in bench/configs.
	Template string
	// Default is the policy of the overhead and streaming scenarios (one
	// upstream, so it does not matter which).
	Default policy
	// Balancing are the policies the balancing scenario compares.
	Balancing []policy
	// command returns the argv and extra environment that run the proxy
	// with the rendered config at cfg, given its binary and scratch dir.
	command func(bin, cfg, dir string) (argv, env []string)
}

var proxies = []proxy{
	{
		Name:     "sluice",
		Template: "sluice.yaml.tmpl",
		Default:  policy{"p2c_ewma", "p2c_ewma", true},
		Balancing: []policy{
			{"round_robin", "round_robin", true},
			{"least_request", "least_request", false},
			{"p2c", "p2c", false},
			{"p2c_ewma", "p2c_ewma", true},
		},
		command: func(bin, cfg, _ string) ([]string, []string) {
			return []string{bin, "serve", "-c", cfg}, nil
		},
	},
	{
		Name:     "haproxy",
		Template: "haproxy.cfg.tmpl",
		Default:  policy{"roundrobin", "roundrobin", true},
		Balancing: []policy{
			{"roundrobin", "roundrobin", false},
			{"leastconn", "leastconn", true},
		},
		command: func(bin, cfg, _ string) ([]string, []string) {
			return []string{bin, "-db", "-f", cfg}, nil
		},
	},
	{
		Name:     "nginx",
		Template: "nginx.conf.tmpl",
		Default:  policy{"round_robin", "", true},
		Balancing: []policy{
			{"round_robin", "", false},
			{"least_conn", "least_conn", true},
		},
		command: func(bin, cfg, dir string) ([]string, []string) {
			return []string{bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", cfg, "-g", "daemon off;"}, nil
		},
	},
	{
		Name:     "caddy",
		Template: "Caddyfile.tmpl",
		Default:  policy{"round_robin", "round_robin", true},
		Balancing: []policy{
			{"round_robin", "round_robin", false},
			{"least_conn", "least_conn", true},
		},
		command: func(bin, cfg, dir string) ([]string, []string) {
			// Caddy keeps its data and autosaved config under XDG
			// directories; these keep it out of the user's home.
			return []string{bin, "run", "--config", cfg, "--adapter", "caddyfile"},
				[]string{"XDG_DATA_HOME=" + dir, "XDG_CONFIG_HOME=" + dir, "HOME=" + dir}
		},
	},
}

// renderConfig renders the template at path with d.
func renderConfig(path string, d configData) ([]byte, error) {
	t, err := template.New(filepath.Base(path)).Option("missingkey=error").ParseFiles(path)
	if err != nil {
		return nil, fmt.Errorf("config template: %w", err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, d); err != nil {
		return nil, fmt.Errorf("config template %s: %w", filepath.Base(path), err)
	}
	return b.Bytes(), nil
}

// instance is a running proxy (or backend) the load is sent to.
type instance struct {
	// Name labels the instance in logs, e.g. "sluice p2c_ewma".
	Name string
	// URL is its base URL, http://host:port.
	URL  string
	proc *procs.Proc
}

// stop ends the instance and waits for it.
func (in *instance) stop(s *suite) {
	if in.proc != nil {
		s.sup.StopAndForget(in.proc)
	}
}

// startProxy renders p's config for backends and policy, starts p, and
// waits until a request through it succeeds.
func (s *suite) startProxy(ctx context.Context, p proxy, pol policy, backends []string, logLevel string) (*instance, error) {
	name := p.Name + " " + pol.Name
	if logLevel == "info" {
		name += " access-log"
	}
	bin := s.sluiceBin
	if p.Name != "sluice" {
		var err error
		if bin, err = lookTool(p.Name); err != nil {
			return nil, err
		}
	}
	addr, err := procs.FreeAddr()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(s.scratch, procs.FileSafe(name)+"-")
	if err != nil {
		return nil, fmt.Errorf("%s: scratch dir: %w", name, err)
	}
	// nginx workers drop root privileges and must still reach the dir.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%s: scratch dir: %w", name, err)
	}
	_, port, _ := net.SplitHostPort(addr)
	text, err := renderConfig(filepath.Join(s.configs, p.Template), configData{
		Listen: addr, Port: port, Backends: backends, Balancer: pol.Directive, LogLevel: logLevel, Dir: dir,
		MaxConn: s.maxConn, FileLimit: s.fileLimit,
	})
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, p.Template[:len(p.Template)-len(".tmpl")])
	if err := os.WriteFile(cfg, text, 0o644); err != nil {
		return nil, fmt.Errorf("%s: write config: %w", name, err)
	}
	argv, env := p.command(bin, cfg, dir)
	pr, err := s.sup.Start(name, env, argv...)
	if err != nil {
		return nil, err
	}
	in := &instance{Name: name, URL: "http://" + addr, proc: pr}
	if err := procs.WaitReady(ctx, pr, proxyReadyTimeout, procs.ChatOK(in.URL, "sim-llm")); err != nil {
		in.stop(s)
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return in, nil
}

// simFlags are the latency settings of simulated replicas.
type simFlags struct {
	TTFT, PrefillPerToken, ITL time.Duration
	MaxRunning                 int
	BatchPenalty               float64
	Slowdown                   float64
}

func (f simFlags) args() []string {
	return []string{
		"--ttft", f.TTFT.String(), "--prefill-per-token", f.PrefillPerToken.String(), "--itl", f.ITL.String(),
		"--max-running", strconv.Itoa(f.MaxRunning),
		"--batch-penalty", strconv.FormatFloat(f.BatchPenalty, 'g', -1, 64),
		"--slowdown", strconv.FormatFloat(f.Slowdown, 'g', -1, 64),
	}
}

// String is the flags as `sluice sim` takes them.
func (f simFlags) String() string { return strings.Join(f.args(), " ") }

// MarshalJSON writes the flags as one command-line string.
func (f simFlags) MarshalJSON() ([]byte, error) { return json.Marshal(f.String()) }

// UnmarshalJSON reads the flags back from the string MarshalJSON writes.
func (f *simFlags) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	args := strings.Fields(s)
	if len(args)%2 != 0 {
		return fmt.Errorf("sim flags %q: a flag without a value", s)
	}
	var g simFlags
	for i := 0; i < len(args); i += 2 {
		name, v := args[i], args[i+1]
		var err error
		switch name {
		case "--ttft":
			g.TTFT, err = time.ParseDuration(v)
		case "--prefill-per-token":
			g.PrefillPerToken, err = time.ParseDuration(v)
		case "--itl":
			g.ITL, err = time.ParseDuration(v)
		case "--max-running":
			g.MaxRunning, err = strconv.Atoi(v)
		case "--batch-penalty":
			g.BatchPenalty, err = strconv.ParseFloat(v, 64)
		case "--slowdown":
			g.Slowdown, err = strconv.ParseFloat(v, 64)
		default:
			err = errors.New("unknown flag")
		}
		if err != nil {
			return fmt.Errorf("sim flags %q: %s %s: %w", s, name, v, err)
		}
	}
	*f = g
	return nil
}

// startSim starts one `sluice sim` replica and waits for its /health.
func (s *suite) startSim(ctx context.Context, id string, f simFlags) (*instance, error) {
	addr, err := procs.FreeAddr()
	if err != nil {
		return nil, err
	}
	argv := append([]string{s.sluiceBin, "sim", "--addr", addr, "--id", id, "--model", "sim-llm"}, f.args()...)
	pr, err := s.sup.Start("sim "+id, nil, argv...)
	if err != nil {
		return nil, err
	}
	in := &instance{Name: "sim " + id, URL: "http://" + addr, proc: pr}
	if err := procs.WaitReady(ctx, pr, proxyReadyTimeout, procs.HTTPOK(in.URL+"/health")); err != nil {
		in.stop(s)
		return nil, err
	}
	return in, nil
}

// startBackend starts the overhead scenario's fast backend, this same
// executable run as backendCommand with args.
func (s *suite) startBackend(ctx context.Context, args ...string) (*instance, error) {
	return s.startHelper(ctx, "backend", "/health", append([]string{backendCommand}, args...)...)
}

// startGoProxy starts the reference Go reverse proxy in front of backend.
func (s *suite) startGoProxy(ctx context.Context, backend *instance) (*instance, error) {
	return s.startHelper(ctx, goProxyTarget, "/v1/chat/completions", goProxyCommand, "-backend", backend.URL)
}

// startHelper runs this executable as one of its helpers on a free port and
// waits until ready answers 200 (GET /health) or a chat request through it
// succeeds.
func (s *suite) startHelper(ctx context.Context, name, ready string, args ...string) (*instance, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("%s: find own executable: %w", name, err)
	}
	addr, err := procs.FreeAddr()
	if err != nil {
		return nil, err
	}
	argv := append([]string{self}, args...)
	pr, err := s.sup.Start(name, nil, append(argv, "-addr", addr)...)
	if err != nil {
		return nil, err
	}
	in := &instance{Name: name, URL: "http://" + addr, proc: pr}
	check := procs.HTTPOK(in.URL + ready)
	if ready != "/health" {
		check = procs.ChatOK(in.URL, "sim-llm")
	}
	if err := procs.WaitReady(ctx, pr, proxyReadyTimeout, check); err != nil {
		in.stop(s)
		return nil, err
	}
	return in, nil
}

// host returns an instance's host:port.
func (in *instance) host() string { return in.URL[len("http://"):] }
