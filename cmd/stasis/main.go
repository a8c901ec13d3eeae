// Command stasis checkpoints and restores Linux process trees. Its command
// line mirrors criu's: every subcommand parses flags into an options struct
// and makes one call into the stasis library.
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/stasis-cr/stasis"
)

// exitError carries an exit status out of a subcommand without printing an
// error (restore without -d exits with the status of the restored tree).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// subcommands registers each subcommand; every cmd/stasis/*.go file adds
// its own from init so that files can be added without touching this one.
// subcommands are the builders of the subcommands, by name: a run builds
// only the one it runs (building all of them, with criu's ~150 options
// each, cost every command ~3 ms of its start-up).
var subcommands []subcommand

type subcommand struct {
	name string
	mk   func() *cobra.Command
}

// newRoot builds the root command with the subcommand args name, or with
// all of them when args name none (help, usage, completion, an unknown
// command: whatever lists or suggests commands).
func newRoot(args []string) *cobra.Command {
	name := "stasis"
	if filepath.Base(os.Args[0]) == "criu" {
		name = "criu"
	}
	root := &cobra.Command{
		Use:           name,
		Short:         "checkpoint and restore Linux process trees (criu-compatible)",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.SetVersionTemplate("Version: {{.Version}}\n")
	root.Flags().BoolP("version", "V", false, "print version and exit")
	only := runs(root, args)
	for _, sc := range subcommands {
		if only != "" && sc.name != only {
			continue
		}
		cmd := sc.mk()
		if criuCommands[cmd.Name()] {
			addCRIUOptions(cmd)
		}
		root.AddCommand(cmd)
	}
	return root
}

// runs is the name of the subcommand that root would run with args, ""
// for none: cobra's own search, among placeholders of the same names
// under a root with root's flags (a subcommand's flags play no part in
// finding it).
func runs(root *cobra.Command, args []string) string {
	scratch := &cobra.Command{Use: root.Use}
	scratch.Flags().AddFlagSet(root.Flags())
	for _, sc := range subcommands {
		scratch.AddCommand(&cobra.Command{Use: sc.name, Run: func(*cobra.Command, []string) {}})
	}
	cmd, _, err := scratch.Find(args)
	if err != nil || cmd == scratch || cmd.Parent() != scratch {
		return ""
	}
	return cmd.Name()
}

func main() {
	// The restore's puppet and a restored pid namespace's init are this
	// binary re-executed: they never reach the command line.
	if code, ok := stasis.Reexec(); ok {
		os.Exit(code)
	}
	args, err := withConfig(normalizeArgs(os.Args[1:]))
	if err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		os.Exit(1)
	}
	root := newRoot(args)
	root.SetArgs(args)
	err = root.Execute()
	if err == nil {
		return
	}
	var ee exitError
	if errors.As(err, &ee) {
		os.Exit(ee.code)
	}
	fmt.Fprintf(os.Stderr, "Error: %v\n", err)
	if code, ok := interruptedCode(err); ok {
		os.Exit(code)
	}
	os.Exit(1)
}
