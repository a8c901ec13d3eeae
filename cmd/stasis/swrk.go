package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/stasis-cr/stasis"
)

func init() {
	subcommands = append(subcommands, subcommand{"swrk", newSwrkCmd}, subcommand{"service", newServiceCmd})
}

func newSwrkCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "swrk FD",
		Short: "serve criu's RPC on the SOCK_SEQPACKET socket at fd FD (go-criu, runc)",
		Long: `Serve one request of criu's RPC (rpc.proto) on the SOCK_SEQPACKET socket
inherited at fd FD, as "criu swrk FD" does: how go-criu, runc and libcriu
drive criu. Exits 0 if the request succeeded, 1 if its reply is a failure.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fd, err := strconv.Atoi(args[0])
			if err != nil || fd < 0 {
				return errorf("swrk: %q is not a file descriptor number", args[0])
			}
			ctx, release := interruptible()
			defer release()
			err = stasis.ServeSwrk(ctx, os.NewFile(uintptr(fd), "criu-xprt-srv"))
			var split stasis.RPCSplitExit
			if errors.As(err, &split) {
				// The restorer served the request and said why.
				return exitError{int(split)}
			}
			if errors.Is(err, stasis.ErrRPCBadRequest) {
				fmt.Fprintf(os.Stderr, "Error: %v\n", err)
				return exitError{255}
			}
			if errors.Is(err, stasis.ErrRPCFailed) {
				// The client has the error in the reply.
				fmt.Fprintf(os.Stderr, "Error: %v\n", err)
				return exitError{1}
			}
			return err
		},
	}
}

func newServiceCmd() *cobra.Command {
	var o stasis.ServiceOptions
	var lf logFlags
	var work string
	cmd := &cobra.Command{
		Use:   "service [--address SOCK] [--daemon]",
		Short: "serve criu's RPC on a unix socket, each connection as swrk",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			self, err := os.Executable()
			if err != nil {
				return err
			}
			o.Swrk = []string{self, "swrk", "3"}
			log, closeLog, err := lf.open(work)
			if err != nil {
				return err
			}
			defer closeLog()
			o.Log = log
			if o.Daemon && lf.file != "" {
				// The daemon runs from /: its log by absolute path.
				abs, err := filepath.Abs(lf.path(work))
				if err != nil {
					return err
				}
				o.DaemonArgs = []string{"--log-file", abs, fmt.Sprintf("--verbosity=%d", lf.verbosity)}
			}
			ctx, release := interruptible()
			defer release()
			return stasis.Service(ctx, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Address, "address", "", "unix socket to listen on (default ./criu_service.socket)")
	f.BoolVarP(&o.Daemon, "daemon", "d", false, "detach once the socket listens")
	f.StringVarP(&work, "work-dir", "W", "", "directory of the service's log (-o)")
	lf.register(f)
	f.StringVar(&o.PidFile, "pidfile", "", "write the pid of the serving process (the daemon's with --daemon) into FILE")
	return cmd
}
