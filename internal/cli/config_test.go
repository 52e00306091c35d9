package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConfigValidate(t *testing.T) {
	good := writeConfig(t, `
pools:
  - name: chat
    models: [sim-llm]
    backends: [{url: "http://127.0.0.1:9001"}]
`)
	bad := writeConfig(t, `
listen: "8080"
pools:
  - name: chat
    models: [sim-llm]
    balancer: fastest
    backends: [{url: "http://127.0.0.1:9001", wieght: 2}]
`)
	problem := regexp.MustCompile(`^` + regexp.QuoteMeta(bad) + `:[0-9]+:[0-9]+: \S`)
	tests := []struct {
		name       string
		args       []string
		wantOut    string
		wantErrOut []string // substrings, one per stderr line, in order
		wantErr    string
	}{
		{
			name:    "valid",
			args:    []string{"config", "validate", "-c", good},
			wantOut: "ok\n",
		},
		{
			name:    "valid, long flag",
			args:    []string{"config", "validate", "--config", good},
			wantOut: "ok\n",
		},
		{
			name: "invalid",
			args: []string{"config", "validate", "-c", bad},
			wantErrOut: []string{
				`:2:9: listen: invalid address "8080"`,
				`:6:15: pools[0].balancer: unknown balancer "fastest"`,
				`:7:47: pools[0].backends[0].wieght: unknown key; did you mean "weight"?`,
			},
			wantErr: "is not valid: 3 problems",
		},
		{
			name:    "missing file",
			args:    []string{"config", "validate", "-c", filepath.Join(t.TempDir(), "nope.yaml")},
			wantErr: "no such file or directory",
		},
		{
			name:    "stray argument",
			args:    []string{"config", "validate", good},
			wantErr: "unknown command",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := Run(context.Background(), tc.args, &out, &errOut)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Run error = %v, want %q", err, tc.wantErr)
			}
			if err != nil && ExitCode(err) != 1 {
				t.Errorf("exit code %d, want 1", ExitCode(err))
			}
			if out.String() != tc.wantOut {
				t.Errorf("stdout = %q, want %q", out.String(), tc.wantOut)
			}
			if tc.wantErrOut == nil {
				return
			}
			lines := strings.Split(strings.TrimSuffix(errOut.String(), "\n"), "\n")
			if len(lines) != len(tc.wantErrOut) {
				t.Fatalf("stderr has %d lines, want %d:\n%s", len(lines), len(tc.wantErrOut), errOut.String())
			}
			for i, line := range lines {
				if !problem.MatchString(line) || !strings.Contains(line, tc.wantErrOut[i]) {
					t.Errorf("stderr line %d = %q, want FILE:LINE:COL: and %q", i+1, line, tc.wantErrOut[i])
				}
			}
			// The problems are printed once: the returned error only sums them up.
			if strings.Contains(err.Error(), "balancer") {
				t.Errorf("error repeats the problems: %v", err)
			}
		})
	}
}
