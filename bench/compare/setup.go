package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/sluice-ai/sluice/bench/internal/procs"
)

// tools are the external programs the suite drives, by the Debian package
// that provides each.
var tools = []struct{ bin, pkg string }{
	{"haproxy", "haproxy"},
	{"nginx", "nginx"},
	{"caddy", "caddy"},
	{"wrk", "wrk"},
}

// lookTool finds bin on PATH or in the sbin directories, where Debian puts
// haproxy and nginx and which a non-root PATH may lack.
func lookTool(bin string) (string, error) {
	if p, err := exec.LookPath(bin); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, bin)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not installed", bin)
}

// install apt-gets the tools that are missing. It needs root; without it,
// or when apt fails, it returns an error naming what is missing and the
// suite goes on without those tools.
func install(ctx context.Context, logf func(string, ...any)) error {
	var missing []string
	for _, t := range tools {
		if _, err := lookTool(t.bin); err != nil {
			missing = append(missing, t.pkg)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("missing %s and not root: run apt-get install -y %s", strings.Join(missing, ", "), strings.Join(missing, " "))
	}
	logf("installing %s from Debian packages", strings.Join(missing, " "))
	if out, err := procs.Run(ctx, "", "apt-get", "update", "-qq"); err != nil {
		return fmt.Errorf("apt-get update: %w\n%s", err, tail(out, 10))
	}
	argv := append([]string{"env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq"}, missing...)
	if out, err := procs.Run(ctx, "", argv...); err != nil {
		return fmt.Errorf("apt-get install %s: %w\n%s", strings.Join(missing, " "), err, tail(out, 10))
	}
	return nil
}

// buildSluice builds the sluice binary into bin under root.
func buildSluice(ctx context.Context, root, bin string) error {
	if out, err := procs.Run(ctx, root, "go", "build", "-o", bin, "./cmd/sluice"); err != nil {
		return fmt.Errorf("go build ./cmd/sluice: %w\n%s", err, tail(out, 20))
	}
	return nil
}

// versions asks each tool for its version; a tool that is missing or fails
// is reported as such.
func versions(ctx context.Context, sluiceBin string) map[string]string {
	v := map[string]string{}
	ask := func(name string, argv []string, pick func(string) string) {
		path, err := lookTool(argv[0])
		if argv[0] == sluiceBin {
			path, err = sluiceBin, nil
		}
		if err != nil {
			v[name] = "not installed"
			return
		}
		// wrk -v exits 1 after printing its version; the output decides.
		out, _ := procs.Run(ctx, "", append([]string{path}, argv[1:]...)...)
		if s := pick(out); s != "" {
			v[name] = s
		} else {
			v[name] = "unknown"
		}
	}
	head := func(s string) string { return strings.TrimSpace(strings.SplitN(strings.TrimSpace(s), "\n", 2)[0]) }
	ask("haproxy", []string{"haproxy", "-v"}, func(s string) string {
		f := strings.Fields(head(s))
		if len(f) >= 3 && f[0] == "HAProxy" {
			return f[2]
		}
		return head(s)
	})
	ask("nginx", []string{"nginx", "-v"}, func(s string) string {
		_, after, ok := strings.Cut(head(s), "nginx/")
		if ok {
			return after
		}
		return head(s)
	})
	ask("caddy", []string{"caddy", "version"}, head)
	ask("wrk", []string{"wrk", "-v"}, func(s string) string {
		f := strings.Fields(head(s))
		if len(f) >= 2 && f[0] == "wrk" {
			return f[1]
		}
		return head(s)
	})
	ask("sluice", []string{sluiceBin, "version"}, func(s string) string {
		f := strings.Fields(head(s))
		if len(f) >= 2 && f[0] == "sluice" {
			return f[1]
		}
		return head(s)
	})
	return v
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
