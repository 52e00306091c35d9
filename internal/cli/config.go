package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sluice-ai/sluice/internal/config"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Work with configuration files",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newConfigValidateCmd())
	return cmd
}

func newConfigValidateCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "validate [-c FILE]",
		Short: "Check a config file and report every problem with its line and column",
		Long: `Validate loads a config file exactly as "sluice serve" and a reload would,
without starting anything, and prints "ok" when it is valid. Otherwise it prints
every problem, one per line, as FILE:LINE:COL: message, and exits with status 1.

It checks:
  - YAML syntax, unknown keys (with a suggestion for a misspelt one), repeated
    keys, and values of the wrong type, durations (250ms, 1m) and sizes (32MiB);
  - ${VAR} references: an unset variable is an error unless written
    ${VAR:-default};
  - pools: names, models (no model in two pools), balancer and hash_on,
    exactly one of backends, process or kubernetes, backend URLs, fallbacks
    that exist and form no cycle, retry conditions, thresholds, timeouts,
    and autoscale limits;
  - routes, auth keys and JWT settings, cache, jobs store, listen addresses,
    log settings and URLs.

It reads ${VAR} from the environment it runs in, so run it where sluice runs.
Files named in the config (TLS certificates, JWKS files) are not opened.`,
		Example: `  sluice config validate -c sluice.yaml

  # Before a reload, in a deploy script:
  sluice config validate -c /etc/sluice/sluice.yaml && kill -HUP "$(pidof sluice)"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := config.Load(file)
			if err == nil {
				fmt.Fprintln(cmd.OutOrStdout(), "ok")
				return nil
			}
			var problems config.Errors
			if !errors.As(err, &problems) {
				return err
			}
			for _, p := range problems {
				fmt.Fprintln(cmd.ErrOrStderr(), p)
			}
			return &silentError{fmt.Errorf("%s is not valid: %s", file, plural(len(problems), "problem"))}
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "./sluice.yaml", "config `FILE` to check")
	return cmd
}

// silentError is an error whose details a command has already printed; its
// message only sums them up.
type silentError struct{ err error }

func (e *silentError) Error() string { return e.err.Error() }
func (e *silentError) Unwrap() error { return e.err }

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
