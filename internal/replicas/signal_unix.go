//go:build unix

package replicas

import (
	"errors"
	"os"
	"syscall"
)

// terminate asks the replica's whole process group to stop (SIGTERM).
func terminate(p *os.Process) error { return signalGroup(p, syscall.SIGTERM) }

// kill stops the replica's whole process group at once (SIGKILL).
func kill(p *os.Process) error { return signalGroup(p, syscall.SIGKILL) }

func signalGroup(p *os.Process, sig syscall.Signal) error {
	// The replica leads its group (Setpgid), so the group id is its pid. The
	// id stays reserved while any member lives, so this reaches no stranger
	// even after the leader was reaped.
	err := syscall.Kill(-p.Pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}
