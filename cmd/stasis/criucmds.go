package main

import (
	"github.com/spf13/cobra"
)

func init() {
	for _, c := range []struct{ use, short string }{
		{"cpuinfo", "dump or check cpu information (criu 4.2 command; not implemented yet)"},
	} {
		c := c
		subcommands = append(subcommands, func() *cobra.Command { return newRefusedCmd(c.use, c.short) })
	}
}

// newRefusedCmd is a criu command stasis does not have yet: it takes
// criu's options (so that scripts get one clear answer) and refuses the
// command by name, whatever options come with it.
func newRefusedCmd(use, short string) *cobra.Command {
	cmd := &cobra.Command{
		Use:    use,
		Short:  short,
		Hidden: true,
		// cpuinfo takes dump or check.
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return errorf("%s is not implemented yet (criu 4.2 command)", cmd.Name())
		},
	}
	addCRIUOptions(cmd)
	// The command itself is refused, before its options are looked at.
	cmd.Args = cobra.ArbitraryArgs
	return cmd
}
