package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluice-ai/sluice/internal/config"
)

// TestConfigTemplates renders every proxy's config template for each of
// its balancing policies (the default policy is one of them) and has the proxy itself check the result when it
// is installed (sluice's own config loader always).
func TestConfigTemplates(t *testing.T) {
	for _, p := range proxies {
		for _, pol := range p.Balancing {
			t.Run(p.Name+"/"+pol.Name, func(t *testing.T) {
				dir := t.TempDir()
				text, err := renderConfig(filepath.Join("..", "configs", p.Template), configData{
					Listen: "127.0.0.1:18080", Port: "18080",
					Backends: []string{"127.0.0.1:19001", "127.0.0.1:19002"},
					Balancer: pol.Directive, LogLevel: "warn", Dir: dir, MaxConn: 2000, FileLimit: 4096,
				})
				if err != nil {
					t.Fatal(err)
				}
				for _, b := range []string{"127.0.0.1:19001", "127.0.0.1:19002"} {
					if !strings.Contains(string(text), b) {
						t.Errorf("rendered config lacks backend %s:\n%s", b, text)
					}
				}
				path := filepath.Join(dir, strings.TrimSuffix(p.Template, ".tmpl"))
				if err := os.WriteFile(path, text, 0o644); err != nil {
					t.Fatal(err)
				}
				checkConfig(t, p.Name, path, dir)
			})
		}
	}
}

// checkConfig validates a rendered config with the proxy it is for.
func checkConfig(t *testing.T, name, path, dir string) {
	t.Helper()
	if name == "sluice" {
		cfg, err := config.Load(path)
		if err != nil {
			t.Fatalf("sluice rejects its config: %v", err)
		}
		if len(cfg.Pools) != 1 || len(cfg.Pools[0].Backends) != 2 {
			t.Fatalf("sluice config has %d pools", len(cfg.Pools))
		}
		return
	}
	bin, err := lookTool(name)
	if err != nil {
		t.Skipf("%s is not installed", name)
	}
	var argv []string
	switch name {
	case "haproxy":
		argv = []string{bin, "-c", "-f", path}
	case "nginx":
		argv = []string{bin, "-t", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", path}
	case "caddy":
		argv = []string{bin, "adapt", "--config", path, "--adapter", "caddyfile"}
	}
	cmd := exec.CommandContext(t.Context(), argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir, "HOME="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s rejects its config: %v\n%s", name, err, out)
	}
}

func TestDefaultPolicyIsCompared(t *testing.T) {
	for _, p := range proxies {
		found := false
		for _, pol := range p.Balancing {
			found = found || pol.Name == p.Default.Name && pol.Directive == p.Default.Directive
		}
		if !found {
			t.Errorf("%s: default policy %q is not among its balancing policies", p.Name, p.Default.Name)
		}
	}
}
