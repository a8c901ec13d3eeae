package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
)

func init() { subcommands = append(subcommands, subcommand{"install-as-criu", newInstallCmd}) }

// newInstallCmd links stasis as `criu` in a directory of $PATH: runc (1.4
// has no --criu), podman, containerd and go-criu exec "criu" from $PATH,
// and stasis invoked as criu behaves as criu.
func newInstallCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "install-as-criu [DIR]",
		Short: "link this binary as DIR/criu (default /usr/local/sbin), for runc, podman, containerd, go-criu",
		Long: `Make DIR/criu (default /usr/local/sbin/criu) a symbolic link to this
stasis binary, so that container runtimes that run "criu" from $PATH run
stasis, which then behaves as criu (argv[0] criu). An existing DIR/criu
that is not already such a link is left alone unless --force.
Undo it with: rm DIR/criu`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := "/usr/local/sbin"
			if len(args) == 1 {
				dir = args[0]
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			if self, err = filepath.EvalSymlinks(self); err != nil {
				return err
			}
			link := filepath.Join(dir, "criu")
			if cur, err := os.Readlink(link); err == nil && cur == self {
				fmt.Fprintf(cmd.OutOrStdout(), "%s -> %s (already)\n", link, self)
				return nil
			}
			if _, err := os.Lstat(link); err == nil {
				if !force {
					return errorf("install-as-criu: %s exists (a criu of its own?): remove it or use --force", link)
				}
				if err := os.Remove(link); err != nil {
					return errorf("install-as-criu: %v", err)
				}
			} else if !errors.Is(err, fs.ErrNotExist) {
				return errorf("install-as-criu: %v", err)
			}
			if err := os.Symlink(self, link); err != nil {
				return errorf("install-as-criu: %v", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s -> %s\n", link, self)
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "replace an existing DIR/criu")
	return cmd
}
