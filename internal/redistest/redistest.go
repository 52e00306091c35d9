// Package redistest starts a private redis-server for tests that need a real
// Redis: on a free port of 127.0.0.1, killed with the test binary, falling
// back to the machine's Redis at 127.0.0.1:6379 when the redis-server
// binary is missing (make test installs it).
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a private redis-server started for a test, or the one at
// 127.0.0.1:6379 when redis-server is not installed.
type Server struct {
	// Addr is host:port.
	Addr string
	port int
	cmd  *exec.Cmd
}

// redisBinary is where Debian installs redis-server.
const redisBinary = "/usr/bin/redis-server"

var keyPrefixSeq atomic.Int64

// UniquePrefix keeps tests that share a Redis apart.
func UniquePrefix(t testing.TB) string {
	return fmt.Sprintf("sluice-test:%d:%d:%s:", os.Getpid(), keyPrefixSeq.Add(1), t.Name())
}

// Start starts a private redis-server on a free port, or falls back to
// 127.0.0.1:6379, or skips the test when neither is there.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := os.Stat(redisBinary); err != nil {
		if Ping("127.0.0.1:6379") == nil {
			return &Server{Addr: "127.0.0.1:6379"}
		}
		t.Skip("no redis-server binary and no Redis at 127.0.0.1:6379")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s := &Server{Addr: "127.0.0.1:" + strconv.Itoa(port), port: port}
	s.Restart(t)
	t.Cleanup(s.Stop)
	return s
}

// Restart runs redis-server on its port again (after Stop) and waits until it answers.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.cmd = exec.Command(redisBinary, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "no")
	// The server dies with the test binary, even one killed by a timeout.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for Ping(s.Addr) != nil {
		if time.Now().After(deadline) {
			s.Stop()
			t.Fatalf("redis-server on %s did not answer", s.Addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop kills a private redis-server and waits for it.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Ping reports whether a Redis answers at addr.
func Ping(addr string) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return c.Ping(ctx).Err()
}

// Client returns a client of s closed at the end of the test.
func (s *Server) Client(t testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr, DialTimeout: 500 * time.Millisecond})
	t.Cleanup(func() { c.Close() })
	return c
}

// Private reports whether the server was started for this test (and so may
// be stopped and restarted), not the machine's shared Redis.
func (s *Server) Private() bool { return s.port != 0 }

// URL is the server as a redis.url value.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }
