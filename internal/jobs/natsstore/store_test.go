package natsstore_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/sluice-ai/sluice/internal/jobs/jobstest"
	"github.com/sluice-ai/sluice/internal/jobs/natsstore"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// connStore is a store on its own connection; closing it drops the
// connection, as a gateway's death would.
type connStore struct {
	*natsstore.Store
	nc   *nats.Conn
	once sync.Once
}

func (c *connStore) Close() error {
	c.once.Do(c.nc.Close)
	return nil
}

var namespaces atomic.Int64

// namespaces opens stores with a fresh name on the server connect reaches.
func newNamespace(connect func() (*nats.Conn, error)) jobstest.NewNamespace {
	return func(t testing.TB) jobstest.Open {
		name := fmt.Sprintf("ns%d", namespaces.Add(1))
		return func(t testing.TB, lease time.Duration) jobstest.Store {
			nc, err := connect()
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s, err := natsstore.Open(ctx, nc, natsstore.Options{Name: name, Lease: lease, Logger: jobstest.TestLogger()})
			if err != nil {
				nc.Close()
				t.Fatal(err)
			}
			cs := &connStore{Store: s, nc: nc}
			t.Cleanup(func() { cs.Close() })
			return cs
		}
	}
}

// TestEmbeddedConformance runs the suite on the embedded server, as
// "store: embedded" runs it.
func TestEmbeddedConformance(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := natsstore.StartEmbedded(ctx, t.TempDir(), jobstest.TestLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	jobstest.Run(t, newNamespace(e.Connect))
}

// TestExternalConformance runs the suite against a NATS server reached
// over TCP, as "store: nats://…" does.
func TestExternalConformance(t *testing.T) {
	url := startServer(t)
	jobstest.Run(t, newNamespace(func() (*nats.Conn, error) { return nats.Connect(url) }))
}

// startServer runs a NATS server with JetStream on a free port of
// 127.0.0.1 and returns its URL.
func startServer(t testing.TB) string {
	srv, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      server.RANDOM_PORT,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoSigs:    true,
		NoLog:     true,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv.ClientURL()
}

func TestOpenEmbeddedReopens(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	for range 2 {
		s, err := natsstore.OpenEmbedded(ctx, dir, natsstore.Options{Logger: jobstest.TestLogger()})
		if err != nil {
			t.Fatal(err)
		}
		if s.Lease() != natsstore.DefaultLease {
			t.Fatalf("lease %s", s.Lease())
		}
		s.Close()
	}
}

func TestEmbeddedLocksItsDirectory(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e, err := natsstore.StartEmbedded(ctx, dir, jobstest.TestLogger())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := natsstore.StartEmbedded(ctx, dir, jobstest.TestLogger()); err == nil {
		t.Fatal("a second server started on a directory in use")
	}
	e.Shutdown()
	e, err = natsstore.StartEmbedded(ctx, dir, jobstest.TestLogger())
	if err != nil {
		t.Fatalf("restart after shutdown: %v", err)
	}
	e.Shutdown()
}

func TestOpenRejectsBadName(t *testing.T) {
	ctx := context.Background()
	e, err := natsstore.StartEmbedded(ctx, t.TempDir(), jobstest.TestLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	nc, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := natsstore.Open(ctx, nc, natsstore.Options{Name: "a.b"}); err == nil {
		t.Fatal("a name with a dot was accepted")
	}
}
