// Command simd is the replica the replicas tests supervise: `sluice sim`
// without the rest of sluice, so the tests build a small binary that does
// not depend on the gateway. It takes the flags the tests use, after an
// optional leading "sim" (commands in the tests read "sluice sim ...").
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/sluice-ai/sluice/internal/sim"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "sim" {
		args = args[1:]
	}
	cfg := sim.DefaultConfig()
	f := flag.NewFlagSet("simd", flag.ExitOnError)
	f.StringVar(&cfg.Addr, "addr", cfg.Addr, "listen address")
	f.StringVar(&cfg.ID, "id", "", "instance id (X-Sim-Instance)")
	f.DurationVar(&cfg.ITL, "itl", cfg.ITL, "inter-token latency")
	f.DurationVar(&cfg.TTFT, "ttft", cfg.TTFT, "fixed prefill time")
	f.DurationVar(&cfg.StartupDelay, "startup-delay", 0, "answer 503 this long after start")
	model := f.String("model", "sim-llm", "model served")
	_ = f.Parse(args)
	cfg.Models = []string{*model}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	s, err := sim.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := s.ListenAndServe(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
