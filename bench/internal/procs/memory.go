package procs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Memory is what a set of processes holds in memory, in KiB, summed over
// the processes.
type Memory struct {
	// Pss is the proportional set size: each page shared by several
	// processes (an NGINX master and its workers, a shared library) counts
	// as its share in each, so the sum over processes is what they hold
	// together.
	Pss int64 `json:"pss_kib"`
	// Rss is the resident set size: shared pages count in full in every
	// process that maps them.
	Rss int64 `json:"rss_kib"`
	// Processes is how many processes were summed.
	Processes int `json:"processes"`
}

// Memory sums the memory of every process in the child's process group,
// which is the child and whatever it forked (NGINX's workers), from
// /proc/PID/smaps_rollup.
func (p *Proc) Memory() (Memory, error) {
	return GroupMemory("/proc", p.Pid())
}

// GroupMemory sums Pss and Rss over the processes of process group pgid,
// reading the proc file system mounted at procfs.
func GroupMemory(procfs string, pgid int) (Memory, error) {
	var m Memory
	entries, err := os.ReadDir(procfs)
	if err != nil {
		return m, fmt.Errorf("memory of process group %d: %w", pgid, err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dir := filepath.Join(procfs, e.Name())
		stat, err := os.ReadFile(filepath.Join(dir, "stat"))
		if err != nil {
			continue // the process ended since the listing
		}
		if g, err := statGroup(string(stat)); err != nil || g != pgid {
			continue
		}
		rollup, err := os.ReadFile(filepath.Join(dir, "smaps_rollup"))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return m, fmt.Errorf("memory of pid %d: %w", pid, err)
		}
		one, err := parseRollup(string(rollup))
		if err != nil {
			return m, fmt.Errorf("memory of pid %d: %w", pid, err)
		}
		m.Pss += one.Pss
		m.Rss += one.Rss
		m.Processes++
	}
	if m.Processes == 0 {
		return m, fmt.Errorf("memory of process group %d: no process left", pgid)
	}
	return m, nil
}

// statGroup reads the process group, the fifth field, from the text of
// /proc/PID/stat. The second field, the command name in parentheses, may
// itself hold spaces and parentheses, so the fields are counted from the
// last ')'.
func statGroup(stat string) (int, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("stat: no command name")
	}
	// After the name: state, ppid, pgrp.
	f := strings.Fields(stat[i+1:])
	if len(f) < 3 {
		return 0, errors.New("stat: too few fields")
	}
	return strconv.Atoi(f[2])
}

// parseRollup reads the Rss and Pss lines, in kB, of
// /proc/PID/smaps_rollup.
func parseRollup(text string) (Memory, error) {
	var m Memory
	var seen int
	for line := range strings.Lines(text) {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		var dst *int64
		switch f[0] {
		case "Rss:":
			dst = &m.Rss
		case "Pss:":
			dst = &m.Pss
		default:
			continue
		}
		v, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return m, fmt.Errorf("smaps_rollup: %s %q: %w", f[0], f[1], err)
		}
		*dst = v
		seen++
	}
	if seen < 2 {
		return m, errors.New("smaps_rollup: no Rss and Pss lines")
	}
	m.Processes = 1
	return m, nil
}
