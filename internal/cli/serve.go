package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/sluice-ai/sluice/internal/buildinfo"
	"github.com/sluice-ai/sluice/internal/config"
	"github.com/sluice-ai/sluice/internal/gateway"
)

func newServeCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "serve [-c FILE]",
		Short: "Run the gateway with everything the config enables",
		Long: `Run the sluice gateway: the data plane on 'listen' (default :8080) and the
admin server on 'admin.listen' (default 127.0.0.1:8081) with /metrics, /healthz,
/readyz, /api/pools and a web UI.

Signals:
  SIGHUP           reload the config (also: POST /api/reload, or just save the file).
                   An invalid config is rejected and the running one stays.
  SIGTERM, SIGINT  stop accepting, let requests and streams in flight finish
                   (up to limits.drain_timeout), then exit 0.

Check a config without running it: sluice config validate -c FILE`,
		Example: `  sluice serve -c examples/quickstart.yaml
  SLUICE_KEY=secret sluice serve -c /etc/sluice/sluice.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServe(cmd.Context(), path, cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "./sluice.yaml", "config file (YAML)")
	return cmd
}

func runServe(ctx context.Context, path string, stderr io.Writer) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	logger, err := newLogger(cfg.Log, stderr)
	if err != nil {
		return err
	}
	bi := buildinfo.Get()
	logger.Info("starting sluice", "version", bi.Version, "config", path)
	srv, err := gateway.New(cfg, gateway.Options{Logger: logger, Version: bi.Version})
	if err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				logger.Info("SIGHUP: reloading config", "path", path)
				_ = srv.Reload() // logged and counted by Reload
			}
		}
	}()
	if err := srv.Run(ctx); err != nil {
		return err
	}
	logger.Info("stopped")
	return nil
}

// newLogger builds the process's one logger from the log config.
func newLogger(lc config.Log, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(lc.Level)); err != nil {
		return nil, fmt.Errorf("log.level %q: want debug, info, warn or error", lc.Level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(lc.Format) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log.format %q: want text or json", lc.Format)
	}
}
