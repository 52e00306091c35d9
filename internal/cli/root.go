// Package cli is sluice's command line: one cobra command per subcommand,
// each a thin layer that parses flags and calls into a capability package.
package cli

import (
	"context"
	"errors"
	"io"

	"github.com/spf13/cobra"
)

// exitError carries a process exit code other than 1.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// ExitCode is the process exit code for an error returned by Run.
func ExitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

// Message is what main prints for err: "" when the command already told the
// user everything (as config validate does with its list of problems).
func Message(err error) string {
	var se *silentError
	if errors.As(err, &se) {
		return ""
	}
	return err.Error()
}

// Run executes the command line args (without the program name).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "sluice",
		Short: "Run AI model services at scale: gateway, autoscaler, jobs, simulator and load generator",
		Long: `sluice puts AI model services (LLMs, embedding and vision models) into
production: a gateway that load-balances, protects, caches and queues inference
traffic across model replicas, an async job system for long inference, and an
autoscaler that starts and stops replicas.

Start with the quickstart, which runs local simulated replicas:

  sluice serve -c examples/quickstart.yaml
  curl localhost:8080/v1/chat/completions -d '{"model":"sim-llm","messages":[{"role":"user","content":"hi"}]}'`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(
		newServeCmd(),
		newConfigCmd(),
		newSimCmd(),
		newBenchCmd(),
		newVersionCmd(),
	)
	return root
}
