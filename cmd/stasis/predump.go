package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/stasis-cr/stasis"
)

func init() { subcommands = append(subcommands, subcommand{"pre-dump", newPreDumpCmd}) }

// memFlags are the flags of iterative dumps and page servers, on dump and
// pre-dump.
func registerMemFlags(f *pflag.FlagSet, o *stasis.MemDumpOptions) {
	f.BoolVar(&o.TrackMem, "track-mem", false, "track the pages the tree writes, for a next dump with --prev-images-dir")
	f.StringVar(&o.PrevImagesDir, "prev-images-dir", "", "the previous dump of the chain (relative to -D): only pages written since are saved")
	f.BoolVar(&o.PageServer, "page-server", false, "send pages to the page server at --address:--port")
	f.StringVar(&o.Address, "address", "", "page server address (default 127.0.0.1)")
	f.IntVar(&o.Port, "port", 0, "page server port")
	f.IntVar(&o.PsSocket, "ps-socket", 0, "use this connected socket (fd) to the page server")
	f.BoolVar(&o.AutoDedup, "auto-dedup", false, "punch the pages saved here out of the previous dumps' pages images")
	registerTLSFlags(f, &o.TLS)
	f.StringVar(&o.PreDumpMode, "pre-dump-mode", "", "splice or read: how criu copies pages; stasis always reads them (process_vm_readv), both are taken")
}

// checkMemFlags refuses what the parser could not (criu's values).
func checkMemFlags(o *stasis.MemDumpOptions) error {
	switch o.PreDumpMode {
	case "", "splice", "read":
		return nil
	}
	return fmt.Errorf("--pre-dump-mode %q: splice or read", o.PreDumpMode)
}

func newPreDumpCmd() *cobra.Command {
	var o stasis.DumpOptions
	var lf logFlags
	cmd := &cobra.Command{
		Use:   "pre-dump -t PID -D DIR [--prev-images-dir DIR]",
		Short: "copy a tree's memory while it runs, for a later dump --track-mem --prev-images-dir",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := rejectUnimplemented(cmd); err != nil {
				return err
			}
			if o.Pid == 0 {
				return errorf("pre-dump: -t/--tree PID is required")
			}
			if err := checkMemFlags(&o.Mem); err != nil {
				return errorf("pre-dump: %v", err)
			}
			if o.ImagesDir == "" {
				o.ImagesDir = "."
			}
			log, closeLog, err := lf.open(workDir(o.WorkDir, o.ImagesDir))
			if err != nil {
				return err
			}
			defer closeLog()
			o.Log = log
			ctx, release := interruptible()
			defer release()
			if err := stasis.PreDumpContext(ctx, o); err != nil {
				if lf.file != "" {
					log.Error("pre-dump failed", "err", err)
					err = fmt.Errorf("%w (%s kept)", err, lf.path(workDir(o.WorkDir, o.ImagesDir)))
				}
				return err
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVarP(&o.Pid, "tree", "t", 0, "pre-dump the process tree rooted at PID")
	f.StringVarP(&o.ImagesDir, "images-dir", "D", "", "directory for the image files")
	f.StringVarP(&o.WorkDir, "work-dir", "W", "", "directory for logs and stats (default: images dir)")
	f.BoolVarP(&o.ShellJob, "shell-job", "j", false, "the tree was started from a shell (accepted as criu does)")
	registerMemFlags(f, &o.Mem)
	registerSealFlags(f, &o.Seal)
	lf.register(f)
	addUnimplemented(f, dumpUnimplemented)
	return cmd
}

func init() { subcommands = append(subcommands, subcommand{"dedup", newDedupCmd}) }

func newDedupCmd() *cobra.Command {
	var dir string
	var lf logFlags
	cmd := &cobra.Command{
		Use:   "dedup -D DIR",
		Short: "free the pages of the parent images that DIR holds itself (criu dedup)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				dir = "."
			}
			n, err := stasis.Dedup(dir)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d pages freed in the parent images\n", n)
			return nil
		},
	}
	cmd.Flags().StringVarP(&dir, "images-dir", "D", "", "the images dir of the last dump of the chain")
	lf.register(cmd.Flags())
	return cmd
}
