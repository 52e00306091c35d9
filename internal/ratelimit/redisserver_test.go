package ratelimit

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

// redisServer is a private redis-server started for a test, or the one at
// 127.0.0.1:6379 when redis-server is not installed.
type redisServer struct {
	addr string
	port int
	cmd  *exec.Cmd
}

const redisBinary = "/usr/bin/redis-server"

var keyPrefixSeq atomic.Int64

// uniquePrefix keeps tests that share a Redis apart.
func uniquePrefix(t testing.TB) string {
	return fmt.Sprintf("sluice-test:%d:%d:%s:", os.Getpid(), keyPrefixSeq.Add(1), t.Name())
}

// startRedis starts a private redis-server on a free port, or falls back to
// 127.0.0.1:6379, or skips the test when neither is there.
func startRedis(t testing.TB) *redisServer {
	t.Helper()
	if _, err := os.Stat(redisBinary); err != nil {
		if ping("127.0.0.1:6379") == nil {
			return &redisServer{addr: "127.0.0.1:6379"}
		}
		t.Skip("no redis-server binary and no Redis at 127.0.0.1:6379")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s := &redisServer{addr: "127.0.0.1:" + strconv.Itoa(port), port: port}
	s.start(t)
	t.Cleanup(s.stop)
	return s
}

// start runs redis-server on s.port and waits until it answers.
func (s *redisServer) start(t testing.TB) {
	t.Helper()
	s.cmd = exec.Command(redisBinary, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "no")
	// The server dies with the test binary, even one killed by a timeout.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for ping(s.addr) != nil {
		if time.Now().After(deadline) {
			s.stop()
			t.Fatalf("redis-server on %s did not answer", s.addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop kills a private redis-server and waits for it.
func (s *redisServer) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

func ping(addr string) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return c.Ping(ctx).Err()
}

// client returns a client of s closed at the end of the test.
func (s *redisServer) client(t testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.addr, DialTimeout: 500 * time.Millisecond})
	t.Cleanup(func() { c.Close() })
	return c
}
