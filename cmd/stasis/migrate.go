package main

import (
	"fmt"
	"net"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/stasis-cr/stasis"
	"github.com/stasis-cr/stasis/internal/migrate"
)

func init() {
	subcommands = append(subcommands, subcommand{"migrate", newMigrateCmd}, subcommand{"migrate-receive", newMigrateReceiveCmd})
}

func newMigrateCmd() *cobra.Command {
	var o stasis.MigrateOptions
	var lf logFlags
	var scripts []string
	cmd := &cobra.Command{
		Use:   "migrate -t PID --to netns:PATH|ssh://HOST|tcp://HOST:PORT",
		Short: "move a running tree to another host or network namespace: pre-copy rounds, a short final freeze, the restore there",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := rejectUnimplemented(cmd); err != nil {
				return err
			}
			if o.Pid == 0 || o.To == "" {
				return errorf("migrate: -t PID and --to TARGET are required")
			}
			wd := o.ImagesDir
			if wd == "" {
				wd = "."
			}
			log, closeLog, err := lf.open(wd)
			if err != nil {
				return err
			}
			defer closeLog()
			o.Log = log
			o.Progress = cmd.OutOrStdout()
			if len(scripts) > 0 {
				as, err := stasis.NewActionScripts(scripts, wd, o.Pid)
				if err != nil {
					return errorf("migrate: %v", err)
				}
				defer as.Close()
				o.Notify = as.Notify
			}
			ctx, release := interruptible()
			defer release()
			st, err := stasis.Migrate(ctx, o)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "migrated pid %d to %s in %v: %d pre-copy rounds, %.1f MiB of images sent (%.1f MiB on the wire)\n",
				st.Pid, o.To, st.Total.Round(time.Millisecond), len(st.Rounds), float64(st.Sent)/(1<<20), float64(st.Wire)/(1<<20))
			ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
			fmt.Fprintf(out, "downtime %s: final dump frozen %s (%d pages), images sent %s (%.1f MiB), lock on the target %s, post-dump scripts %s, kill %s, restore on the target %s, other %s\n",
				ms(st.Downtime), ms(st.Final.Frozen), st.Final.Pages, ms(st.Final.Send), float64(st.Final.Bytes)/(1<<20), ms(st.Lock), ms(st.Hook),
				ms(st.Kill), ms(st.Restore), ms(st.Other))
			if o.LazyPages {
				fmt.Fprintf(out, "post-copy: the memory was all on the target %v after the restore\n", st.PostCopy.Round(time.Millisecond))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVarP(&o.Pid, "tree", "t", 0, "the root of the tree to move")
	f.StringVar(&o.To, "to", "", "the target: netns:PATH, ssh://[USER@]HOST[:PORT] or tcp://HOST:PORT")
	f.StringVarP(&o.ImagesDir, "images-dir", "D", "", "the source's images, a dir per round (default: a temporary dir, removed after)")
	f.StringVar(&o.TargetDir, "target-dir", "", "the target's images dir (migrate-receive -D)")
	f.StringVar(&o.TargetStasis, "target-stasis", "stasis", "the stasis command on an ssh target")
	f.StringVar(&o.TargetLog, "target-log", "", "the target logs (-v4) to FILE in its images dir, its restore to restore.log beside it")
	f.IntVar(&o.MaxRounds, "max-rounds", 8, "most pre-copy rounds")
	f.BoolVarP(&o.ShellJob, "shell-job", "j", false, "the tree was started from a shell (dump and restore)")
	f.BoolVar(&o.LazyPages, "lazy-pages", false, "the target restores at once and fills the memory while the tree runs (post-copy)")
	f.StringVar(&o.PidFile, "pidfile", "", "the target writes the restored root's pid to FILE (a path there)")
	f.StringArrayVar(&scripts, "action-script", nil, "run this script at the final dump's action points (post-dump: move the address)")
	registerSealFlags(f, &o.Seal)
	registerTLSFlags(f, &o.TLS)
	lf.register(f)
	return cmd
}

func newMigrateReceiveCmd() *cobra.Command {
	var lf logFlags
	var dir, keyFile, pidFile, listen string
	var fd int
	var stdio bool
	var tlsOpts stasis.TLSOptions
	cmd := &cobra.Command{
		Use:   "migrate-receive -D DIR (--stdio | --listen ADDR:PORT | --fd N)",
		Short: "the target of stasis migrate: receive the images of a migration and restore them here",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := rejectUnimplemented(cmd); err != nil {
				return err
			}
			if dir == "" {
				return errorf("migrate-receive: -D DIR is required")
			}
			log, closeLog, err := lf.open(dir)
			if err != nil {
				return err
			}
			defer closeLog()
			var c net.Conn
			switch {
			case stdio:
				c = migrate.PipeConn(os.Stdin, os.Stdout)
			case fd > 0:
				if c, err = net.FileConn(os.NewFile(uintptr(fd), "migration")); err != nil {
					return errorf("migrate-receive: --fd %d: %v", fd, err)
				}
			case listen != "":
				l, err := net.Listen("tcp", listen)
				if err != nil {
					return errorf("migrate-receive: %v", err)
				}
				log.Info("migration receiver listening", "address", l.Addr().String())
				c, err = stasis.AcceptTLS(l, tlsOpts)
				l.Close()
				if err != nil {
					return errorf("migrate-receive: %v", err)
				}
			default:
				return errorf("migrate-receive: one of --stdio, --listen, --fd is required")
			}
			defer c.Close()
			return stasis.ReceiveMigration(c, dir, keyFile, pidFile, log)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&dir, "images-dir", "D", "", "where the images go, a dir per round")
	f.BoolVar(&stdio, "stdio", false, "the stream is stdin and stdout (ssh)")
	f.StringVar(&listen, "listen", "", "accept one migration on ADDR:PORT")
	f.IntVar(&fd, "fd", 0, "the stream is this connected socket")
	f.StringVar(&keyFile, "key-file", "", "the key of an encrypted stream")
	f.StringVar(&pidFile, "pidfile", "", "write the restored root's pid to FILE")
	registerTLSFlags(f, &tlsOpts)
	lf.register(f)
	return cmd
}

// migrateGoFdFlag is the hidden restore flag of a migration's target: the
// restore reads its images, then waits for a byte on this fd (the source's
// tree is gone) before it makes the first task; EOF: the migration gave
// up.
const migrateGoFdFlag = "stasis-go-fd"

func migrateGo(fd int) func() error {
	return func() error {
		f := os.NewFile(uintptr(fd), "go")
		defer f.Close()
		var b [1]byte
		if n, _ := f.Read(b[:]); n != 1 {
			return errorf("restore: the migration gave up before the restore could go on")
		}
		return nil
	}
}
