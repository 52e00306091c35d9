package replicas

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// TestSpawnerTiesChildrenToItsThread checks the guard against
// golang/go#27505: a child started through the spawner survives the exit of
// the thread that asked for it (Go ends the thread of a goroutine that
// returns while locked to it), and dies when the spawner's own thread ends.
func TestSpawnerTiesChildrenToItsThread(t *testing.T) {
	sp := newSpawner()
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = sysProcAttr()
	type started struct {
		tid int
		err error
	}
	res := make(chan started, 1)
	var r started
	for {
		go func() {
			runtime.LockOSThread() // returning locked ends this thread ...
			if syscall.Gettid() == syscall.Getpid() {
				// ... except the main thread, which Go never ends.
				runtime.UnlockOSThread()
				res <- started{tid: -1}
				return
			}
			res <- started{syscall.Gettid(), sp.start(cmd)}
		}()
		if r = <-res; r.tid != -1 {
			break
		}
	}
	if r.err != nil {
		sp.stop()
		t.Fatal(r.err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	waitUntil(t, "the asking thread to exit", func() bool {
		_, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", r.tid))
		return errors.Is(err, os.ErrNotExist)
	})
	// A parent-death signal is delivered synchronously as the thread exits;
	// by now it would have landed.
	// Alive is any state but gone (0), zombie or dead: a loaded machine
	// also shows D (waiting on the disk) or T.
	if st := procState(cmd.Process.Pid); st == 0 || st == 'Z' || st == 'X' || st == 'x' {
		t.Fatalf("the child died with the thread that asked for it (state %q)", st)
	}

	// Go never ends the main thread (it parks it instead); a spawner that
	// happened to lock it ties its children to the whole process, which is
	// as safe but cannot be observed here.
	onMain := sp.tid == syscall.Getpid()
	sp.stop()
	if onMain {
		t.Log("the spawner ran on the main thread; its exit is not observable")
		return
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Errorf("child ended with %v, want SIGKILL from its parent thread's death", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the child outlived the spawner's thread")
	}
}

// procState is the state letter of pid in /proc (Z for a zombie), or 0.
func procState(pid int) byte {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2]
	}
	return 0
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
