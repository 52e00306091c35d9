package replicas

import (
	"os"
	"os/exec"
	"syscall"
)

// Windows has neither process groups that can be signalled nor a
// parent-death signal; a replica is stopped by terminating its process, and
// one that starts children of its own must end them itself.
func sysProcAttr() *syscall.SysProcAttr { return nil }

func terminate(p *os.Process) error { return p.Kill() }

func kill(p *os.Process) error { return p.Kill() }

type spawner struct{}

func newSpawner() *spawner                 { return &spawner{} }
func (*spawner) start(cmd *exec.Cmd) error { return cmd.Start() }
func (*spawner) stop()                     {}
