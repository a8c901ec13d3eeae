package main

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/stasis-cr/stasis"
)

func init() { subcommands = append(subcommands, subcommand{"page-server", newPageServerCmd}) }

// listenFdFlag is the hidden flag a daemonized page server is re-executed
// with: its listening socket, made by the command that was started.
const listenFdFlag = "stasis-listen-fd"

func newPageServerCmd() *cobra.Command {
	var o stasis.PageServerOptions
	var lf logFlags
	var address, pidfile string
	var port, psSocket, listenFd, statusFd int
	var daemon, lazyPages bool
	var tlsOpts stasis.TLSOptions
	cmd := &cobra.Command{
		Use:   "page-server -D DIR --port PORT [--address ADDR] [--daemon]",
		Short: "receive the pages of a dump or pre-dump (--page-server) into an images dir",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := rejectUnimplemented(cmd); err != nil {
				return err
			}
			if o.ImagesDir == "" {
				o.ImagesDir = "."
			}
			log, closeLog, err := lf.open(o.ImagesDir)
			if err != nil {
				return err
			}
			defer closeLog()
			o.Log = log
			if psSocket > 0 {
				c, err := net.FileConn(os.NewFile(uintptr(psSocket), "ps-socket"))
				if err != nil {
					return errorf("page-server: --ps-socket %d: %v", psSocket, err)
				}
				return stasis.ServePages(c, true, o)
			}
			var l net.Listener
			if listenFd > 0 {
				l, err = net.FileListener(os.NewFile(uintptr(listenFd), "listener"))
			} else {
				if port == 0 && !cmd.Flags().Changed("port") {
					return errorf("page-server: --port is required")
				}
				l, err = net.Listen("tcp", net.JoinHostPort(address, strconv.Itoa(port)))
			}
			if err != nil {
				return errorf("page-server: %v", err)
			}
			defer l.Close()
			log.Info("page server listening", "address", l.Addr().String())
			if daemon {
				return startDaemon(l, pidfile)
			}
			if statusFd > 0 {
				// criu's --status-fd: one byte once the socket listens.
				sf := os.NewFile(uintptr(statusFd), "status-fd")
				_, _ = sf.Write([]byte{0})
				sf.Close()
			}
			if pidfile != "" {
				if err := os.WriteFile(pidfile, []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
					return errorf("page-server: --pidfile: %v", err)
				}
			}
			c, err := stasis.AcceptTLS(l, tlsOpts)
			if err != nil {
				return errorf("page-server: %v", err)
			}
			l.Close()
			if lazyPages {
				return stasis.ServeLazyImages(c, o.ImagesDir, log)
			}
			return stasis.ServePages(c, false, o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.ImagesDir, "images-dir", "D", "", "directory for the image files")
	f.StringVar(&o.PrevImagesDir, "prev-images-dir", "", "the previous images of the chain, linked as \"parent\" (relative to -D)")
	f.StringVar(&address, "address", "", "address to listen on (default: all)")
	f.IntVar(&port, "port", 0, "port to listen on")
	f.BoolVarP(&daemon, "daemon", "d", false, "run in the background once listening")
	f.StringVar(&pidfile, "pidfile", "", "write the page server's pid to FILE")
	f.IntVar(&psSocket, "ps-socket", 0, "serve the already connected socket fd instead of listening")
	f.IntVar(&statusFd, "status-fd", 0, "write a byte to this fd once listening")
	f.BoolVar(&lazyPages, "lazy-pages", false, "serve the pages saved in -D to a lazy restore's lazy-pages daemon instead of receiving a dump")
	f.StringVar(&o.KeyFile, "key-file", "", "the key of a stream a stasis dump sealed with --encrypt")
	registerTLSFlags(f, &tlsOpts)
	f.IntVar(&listenFd, listenFdFlag, 0, "")
	_ = f.MarkHidden(listenFdFlag)
	lf.register(f)
	return cmd
}

// startDaemon runs the page server in the background on l (re-executed
// with the socket: Go cannot fork), writes its pid and returns, as
// criu's --daemon once its socket listens.
func startDaemon(l net.Listener, pidfile string) error {
	lf, err := l.(*net.TCPListener).File()
	if err != nil {
		return errorf("page-server: %v", err)
	}
	defer lf.Close()
	c, err := reexecDaemon("page-server", listenFdFlag, lf)
	if err != nil {
		return err
	}
	return writeDaemonPid("page-server", pidfile, c)
}

// reexecDaemon starts this command again without --daemon, in a session
// of its own, with f as fd 3 named by the hidden flag fdFlag.
func reexecDaemon(name, fdFlag string, f *os.File) (*exec.Cmd, error) {
	var args []string
	for _, a := range os.Args[1:] {
		if a == "--daemon" || a == "-d" {
			continue
		}
		args = append(args, a)
	}
	args = append(args, "--"+fdFlag+"=3")
	c := exec.Command("/proc/self/exe", args...)
	c.Args[0] = os.Args[0]
	c.ExtraFiles = []*os.File{f}
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.Start(); err != nil {
		return nil, errorf("%s: --daemon: %v", name, err)
	}
	return c, nil
}

// writeDaemonPid writes the pid of the daemon c to pidfile, if one is
// asked for; the daemon is killed if it cannot be.
func writeDaemonPid(name, pidfile string, c *exec.Cmd) error {
	if pidfile == "" {
		return nil
	}
	if err := os.WriteFile(pidfile, []byte(strconv.Itoa(c.Process.Pid)), 0o600); err != nil {
		_ = c.Process.Kill()
		return errorf("%s: --pidfile: %v", name, err)
	}
	return nil
}
