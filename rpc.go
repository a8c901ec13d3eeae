package stasis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/stasis-cr/stasis/internal/kerndat"
	"github.com/stasis-cr/stasis/internal/rpc"
)

// ErrRPCFailed is wrapped by ServeSwrk's error when the request it served
// got a failure reply: `criu swrk` then exits 1, as criu does.
var ErrRPCFailed = rpc.ErrFailed

// ErrRPCBadRequest is wrapped by ServeSwrk's error when the request
// itself was refused (malformed, unknown type, keep_open where criu does
// not keep the connection): `criu swrk` then exits 255, as criu does.
var ErrRPCBadRequest = rpc.ErrBadRequest

// RPCSplitExit is ServeSwrk's error when the server split for a RESTORE
// with rst_sibling (see SplitSibling) and the restorer ended before
// taking it: `criu swrk` exits with that status, the restorer's.
type RPCSplitExit = rpc.SplitExit

// ServeSwrk serves criu's swrk RPC (go-criu, runc, libcriu) on conn, a
// SOCK_SEQPACKET socket inherited from the client: one request (more
// with keep_open on VERSION and FEATURE_CHECK), its notifications and
// its reply, through Dump and Restore. ctx stops a running dump or
// restore as it stops DumpContext and RestoreContext.
func ServeSwrk(ctx context.Context, conn *os.File) error {
	return rpc.Serve(ctx, conn, backend)
}

// ServiceOptions are `criu service`'s.
type ServiceOptions struct {
	Address string // socket path; "criu_service.socket" if ""
	Daemon  bool   // go on in a detached process once bound, and return
	// Swrk is the command line that serves one connection found at fd 3,
	// e.g. [/usr/bin/stasis, swrk, 3].
	Swrk  []string
	Ready func(address string) // called once the socket listens
	// PidFile (--pidfile), if set, gets the pid of the process that
	// serves (the daemon's with Daemon) once the socket listens.
	PidFile string
	// Log takes the service's messages; DaemonArgs are options the
	// daemon is started with again (its log: -o ABS -vN).
	Log        *slog.Logger
	DaemonArgs []string
}

// Service serves criu's RPC on a unix socket, each connection in a swrk
// process of its own, until ctx is done.
func Service(ctx context.Context, o ServiceOptions) error {
	return rpc.Service(ctx, rpc.ServiceOptions{Address: o.Address, Daemon: o.Daemon, Swrk: o.Swrk, Ready: o.Ready, PidFile: o.PidFile, Log: o.Log, DaemonArgs: o.DaemonArgs})
}

var backend = rpc.Backend{
	Dump: func(ctx context.Context, r rpc.DumpRequest) error {
		return DumpContext(ctx, DumpOptions{
			Pid: r.Pid, ImagesDir: r.ImagesDir, WorkDir: r.WorkDir,
			LeaveRunning: r.LeaveRunning, LeaveStopped: r.LeaveStopped,
			ShellJob: r.ShellJob, NetworkLock: r.NetworkLock, Unprivileged: r.Unprivileged,
			Files: r.Files, Log: r.Log, Notify: r.Notify, Mem: lazyMem(memFromRPC(r.Mem), r.LazyPages),
			Cgroups: r.Cgroups, Net: r.Net, Mounts: r.Mounts, CPUCap: r.CPUCap, LazyPages: r.LazyPages,
		})
	},
	PreDump: func(ctx context.Context, r rpc.DumpRequest) error {
		return PreDumpContext(ctx, DumpOptions{
			Pid: r.Pid, ImagesDir: r.ImagesDir, WorkDir: r.WorkDir, Unprivileged: r.Unprivileged,
			Log: r.Log, Mem: memFromRPC(r.Mem),
		})
	},
	PageServer: startPageServer,
	Restore: func(ctx context.Context, r rpc.RestoreRequest) (int, error) {
		res, err := RestoreContext(ctx, RestoreOptions{
			ImagesDir: r.ImagesDir, WorkDir: r.WorkDir, ShellJob: r.ShellJob, Sibling: r.Sibling,
			NetworkLock: r.NetworkLock, Unprivileged: r.Unprivileged,
			Files: r.Files, Log: r.Log, Notify: r.Notify, Cgroups: r.Cgroups, Net: r.Net,
			Mounts: r.Mounts, CPUCap: r.CPUCap, LazyPages: r.LazyPages,
		})
		if err != nil {
			return 0, err
		}
		return res.Pid, nil
	},
	DisplayStats: DisplayStats,
	Check: func() error {
		var missing []error
		for _, f := range Check() {
			if f.Required && !f.OK {
				missing = append(missing, fmt.Errorf("%s: %s", f.Name, f.Detail))
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("check: %w: %w", kerndat.ErrNotSupported, errors.Join(missing...))
		}
		return nil
	},
}
