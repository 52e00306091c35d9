package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sluice-ai/sluice/internal/buildinfo"
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print sluice's version, commit and Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bi := buildinfo.Get()
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "sluice %s\ncommit %s\ngo %s\n", bi.Version, bi.Commit, bi.GoVersion)
			return err
		},
	}
}
