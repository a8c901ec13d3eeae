package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/stasis-cr/stasis"
)

func init() { subcommands = append(subcommands, subcommand{"dump", newDumpCmd}) }

func newDumpCmd() *cobra.Command {
	var o stasis.DumpOptions
	var lf logFlags
	var rf refusalFlags
	var scripts []string
	var cf cgroupFlags
	var nf netFlags
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
			if err := checkMemFlags(&o.Mem); err != nil {
				return errorf("dump: %v", err)
			}
			if o.ImagesDir == "" {
				o.ImagesDir = "."
			}
			if err := nf.empty(&o.Net); err != nil {
				return errorf("dump: %v", err)
			}
			if err := rf.apply(&o); err != nil {
				return errorf("dump: %v", err)
			}
			if err := cf.applyDump(&o.Cgroups); err != nil {
				return errorf("dump: %v", err)
			}
			log, closeLog, err := lf.open(workDir(o.WorkDir, o.ImagesDir))
			if err != nil {
				return err
			}
			defer closeLog()
			o.Log = log
			if len(scripts) > 0 {
				as, err := stasis.NewActionScripts(scripts, o.ImagesDir, o.Pid)
				if err != nil {
					return errorf("dump: %v", err)
				}
				defer as.Close()
				o.Notify = as.Notify
			}
			ctx, release := interruptible()
			defer release()
			ctx, endProgress := withProgress(ctx, lf.quiet(cmd))
			err = stasis.DumpContext(ctx, o)
			endProgress()
			if err != nil {
				if lf.file != "" {
					log.Error("dump failed", "err", err)
					err = fmt.Errorf("%w (%s kept)", err, lf.path(workDir(o.WorkDir, o.ImagesDir)))
				}
				return err
			}
			if ctx.Err() != nil {
				log.Warn("a signal came once the images were complete: the dump was completed", "cause", context.Cause(ctx))
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
	rf.register(f, &o)
	cf.registerDump(f, &o.Cgroups)
	f.StringVar(&o.NetworkLock, "network-lock", "nftables", "lock the tree's TCP connections until they are restored: nftables or skip")
	f.StringArrayVar(&scripts, "action-script", nil, "run SCRIPT at each action point, with CRTOOLS_SCRIPT_ACTION set (repeatable)")
	nf.registerDump(f)
	addMountDumpFlags(f, &o.Mounts)
	lf.register(f)
	registerMemFlags(f, &o.Mem)
	addCPUCapFlag(f, &o.CPUCap)
	f.BoolVar(&o.LazyPages, "lazy-pages", false, "do not save private anonymous memory: serve it on --address:--port to a lazy restore's lazy-pages daemon, the tree frozen until it has it all")
	registerSealFlags(f, &o.Seal)
	addUnimplemented(f, dumpUnimplemented)
	return cmd
}

// refusalFlags are the dump's flags that change what it refuses; `check
// --pid` takes them too, to tell what a dump with them would refuse.
type refusalFlags struct {
	ghostLimit string
}

func (r *refusalFlags) register(f *pflag.FlagSet, o *stasis.DumpOptions) {
	f.BoolVarP(&o.ShellJob, "shell-job", "j", false, "the tree was started from a shell: its session leader is outside it")
	f.StringVar(&r.ghostLimit, "ghost-limit", "", "largest unlinked open file copied into the images (size, K/M/G suffixes; default 64M)")
	f.BoolVar(&o.Files.LinkRemap, "link-remap", false, "link unlinked open files under a new name instead of copying them")
	f.BoolVar(&o.Files.EvasiveDevices, "evasive-devices", false, "accept a device opened by a path that now names another node of the same device")
	f.BoolVarP(&o.Files.FileLocks, "file-locks", "l", false, "dump file locks (flock, POSIX and OFD locks)")
	f.BoolVarP(&o.Files.ExtUnixSk, "ext-unix-sk", "x", false, "allow unix sockets connected to a peer outside the tree")
	f.BoolVar(&o.Files.TCPEstablished, "tcp-established", false, "checkpoint established TCP connections (TCP_REPAIR)")
	f.BoolVar(&o.Files.SkipInFlight, "skip-in-flight", false, "skip TCP connections not yet accepted")
	f.BoolVar(&o.Files.TCPClose, "tcp-close", false, "do not checkpoint established TCP connections: the restore brings them back closed")
	f.StringArrayVar(&o.Files.External, "external", nil, "an object outside the tree the dump accepts, e.g. pipe:[INO] (repeatable)")
	f.BoolVar(&o.Unprivileged, "unprivileged", false, "run without CAP_SYS_ADMIN (with CAP_CHECKPOINT_RESTORE), accepting the limits that brings")
}

// refusalFlagNames are the long names register gives that make sense
// only with a pid (--unprivileged also goes with the kernel probes).
var refusalFlagNames = []string{"shell-job", "ghost-limit", "link-remap", "evasive-devices", "file-locks", "ext-unix-sk", "tcp-established", "skip-in-flight", "tcp-close", "external"}

// apply puts what register could not parse itself into o.
func (r *refusalFlags) apply(o *stasis.DumpOptions) error {
	if r.ghostLimit != "" {
		n, err := parseSize(r.ghostLimit)
		if err != nil {
			return fmt.Errorf("--ghost-limit: %w", err)
		}
		o.Files.GhostLimit = n
	}
	return nil
}

func workDir(work, images string) string {
	if work != "" {
		return work
	}
	return images
}
