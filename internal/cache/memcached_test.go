package cache

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
)

// memcachedServer is a private memcached started for a test.
type memcachedServer struct {
	addr string
	cmd  *exec.Cmd
}

// startMemcached runs memcached on a free port of 127.0.0.1 with the given
// extra flags (such as "-I", "2m") and waits until it answers. Without the
// binary (make test installs it) the test fails under CI and is skipped
// elsewhere.
func startMemcached(t *testing.T, flags ...string) *memcachedServer {
	t.Helper()
	bin, err := exec.LookPath("memcached")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("memcached is not installed (scripts/test-deps.sh installs it)")
		}
		t.Skip("memcached is not installed (scripts/test-deps.sh installs it)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	args := []string{"-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-m", "16"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root") // memcached refuses root without it
	}
	s := &memcachedServer{addr: "127.0.0.1:" + strconv.Itoa(port)}
	s.cmd = exec.Command(bin, append(args, flags...)...)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start memcached: %v", err)
	}
	t.Cleanup(s.stop)
	c := memcache.New(s.addr)
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("memcached on %s did not answer", s.addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s
}

func (s *memcachedServer) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// has reports whether the server holds key.
func (s *memcachedServer) has(t *testing.T, key string) bool {
	t.Helper()
	c := memcache.New(s.addr)
	defer c.Close()
	_, err := c.Get(key)
	if err != nil && !errors.Is(err, memcache.ErrCacheMiss) {
		t.Fatalf("memcached get: %v", err)
	}
	return err == nil
}

func TestMemcachedSharedBetweenReplicas(t *testing.T) {
	srv := startMemcached(t)
	clock := clockwork.NewFakeClockAt(time.Now())
	a := newCache(t, Options{Memcached: []string{srv.addr}, Clock: clock})
	bc := newCache(t, Options{Memcached: []string{srv.addr}, Clock: clock})

	upstream := newBackend(t, streamer)
	ga := newGateway(t, a, upstream, time.Minute)
	gb := newGateway(t, bc, upstream, time.Minute)
	body := `{"model":"sim-llm","stream":true}`

	first := mustPost(t, ga.URL, body)
	key, _ := KeyFor("chat", "/v1/chat/completions", []byte(body), "")
	mkey := defaultMemcachedPrefix + key.String()
	waitFor(t, "the entry in memcached", func() bool { return srv.has(t, mkey) })

	second := mustPost(t, gb.URL, body)
	if second.header.Get("X-Sluice-Cache") != "hit" || second.body != first.body || upstream.calls.Load() != 1 {
		t.Fatalf("replica b: %s, %d calls, body equal %v", second.header.Get("X-Sluice-Cache"), upstream.calls.Load(), second.body == first.body)
	}
	if ct := second.header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("replayed Content-Type %q", ct)
	}
	if _, ok := bc.mem.GetIfPresent(key.sum); !ok {
		t.Fatal("a memcached hit was not kept in memory")
	}

	// The copy in memcached carries its expiry: past it, a miss even
	// though memcached (on real time) still holds it.
	clock.Advance(time.Minute)
	c := newCache(t, Options{Memcached: []string{srv.addr}, Clock: clock})
	if e := c.lookupRedis(t.Context(), key); e != nil {
		t.Fatal("expired entry served from memcached")
	}
	if !srv.has(t, mkey) {
		t.Fatal("memcached dropped the entry before its TTL")
	}
}

func TestMemcachedOnly(t *testing.T) {
	srv := startMemcached(t)
	c, err := New(Options{Memcached: []string{srv.addr}, MemcachedPrefix: "t:" + t.Name() + ":"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var calls atomic.Int32
	next := func(w http.ResponseWriter, r *http.Request) { calls.Add(1); _, _ = io.WriteString(w, "{}") }
	direct(c, chatBody, next)
	key, _ := KeyFor("chat", "/v1/chat/completions", []byte(chatBody), "")
	waitFor(t, "the entry in memcached", func() bool { return srv.has(t, "t:"+t.Name()+":"+key.String()) })
	if w := direct(c, chatBody, next); w.Header().Get("X-Sluice-Cache") != "hit" || calls.Load() != 1 {
		t.Fatalf("second request: %s after %d upstream calls, want a hit from memcached", w.Header().Get("X-Sluice-Cache"), calls.Load())
	}
}

// An entry over the item limit is kept in memory only; it never reaches
// memcached, and nothing fails. With a limit set above the server's, the
// server refuses the item, which is counted and served the same way.
func TestMemcachedItemLimit(t *testing.T) {
	srv := startMemcached(t, "-I", "1m")
	big := strings.Repeat("x", 1100<<10) // over memcached's 1 MiB
	for _, tc := range []struct {
		name      string
		itemLimit int
		op        string
	}{
		{"skipped by sluice", 0, "too_large"},
		{"refused by the server", 4 << 20, "set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := "t" + strconv.Itoa(tc.itemLimit) + ":"
			c := newCache(t, Options{Memcached: []string{srv.addr}, MemcachedPrefix: prefix, MemcachedItemLimit: tc.itemLimit})
			var calls atomic.Int32
			next := func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, `{"x":"`+big+`"}`)
			}
			if w := direct(c, chatBody, next); w.Code != http.StatusOK || w.Body.Len() != len(big)+8 {
				t.Fatalf("first: %d, %d bytes", w.Code, w.Body.Len())
			}
			waitFor(t, "the write attempt", func() bool { return testutil.ToFloat64(c.m.mcErrors.WithLabelValues(tc.op)) == 1 })
			if w := direct(c, chatBody, next); w.Header().Get("X-Sluice-Cache") != "hit" || calls.Load() != 1 || w.Body.Len() != len(big)+8 {
				t.Fatalf("second: %s after %d calls, %d bytes; want a hit from memory", w.Header().Get("X-Sluice-Cache"), calls.Load(), w.Body.Len())
			}
			key, _ := KeyFor("chat", "/v1/chat/completions", []byte(chatBody), "")
			if srv.has(t, prefix+key.String()) {
				t.Fatal("an entry over the item limit is in memcached")
			}
			// A small entry still goes through.
			small := func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "{}") }
			direct(c, `{"model":"small"}`, small)
			skey, _ := KeyFor("chat", "/v1/chat/completions", []byte(`{"model":"small"}`), "")
			waitFor(t, "the small entry in memcached", func() bool { return srv.has(t, prefix+skey.String()) })
		})
	}
}

func TestMemcachedDownIsAMiss(t *testing.T) {
	srv := startMemcached(t)
	c := newCache(t, Options{Memcached: []string{srv.addr}})
	srv.stop()
	var calls atomic.Int32
	next := func(w http.ResponseWriter, r *http.Request) { calls.Add(1); _, _ = io.WriteString(w, "{}") }
	if w := direct(c, chatBody, next); w.Code != http.StatusOK || w.Header().Get("X-Sluice-Cache") != "miss" {
		t.Fatalf("with memcached down: %d %s", w.Code, w.Header().Get("X-Sluice-Cache"))
	}
	if w := direct(c, chatBody, next); w.Header().Get("X-Sluice-Cache") != "hit" || calls.Load() != 1 {
		t.Fatalf("memory level with memcached down: %s, %d calls", w.Header().Get("X-Sluice-Cache"), calls.Load())
	}
	if got := testutil.ToFloat64(c.m.mcErrors.WithLabelValues("get")); got < 1 {
		t.Fatalf("sluice_cache_memcached_errors_total{op=get} = %v", got)
	}
}

func TestMemcachedOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"prefix too long", Options{MemoryBytes: 1 << 20, Memcached: []string{"127.0.0.1:1"}, MemcachedPrefix: strings.Repeat("p", 190)}, "longer than"},
		{"prefix with a space", Options{MemoryBytes: 1 << 20, Memcached: []string{"127.0.0.1:1"}, MemcachedPrefix: "a b"}, "space"},
		{"bad server", Options{MemoryBytes: 1 << 20, Memcached: []string{"no-port"}}, "memcached servers"},
		{"both levels", Options{MemoryBytes: 1 << 20, Memcached: []string{"127.0.0.1:1"}, Redis: newUnusedRedis(t)}, "both set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.opts)
			if err == nil {
				c.Close()
				t.Fatal("New accepted it")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestMemcachedExpiration(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	l := &memcachedLevel{clock: clockwork.NewFakeClockAt(now)}
	for _, tc := range []struct {
		ttl  time.Duration
		want int32
	}{
		{time.Millisecond, 1},
		{time.Second, 1},
		{1500 * time.Millisecond, 2},
		{time.Hour, 3600},
		{30 * 24 * time.Hour, 30 * 24 * 3600},
		{31 * 24 * time.Hour, int32(now.Add(31 * 24 * time.Hour).Unix())},
	} {
		if got := l.expiration(tc.ttl); got != tc.want {
			t.Errorf("expiration(%v) = %d, want %d", tc.ttl, got, tc.want)
		}
	}
}

// newUnusedRedis is a Redis client that is never used.
func newUnusedRedis(t *testing.T) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { c.Close() })
	return c
}
