package procs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const rollup = `56193e3e3000-7ffdb31ca000 ---p 00000000 00:00 0                          [rollup]
Rss:                1760 kB
Pss:                 282 kB
Pss_Dirty:           116 kB
Pss_Anon:            116 kB
Shared_Clean:       1604 kB
`

func TestParseRollup(t *testing.T) {
	m, err := parseRollup(rollup)
	if err != nil {
		t.Fatal(err)
	}
	if m.Rss != 1760 || m.Pss != 282 || m.Processes != 1 {
		t.Errorf("got %+v, want Rss 1760 Pss 282", m)
	}
	if _, err := parseRollup("Rss: 12 kB\n"); err == nil {
		t.Error("a rollup without Pss parsed")
	}
	if _, err := parseRollup("Rss: x kB\nPss: 1 kB\n"); err == nil {
		t.Error("a rollup with a bad number parsed")
	}
}

func TestStatGroup(t *testing.T) {
	tests := []struct {
		stat    string
		want    int
		wantErr bool
	}{
		{"12165 (cat) R 12161 12160 5435 0 -1 4194304", 12160, false},
		{"77 (nginx: worker (x) y) S 70 70 70 0", 70, false},
		{"77 nginx S 70 70", 0, true},
		{"77 (nginx) S", 0, true},
	}
	for _, tt := range tests {
		got, err := statGroup(tt.stat)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("statGroup(%q) = %d, %v; want %d (error %v)", tt.stat, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestGroupMemory sums a fake proc file system: two processes of group 70
// (a master and a worker), one of another group, one without a rollup
// (a kernel thread) and a file that is no process.
func TestGroupMemory(t *testing.T) {
	root := t.TempDir()
	write := func(pid, stat, rollup string) {
		dir := filepath.Join(root, pid)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644); err != nil {
			t.Fatal(err)
		}
		if rollup != "" {
			if err := os.WriteFile(filepath.Join(dir, "smaps_rollup"), []byte(rollup), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("70", "70 (nginx) S 1 70 70 0", "Rss: 1000 kB\nPss: 600 kB\n")
	write("71", "71 (nginx) S 70 70 70 0", "Rss: 3000 kB\nPss: 2500 kB\n")
	write("90", "90 (haproxy) S 1 90 90 0", "Rss: 5000 kB\nPss: 5000 kB\n")
	write("91", "91 (kworker) S 2 70 0 0", "")
	if err := os.WriteFile(filepath.Join(root, "uptime"), []byte("1 2"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := GroupMemory(root, 70)
	if err != nil {
		t.Fatal(err)
	}
	if m != (Memory{Pss: 3100, Rss: 4000, Processes: 2}) {
		t.Errorf("got %+v", m)
	}
	if _, err := GroupMemory(root, 55); err == nil || !strings.Contains(err.Error(), "no process") {
		t.Errorf("empty group: err = %v", err)
	}
}
