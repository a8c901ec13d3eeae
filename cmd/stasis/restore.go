package main

import (
	"context"
	"os"

	"github.com/spf13/cobra"

	"github.com/stasis-cr/stasis"
)

func init() { subcommands = append(subcommands, subcommand{"restore", newRestoreCmd}) }

func newRestoreCmd() *cobra.Command {
	var o stasis.RestoreOptions
	var lf logFlags
	var detach bool
	var goFd int
	var inherit []string
	var scripts []string
	var cf cgroupFlags
	var nf netFlags
	cmd := &cobra.Command{
		Use:   "restore -D DIR",
		Short: "restore a process tree from an images directory",
		Long: "Restore the tree with its original PIDs. Without -d, stasis waits for the\n" +
			"restored tree and exits with the exit status of its root, as criu does.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := rejectUnimplemented(cmd); err != nil {
				return err
			}
			if o.ImagesDir == "" {
				o.ImagesDir = "."
			}
			if o.Sibling && !detach {
				// criu's words: stasis could not wait for the root.
				return errorf("restore: --restore-sibling only makes sense with --restore-detached")
			}
			if o.Sibling && !stasis.SiblingRestorer() {
				// As criu's own process is: the root's parent is ours
				// and the root its only new child (LXC takes the first).
				code, err := stasis.SplitSibling(os.Args)
				if err != nil {
					return errorf("restore: %v", err)
				}
				if code != 0 {
					return exitError{code}
				}
				return nil
			}
			for _, a := range inherit {
				in, err := stasis.ParseInheritFd(a)
				if err != nil {
					return errorf("restore: %v", err)
				}
				o.Files.InheritFds = append(o.Files.InheritFds, in)
			}
			if err := cf.applyRestore(&o.Cgroups); err != nil {
				return errorf("restore: %v", err)
			}
			if err := nf.applyRestore(&o.Net); err != nil {
				return errorf("restore: %v", err)
			}
			o.Mounts.External = append(o.Mounts.External, nf.mnt...)
			log, closeLog, err := lf.open(workDir(o.WorkDir, o.ImagesDir))
			if err != nil {
				return err
			}
			defer closeLog()
			o.Log = log
			for _, e := range nf.plain {
				log.Info("--external names no object of the images: ignored, as criu does", "external", e)
			}
			if len(scripts) > 0 {
				as, err := stasis.NewActionScripts(scripts, o.ImagesDir, 0)
				if err != nil {
					return errorf("restore: %v", err)
				}
				defer as.Close()
				o.Notify = as.Notify
			}
			if goFd > 0 {
				o.Prepared = migrateGo(goFd)
			}
			ctx, release := interruptible()
			ctx, endProgress := withProgress(ctx, lf.quiet(cmd))
			r, err := stasis.RestoreContext(ctx, o)
			endProgress()
			// The tree runs on its own now: a signal while stasis waits
			// for it does what it did before (criu is no different).
			release()
			if err != nil {
				if lf.file != "" {
					log.Error("restore failed", "err", err)
				}
				return err
			}
			if sig, ok := stasis.InterruptSignal(context.Cause(ctx)); ok {
				// Too late to stop: the tree runs. Exit as the signal
				// would have made stasis exit, leaving it running.
				log.Warn("a signal came once the tree was restored: it runs on", "signal", sig)
				return exitError{128 + int(sig)}
			}
			if detach {
				return nil
			}
			code, err := r.Wait()
			if err != nil {
				return err
			}
			if code != 0 {
				return exitError{code}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.ImagesDir, "images-dir", "D", "", "directory with the image files")
	f.StringVarP(&o.WorkDir, "work-dir", "W", "", "directory for logs and stats (default: images dir)")
	f.StringVar(&o.PidFile, "pidfile", "", "write the pid of the restored root task to FILE")
	f.StringVar(&o.KeyFile, "key-file", "", "the key of images dumped with --encrypt")
	f.BoolVarP(&detach, "restore-detached", "d", false, "detach from the restored tree instead of waiting for it")
	f.BoolVarP(&o.Sibling, "restore-sibling", "S", false, "restore the root as a sibling of stasis (a child of its parent), with -d")
	f.BoolVarP(&o.ShellJob, "shell-job", "j", false, "restore into the session and terminal of stasis restore")
	f.StringArrayVar(&inherit, "inherit-fd", nil, "fd[N]:KEY: stasis' fd N takes the place of the dumped object KEY, e.g. fd[3]:pipe:[1234] (repeatable)")
	f.BoolVarP(&o.Files.FileLocks, "file-locks", "l", false, "restore file locks")
	f.BoolVarP(&o.Files.ExtUnixSk, "ext-unix-sk", "x", false, "connect unix sockets again to their peer outside the tree")
	f.BoolVar(&o.Files.TCPEstablished, "tcp-established", false, "restore established TCP connections (TCP_REPAIR)")
	f.BoolVar(&o.Files.TCPClose, "tcp-close", false, "restore established TCP connections closed")
	f.StringVar(&o.Files.FileValidation, "file-validation", "filesize", "how reopened files are checked to be the dumped ones: filesize or buildid")
	f.BoolVar(&o.LazyPages, "lazy-pages", false, "leave private anonymous memory to the lazy-pages daemon (stasis lazy-pages) listening in the work dir: the tasks run before it has arrived")
	f.BoolVar(&o.PidNS, "pidns", false, "restore into a new pid namespace, where every task gets its original pid (no conflict with the host's)")
	f.StringVar(&o.NetworkLock, "network-lock", "nftables", "lock the connections while they are restored, then remove every lock of the tree: nftables or skip")
	f.BoolVar(&o.Unprivileged, "unprivileged", false, "run without CAP_SYS_ADMIN (with CAP_CHECKPOINT_RESTORE), accepting the limits that brings")
	f.StringArrayVar(&scripts, "action-script", nil, "run SCRIPT at each action point, with CRTOOLS_SCRIPT_ACTION set (repeatable)")
	f.IntVar(&goFd, migrateGoFdFlag, 0, "")
	_ = f.MarkHidden(migrateGoFdFlag)
	cf.registerRestore(f)
	nf.registerRestore(f, &o.Net)
	addMountRestoreFlags(f, &o.Mounts)
	lf.register(f)
	addCPUCapFlag(f, &o.CPUCap)
	addUnimplemented(f, restoreUnimplemented)
	return cmd
}
