package main

import (
	"github.com/spf13/cobra"

	"github.com/stasis-cr/stasis"
)

func init() { subcommands = append(subcommands, newDumpCmd) }

func newDumpCmd() *cobra.Command {
	var o stasis.DumpOptions
	var lf logFlags
	cmd := &cobra.Command{
		Use:   "dump -t PID -D DIR",
		Short: "checkpoint a process tree into an images directory",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := rejectUnimplemented(cmd); err != nil {
				return err
			}
			if o.Pid == 0 {
				return errorf("dump: -t/--tree PID is required")
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
			if err := stasis.Dump(o); err != nil {
				if lf.file != "" {
					log.Error("dump failed", "err", err)
				}
				return err
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVarP(&o.Pid, "tree", "t", 0, "checkpoint the process tree rooted at PID")
	f.StringVarP(&o.ImagesDir, "images-dir", "D", "", "directory for the image files")
	f.StringVarP(&o.WorkDir, "work-dir", "W", "", "directory for logs and stats (default: images dir)")
	f.BoolVarP(&o.LeaveRunning, "leave-running", "R", false, "leave the tree running after the dump")
	f.BoolVarP(&o.LeaveStopped, "leave-stopped", "s", false, "leave the tree stopped after the dump")
	f.BoolVarP(&o.ShellJob, "shell-job", "j", false, "the tree was started from a shell: its session leader is outside it")
	lf.register(f)
	addUnimplemented(f, dumpUnimplemented)
	return cmd
}

func workDir(work, images string) string {
	if work != "" {
		return work
	}
	return images
}
