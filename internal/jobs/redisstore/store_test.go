package redisstore_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/sluice-ai/sluice/internal/jobs/jobstest"
	"github.com/sluice-ai/sluice/internal/jobs/redisstore"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// redisServer is the binary the tests start a private server from.
const redisServer = "/usr/bin/redis-server"

// startRedis runs a private redis-server on a free port of 127.0.0.1 and
// returns its address; without the binary it falls back to a server on
// 127.0.0.1:6379 (the tests use unique key prefixes), and skips when there
// is none.
func startRedis(t testing.TB) string {
	if _, err := os.Stat(redisServer); err == nil {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		cmd := exec.Command(redisServer, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--loglevel", "warning")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if err := waitPing(addr, 10*time.Second); err != nil {
			t.Fatalf("redis-server on %s: %v", addr, err)
		}
		return addr
	}
	if err := waitPing("127.0.0.1:6379", time.Second); err == nil {
		return "127.0.0.1:6379"
	}
	t.Skip("no redis-server binary and no Redis on 127.0.0.1:6379")
	return ""
}

func waitPing(addr string, limit time.Duration) error {
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	deadline := time.Now().Add(limit)
	for {
		err := c.Ping(context.Background()).Err()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// clientStore is a store with its own client; closing it closes the
// client, as a gateway's death would.
type clientStore struct {
	*redisstore.Store
	rdb  *redis.Client
	once sync.Once
}

func (c *clientStore) Close() error {
	c.once.Do(func() { c.rdb.Close() })
	return nil
}

var prefixes atomic.Int64

func newNamespace(addr string) jobstest.NewNamespace {
	run := time.Now().UnixNano()
	return func(t testing.TB) jobstest.Open {
		prefix := fmt.Sprintf("sluice-test:%d:%d", run, prefixes.Add(1))
		return func(t testing.TB, lease time.Duration) jobstest.Store {
			rdb := redis.NewClient(&redis.Options{Addr: addr})
			s, err := redisstore.Open(context.Background(), rdb, redisstore.Options{
				Prefix: prefix, Lease: lease, Logger: jobstest.TestLogger(),
			})
			if err != nil {
				rdb.Close()
				t.Fatal(err)
			}
			cs := &clientStore{Store: s, rdb: rdb}
			t.Cleanup(func() { cs.Close() })
			return cs
		}
	}
}

func TestConformance(t *testing.T) {
	jobstest.Run(t, newNamespace(startRedis(t)))
}

func TestDial(t *testing.T) {
	addr := startRedis(t)
	ctx := context.Background()
	s, err := redisstore.Dial(ctx, "redis://"+addr+"/0", redisstore.Options{Prefix: "dial-test"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Lease() != redisstore.DefaultLease {
		t.Fatalf("lease %s", s.Lease())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := redisstore.Dial(ctx, "http://"+addr, redisstore.Options{}); err == nil {
		t.Fatal("a non-redis URL was accepted")
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	if _, err := redisstore.Open(ctx, rdb, redisstore.Options{Prefix: "a{b}"}); err == nil {
		t.Fatal("a prefix with braces was accepted")
	}
}
