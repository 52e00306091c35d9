package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/sluice-ai/sluice/bench/internal/hostinfo"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// repoRoot finds the module root (the directory with sluice's go.mod) at or
// above the working directory.
func repoRoot() (string, error) {
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

// machine describes where the suite ran.
type machine = hostinfo.Machine

func describeMachine() machine { return hostinfo.Describe() }

func loadAvg() [3]float64 { return hostinfo.LoadAvg() }

// waitForLoad waits while the 1-minute load average is above limit, for at
// most longest.
func waitForLoad(ctx context.Context, limit float64, longest time.Duration, logf func(string, ...any)) {
	start := time.Now()
	for {
		l := loadAvg()[0]
		if l <= limit || time.Since(start) >= longest || ctx.Err() != nil {
			return
		}
		logf("load average %.2f is above %.2f: waiting (%v so far)", l, limit, time.Since(start).Round(time.Second))
		sleep(ctx, 15*time.Second)
	}
}

// gitDescribe names the commit measured, with "-dirty" when the work tree
// has changes.
func gitDescribe(ctx context.Context, root string) string {
	out, err := runCommand(ctx, root, "git", "describe", "--tags", "--always", "--dirty")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(out)
}
