package replicas

import (
	"os/exec"
	"runtime"
	"syscall"
)

// sysProcAttr puts each replica in a process group of its own, so a stop
// signals everything the command started, and asks the kernel to SIGKILL
// the replica when the thread that started it dies. That thread is the
// spawner's (below), so the replica dies with sluice even when sluice is
// killed with SIGKILL and runs no cleanup.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// spawner starts processes from one OS thread that lives as long as the
// process set. Linux delivers a child's parent-death signal when the
// *thread* that forked it exits, not the process (golang/go#27505); a
// goroutine of the Go scheduler may fork from a thread that the runtime later
// retires, which would kill a healthy replica. Forking only from a goroutine
// locked to its thread for the set's whole life ties the signal to the set:
// the thread ends when stop returns, after every replica was stopped, or
// when sluice dies.
type spawner struct {
	reqs chan spawnRequest
	done chan struct{}
	tid  int // the thread's id, set before the first start returns
}

type spawnRequest struct {
	cmd  *exec.Cmd
	errc chan error
}

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan spawnRequest), done: make(chan struct{})}
	go s.loop()
	return s
}

func (s *spawner) loop() {
	// Never unlocked: when this goroutine returns, the runtime ends the
	// thread with it instead of reusing it, and the kernel kills any child
	// still alive (there should be none by then).
	runtime.LockOSThread()
	defer close(s.done)
	s.tid = syscall.Gettid()
	for req := range s.reqs {
		req.errc <- req.cmd.Start()
	}
}

// start runs cmd.Start on the spawner's thread.
func (s *spawner) start(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	s.reqs <- spawnRequest{cmd: cmd, errc: errc}
	return <-errc
}

// stop ends the spawner's goroutine and thread. No start may follow.
func (s *spawner) stop() {
	close(s.reqs)
	<-s.done
}
