//go:build unix && !linux

package replicas

import (
	"os/exec"
	"syscall"
)

// sysProcAttr puts each replica in a process group of its own, so a stop
// signals everything the command started. These systems have no
// parent-death signal: if sluice is killed with SIGKILL, its replicas
// outlive it (docs/autoscaling.md).
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// spawner starts processes; without a parent-death signal the starting
// thread does not matter.
type spawner struct{}

func newSpawner() *spawner                 { return &spawner{} }
func (*spawner) start(cmd *exec.Cmd) error { return cmd.Start() }
func (*spawner) stop()                     {}
