package natsstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	neturl "net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/sluice-ai/sluice/internal/jobs"
)

// Embedded is a NATS server with JetStream running inside this process,
// storing its streams as files in a directory. It opens no network
// listener: stores reach it over in-process connections.
type Embedded struct {
	srv  *server.Server
	lock *os.File
}

// StartEmbedded starts an embedded server storing its data under dir,
// which it locks against other processes. ctx bounds the wait until the
// server accepts connections.
func StartEmbedded(ctx context.Context, dir string, logger *slog.Logger) (*Embedded, error) {
	if logger == nil {
		logger = slog.Default()
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "sluice-embedded",
		DontListen: true,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
		// JetStream's own limits would default to a share of the disk and
		// memory; the job store only uses file storage.
		JetStreamMaxMemory: 64 << 20,
	})
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	srv.SetLoggerV2(serverLogger{logger.With("component", "nats")}, false, false, false)
	srv.Start()
	wait := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		wait = time.Until(dl)
	}
	e := &Embedded{srv: srv, lock: lock}
	if !srv.ReadyForConnections(wait) {
		e.Shutdown()
		return nil, errors.New("embedded nats: not ready for connections in time")
	}
	if !srv.JetStreamEnabled() {
		e.Shutdown()
		return nil, fmt.Errorf("embedded nats: JetStream did not start in %s", dir)
	}
	return e, nil
}

// Connect opens an in-process connection to the server.
func (e *Embedded) Connect() (*nats.Conn, error) {
	nc, err := nats.Connect("", nats.InProcessServer(e.srv), nats.Name("sluice-jobs"))
	if err != nil {
		return nil, fmt.Errorf("connect embedded nats: %w", err)
	}
	return nc, nil
}

// Shutdown stops the server, waits until it stopped and releases the
// directory.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	e.lock.Close()
}

// OpenEmbedded starts an embedded server in dir and opens a store on it;
// closing the store shuts the server down.
func OpenEmbedded(ctx context.Context, dir string, opts Options) (*Store, error) {
	e, err := StartEmbedded(ctx, dir, opts.Logger)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", jobs.ErrStoreUnavailable, err)
	}
	nc, err := e.Connect()
	if err != nil {
		e.Shutdown()
		return nil, fmt.Errorf("%w: %w", jobs.ErrStoreUnavailable, err)
	}
	s, err := open(ctx, nc, opts, func(stream, consumer string) error {
		return e.removeConsumer(dir, stream, consumer)
	})
	if err != nil {
		nc.Close()
		e.Shutdown()
		return nil, err
	}
	s.onClose = append(s.onClose, nc.Close, e.Shutdown)
	return s, nil
}

// removeConsumer deletes the directory of a consumer that the embedded
// server could not load (the server then knows nothing of it, so its API
// cannot delete it, and creating it again would read the same damaged
// files). This is only possible because this process owns the server and
// its directory.
func (e *Embedded) removeConsumer(dir, stream, consumer string) error {
	if !validName.MatchString(stream) || !validName.MatchString(consumer) {
		return fmt.Errorf("remove consumer %s/%s: invalid name", stream, consumer)
	}
	// The embedded server has no accounts configured: every stream is in
	// the global account.
	path := filepath.Join(dir, "jetstream", server.DEFAULT_GLOBAL_ACCOUNT, "streams", stream, "obs", consumer)
	if err := os.RemoveAll(path); err != nil {
		return fmt.Errorf("remove damaged consumer %s/%s: %w", stream, consumer, err)
	}
	return nil
}

// Dial connects to a NATS server or cluster at url (nats://host:4222;
// user:password@ or a token in the URL authenticate) and opens a store on
// it; closing the store closes the connection. The connection reconnects
// without limit.
func Dial(ctx context.Context, url string, opts Options) (*Store, error) {
	nc, err := nats.Connect(url, nats.Name("sluice-jobs"), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("%w: connect %s: %w", jobs.ErrStoreUnavailable, redact(url), err)
	}
	s, err := Open(ctx, nc, opts)
	if err != nil {
		nc.Close()
		return nil, err
	}
	s.onClose = append(s.onClose, nc.Close)
	return s, nil
}

// redact drops credentials from a server URL for messages.
func redact(raw string) string {
	u, err := neturl.Parse(raw)
	if err != nil {
		return "the NATS server"
	}
	u.User = nil
	return u.String()
}

// serverLogger sends the server's notices to slog at debug level and its
// warnings and errors at theirs.
type serverLogger struct{ l *slog.Logger }

func (s serverLogger) Noticef(format string, v ...any) { s.l.Debug(fmt.Sprintf(format, v...)) }
func (s serverLogger) Warnf(format string, v ...any)   { s.l.Warn(fmt.Sprintf(format, v...)) }
func (s serverLogger) Fatalf(format string, v ...any)  { s.l.Error(fmt.Sprintf(format, v...)) }
func (s serverLogger) Errorf(format string, v ...any)  { s.l.Error(fmt.Sprintf(format, v...)) }
func (s serverLogger) Debugf(format string, v ...any)  { s.l.Debug(fmt.Sprintf(format, v...)) }
func (s serverLogger) Tracef(format string, v ...any)  { s.l.Debug(fmt.Sprintf(format, v...)) }
