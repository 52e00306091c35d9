package hostinfo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// RepoRoot finds the module root (the directory with sluice's go.mod) at or
// above the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/sluice-ai/sluice\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the sluice repository: run from its root")
		}
		dir = parent
	}
}

// GitDescribe names the commit measured, with "-dirty" when the work tree
// has changes, or "unknown".
func GitDescribe(ctx context.Context, root string) string {
	cmd := exec.CommandContext(ctx, "git", "describe", "--tags", "--always", "--dirty")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

// WaitForLoad waits while the 1-minute load average is above limit (no
// wait when limit is 0), for at most longest, and returns how long it
// waited.
func WaitForLoad(ctx context.Context, limit float64, longest time.Duration, logf func(string, ...any)) time.Duration {
	start := time.Now()
	for limit > 0 {
		l := LoadAvg()[0]
		if l <= limit || time.Since(start) >= longest {
			break
		}
		logf("load average %.2f is above %.2f: waiting (%v so far)", l, limit, time.Since(start).Round(time.Second))
		select {
		case <-ctx.Done():
			return time.Since(start)
		case <-time.After(15 * time.Second):
		}
	}
	return time.Since(start)
}
