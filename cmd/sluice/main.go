// Command sluice runs the sluice gateway, its simulator and its load generator.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sluice-ai/sluice/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if msg := cli.Message(err); msg != "" {
			fmt.Fprintln(os.Stderr, "sluice:", msg)
		}
		os.Exit(cli.ExitCode(err))
	}
}
