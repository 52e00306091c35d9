package replicas

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
	"time"
)

// process is one running process of a replica, with the goroutines that
// read its output and wait for its exit.
type process struct {
	cmd        *exec.Cmd
	exited     chan struct{} // closed once the process has exited and been reaped
	waitErr    error         // how it exited; read only after exited closes
	out        tail
	outR, errR *os.File
	readers    sync.WaitGroup
}

// spawn starts sp's command for replica id on port, in its own process
// group, from the set's spawner thread.
func (s *ProcessSet) spawn(sp *spec, port int, id string, gpu int) (*process, error) {
	args, env := sp.expand(port, id, gpu)
	cmd := exec.Command(sp.path, args...)
	cmd.Args[0] = sp.cfg.Command[0]
	cmd.Env = env
	cmd.SysProcAttr = sysProcAttr()
	// The replica writes straight into pipes sluice reads; no goroutine of
	// os/exec copies, so Wait never waits on output.
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("create stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("create stderr pipe: %w", err)
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	err = s.spawner.start(cmd)
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("start %s: %w", sp.path, err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{}), outR: outR, errR: errR}
	emitter := func(stream string) func(string) {
		return func(text string) {
			p.out.add(text)
			s.pump.send(outputLine{replica: id, stream: stream, text: text})
		}
	}
	p.readers.Go(func() { copyLines(outR, emitter("stdout")) })
	p.readers.Go(func() { copyLines(errR, emitter("stderr")) })
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// reap kills what is left of the process group (nothing, after a clean
// exit; the children a crashed replica left behind, otherwise), waits for
// the process, and collects its output. Every goroutine of p has ended when
// it returns.
func (p *process) reap() {
	_ = kill(p.cmd.Process)
	<-p.exited
	readersDone := make(chan struct{})
	go func() {
		p.readers.Wait()
		close(readersDone)
	}()
	// A grandchild that left the process group may hold the pipes open;
	// output is not worth waiting for past this (real time: it bounds an
	// OS resource, not a supervised timing).
	linger := time.NewTimer(outputLinger)
	select {
	case <-readersDone:
	case <-linger.C:
	}
	linger.Stop()
	p.outR.Close() // unblocks readers still held open
	p.errR.Close()
	<-readersDone
}
