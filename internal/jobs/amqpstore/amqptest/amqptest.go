// Package amqptest gives tests a real RabbitMQ: a private rabbitmq-server
// started once per test binary on free ports of 127.0.0.1 with its data in
// a temporary directory, or, when the binary is missing, the machine's
// server on 127.0.0.1:5672 (guest/guest). Tests keep apart by unique queue
// prefixes. SLUICE_TEST_AMQP_URL names a running server to use instead.
package amqptest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// serverScript is where Debian installs the script that runs the broker
// as the calling user (/usr/sbin/rabbitmq-server switches to the rabbitmq
// user).
const serverScript = "/usr/lib/rabbitmq/bin/rabbitmq-server"

// bootLimit bounds the broker's start; it takes a few seconds idle and
// half a minute on a loaded machine.
const bootLimit = 3 * time.Minute

var (
	mu      sync.Mutex
	url     string
	started *exec.Cmd
	dir     string
	seq     atomic.Int64
)

// URL returns the URL of a RabbitMQ for this test binary, starting the
// private server on first use. Without one it fails the test under
// CI=true and skips it otherwise.
func URL(t testing.TB) string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if url != "" {
		return url
	}
	if u := os.Getenv("SLUICE_TEST_AMQP_URL"); u != "" {
		url = u
		return url
	}
	if _, err := os.Stat(serverScript); err == nil {
		u, err := start()
		if err != nil {
			t.Fatalf("start rabbitmq-server: %v", err)
		}
		url = u
		return url
	}
	const shared = "amqp://guest:guest@127.0.0.1:5672/"
	if ping(shared) == nil {
		url = shared
		return url
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no rabbitmq-server binary and no RabbitMQ on 127.0.0.1:5672 (scripts/test-deps.sh installs it)")
	}
	t.Skip("no rabbitmq-server binary and no RabbitMQ on 127.0.0.1:5672")
	return ""
}

// Prefix returns a queue prefix no other test of any run uses.
func Prefix() string {
	return fmt.Sprintf("sluice-test.%d.%d.%d", os.Getpid(), time.Now().UnixNano()%1e9, seq.Add(1))
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func start() (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	dist, err := freePort()
	if err != nil {
		return "", err
	}
	dir, err = os.MkdirTemp("", "sluice-rabbitmq-")
	if err != nil {
		return "", err
	}
	plugins := filepath.Join(dir, "enabled_plugins")
	if err := os.WriteFile(plugins, []byte("[].\n"), 0o644); err != nil {
		return "", err
	}
	cmd := exec.Command(serverScript)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT="+strconv.Itoa(port),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(dist),
		"RABBITMQ_NODENAME=sluice-test-"+strconv.Itoa(port)+"@localhost",
		"RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"),
		"RABBITMQ_PID_FILE="+filepath.Join(dir, "pid"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+plugins,
		"RABBITMQ_CONFIG_FILE="+filepath.Join(dir, "rabbitmq"),
		"RABBITMQ_ADVANCED_CONFIG_FILE="+filepath.Join(dir, "advanced.config"),
	)
	log, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return "", err
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	// Its own process group, so Stop kills the Erlang VM the script forks.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	started = cmd
	u := "amqp://guest:guest@127.0.0.1:" + strconv.Itoa(port) + "/"
	deadline := time.Now().Add(bootLimit)
	for {
		err := ping(u)
		if err == nil {
			return u, nil
		}
		if time.Now().After(deadline) {
			stopLocked()
			out, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			return "", fmt.Errorf("not ready after %s: %v\n%s", bootLimit, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func ping(u string) error {
	c, err := amqp.DialConfig(u, amqp.Config{Dial: amqp.DefaultDial(time.Second)})
	if err != nil {
		return err
	}
	return c.Close()
}

// Stop kills the private server, if one was started, and removes its
// data. Call it from TestMain after the tests ran.
func Stop() {
	mu.Lock()
	defer mu.Unlock()
	stopLocked()
}

func stopLocked() {
	if started != nil && started.Process != nil {
		_ = syscall.Kill(-started.Process.Pid, syscall.SIGKILL)
		_ = started.Wait()
		started = nil
	}
	if dir != "" {
		os.RemoveAll(dir)
		dir = ""
	}
	url = ""
}
