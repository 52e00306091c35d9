package cli

import (
	"errors"

	"github.com/spf13/cobra"
)

func newConfigCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "config",
		Short: "not built yet",
		RunE:  func(*cobra.Command, []string) error { return errors.New("not built yet") },
	}
}
