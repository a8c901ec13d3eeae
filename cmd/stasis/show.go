package main

import (
	"github.com/spf13/cobra"

	"github.com/stasis-cr/stasis"
)

func init() { subcommands = append(subcommands, subcommand{"show", newShowCmd}) }

func newShowCmd() *cobra.Command {
	var o stasis.ShowOptions
	cmd := &cobra.Command{
		Use:   "show FILE",
		Short: "decode an image file to JSON (like crit decode)",
		Long: `Decode any criu image file to JSON on stdout, as crit show does:
{"magic": "CORE", "entries": [...]}, field names as in the .proto files,
and the fields criu marks shown its way (addresses in hex, flags by name,
devices as MAJOR:MINOR, IP addresses, socket families and states).
Extra data (pipe contents, socket queues, ghost files) is base64 in "extra".
Raw images (pages-N.img) are summarized: magic "PAGES", size, pages.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return stasis.Show(cmd.OutOrStdout(), args[0], o)
		},
	}
	cmd.Flags().BoolVar(&o.Pretty, "pretty", true, "indent the JSON (--pretty=false for one line)")
	cmd.Flags().BoolVar(&o.NoPayload, "nopl", false, "show the size of extra data instead of its contents")
	return cmd
}
