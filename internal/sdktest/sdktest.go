// Package sdktest installs the npm packages (the official openai SDK) that
// tests drive the gateway with, once per lock file, shared by every test
// package that needs them.
package sdktest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// NeedTool finds a command the test needs: missing, it fails the test
// under CI (make test installs it) and skips it elsewhere.
func NeedTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (scripts/test-deps.sh installs it)", name)
		}
		t.Skipf("%s is not installed (scripts/test-deps.sh installs it)", name)
	}
	return p
}

// Modules installs the packages locked in dir (package.json and
// package-lock.json, with the official openai package) once per lock
// file into the user's cache directory, and returns that directory; its
// node_modules holds them.
func Modules(t testing.TB, dir string) string {
	t.Helper()
	npm := NeedTool(t, "npm")
	lock, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(lock)
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	out := filepath.Join(cache, "sluice-test", "openai-sdk-"+hex.EncodeToString(sum[:8]))
	if _, err := os.Stat(filepath.Join(out, "node_modules", "openai", "package.json")); err == nil {
		return out
	}
	// Installed beside, then renamed into place: concurrent test runs never
	// see a half-installed directory.
	tmp := out + ".tmp-" + strconv.Itoa(os.Getpid())
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	for _, f := range []string{"package.json", "package-lock.json"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tmp, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = tmp
	if log, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci: %v\n%s", err, log)
	}
	if err := os.Rename(tmp, out); err != nil {
		if _, serr := os.Stat(filepath.Join(out, "node_modules", "openai", "package.json")); serr != nil {
			t.Fatalf("install the npm packages of %s: %v", dir, err)
		}
	}
	return out
}

// Script makes dir/sdk.mjs runnable by node: it installs dir's packages
// (Modules) and copies the script beside their node_modules, which
// `import 'openai'` needs, until the test ends. It returns node's path and
// the script's.
func Script(t testing.TB, dir string) (node, script string) {
	t.Helper()
	node = NeedTool(t, "node")
	modules := Modules(t, dir)
	b, err := os.ReadFile(filepath.Join(dir, "sdk.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(modules, "sdk-*.mjs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(f.Name()) })
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return node, f.Name()
}
