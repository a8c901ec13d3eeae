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
var subcommands []func() *cobra.Command

func newRoot() *cobra.Command {
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
	for _, mk := range subcommands {
		cmd := mk()
		if criuCommands[cmd.Name()] {
			addCRIUOptions(cmd)
		}
		root.AddCommand(cmd)
	}
	return root
}

func main() {
	// The restore's puppet and a restored pid namespace's init are this
	// binary re-executed: they never reach the command line.
	if code, ok := stasis.Reexec(); ok {
		os.Exit(code)
	}
	root := newRoot()
	args, err := withConfig(normalizeArgs(os.Args[1:]))
	if err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		os.Exit(1)
	}
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
