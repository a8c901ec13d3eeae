package main

import (
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/stasis-cr/stasis"
)

func init() { subcommands = append(subcommands, subcommand{"lazy-pages", newLazyPagesCmd}) }

// lazyReadyFdFlag is the hidden flag a daemonized lazy-pages is
// re-executed with: the pipe to say it listens.
const lazyReadyFdFlag = "stasis-ready-fd"

func newLazyPagesCmd() *cobra.Command {
	var o stasis.LazyPagesOptions
	var lf logFlags
	var pidfile string
	var statusFd, readyFd int
	var daemon bool
	cmd := &cobra.Command{
		Use:   "lazy-pages -D DIR [--page-server --address ADDR --port PORT]",
		Short: "serve the pages of a lazy restore (restore --lazy-pages) as its tasks touch them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := rejectUnimplemented(cmd); err != nil {
				return err
			}
			if o.ImagesDir == "" {
				o.ImagesDir = "."
			}
			if daemon {
				return startLazyDaemon(pidfile)
			}
			log, closeLog, err := lf.open(workDir(o.WorkDir, o.ImagesDir))
			if err != nil {
				return err
			}
			defer closeLog()
			o.Log = log
			o.Ready = func() error {
				for _, fd := range []int{statusFd, readyFd} {
					if fd > 0 {
						// criu's --status-fd: one byte once the socket listens.
						f := os.NewFile(uintptr(fd), "status-fd")
						_, _ = f.Write([]byte{0})
						f.Close()
					}
				}
				if pidfile != "" && readyFd == 0 {
					if err := os.WriteFile(pidfile, []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
						return errorf("lazy-pages: --pidfile: %v", err)
					}
				}
				return nil
			}
			ctx, release := interruptible()
			defer release()
			st, err := stasis.LazyPages(ctx, o)
			if err != nil {
				return err
			}
			log.Info("lazy-pages done", "pages", st.Pages, "faults", st.Faults, "background", st.Background)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.ImagesDir, "images-dir", "D", "", "the images of the lazy restore")
	f.StringVarP(&o.WorkDir, "work-dir", "W", "", "where lazy-pages.socket and the log go (default: images dir)")
	f.BoolVar(&o.PageServer, "page-server", false, "ask the page server of the lazy dump at --address:--port for the pages")
	f.StringVar(&o.Address, "address", "", "page server address (default 127.0.0.1)")
	f.IntVar(&o.Port, "port", 0, "page server port")
	f.BoolVarP(&daemon, "daemon", "d", false, "run in the background once the socket listens")
	f.StringVar(&pidfile, "pidfile", "", "write the daemon's pid to FILE")
	f.IntVar(&statusFd, "status-fd", 0, "write a byte to this fd once the socket listens")
	f.IntVar(&readyFd, lazyReadyFdFlag, 0, "")
	_ = f.MarkHidden(lazyReadyFdFlag)
	lf.register(f)
	addUnimplemented(f, []string{"tls", "tls-cacert", "tls-cacrl", "tls-cert", "tls-key", "tls-no-cn-verify"})
	return cmd
}

// startLazyDaemon runs lazy-pages in the background (re-executed: Go
// cannot fork) and returns once its socket listens, as criu's --daemon.
func startLazyDaemon(pidfile string) error {
	r, w, err := os.Pipe()
	if err != nil {
		return errorf("lazy-pages: %v", err)
	}
	defer r.Close()
	c, err := reexecDaemon("lazy-pages", lazyReadyFdFlag, w)
	w.Close()
	if err != nil {
		return err
	}
	if n, _ := r.Read(make([]byte, 1)); n != 1 {
		_ = c.Wait()
		return errorf("lazy-pages: the daemon ended before it listened (see its log)")
	}
	if err := writeDaemonPid("lazy-pages", pidfile, c); err != nil {
		return err
	}
	return c.Process.Release()
}
