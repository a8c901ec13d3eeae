package stasis

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"github.com/stasis-cr/stasis/internal/dump"
	"github.com/stasis-cr/stasis/internal/kerndat"
	"github.com/stasis-cr/stasis/internal/mem"
	"github.com/stasis-cr/stasis/internal/pagesrv"
	"github.com/stasis-cr/stasis/internal/rpc"
)

// MemDumpOptions are the options of iterative dumps (criu's pre-dump and
// dump --track-mem --prev-images-dir) and of page servers
// (docs/migration.md).
type MemDumpOptions struct {
	TrackMem bool // --track-mem: keep tracking writes for a next iteration
	// PrevImagesDir (--prev-images-dir): the previous iteration's images
	// dir, relative to ImagesDir unless absolute; pages not written since
	// stay there (PE_PARENT), and the dir is linked as "parent".
	PrevImagesDir string
	// PageServer (--page-server): send the pagemaps and pages to the page
	// server at Address:Port, or over the connected socket PsSocket
	// (--ps-socket, an fd number; 0 for none).
	PageServer bool
	Address    string
	Port       int
	PsSocket   int
	// AutoDedup (--auto-dedup): the pages this dump saves are punched out
	// of the parents' pages images (see Dedup).
	AutoDedup bool
	// PreDumpMode (--pre-dump-mode): criu's splice or read; stasis reads
	// the pages either way.
	PreDumpMode string
}

// connect opens the page server connection the options ask for.
func (o MemDumpOptions) connect() (*pagesrv.Client, error) {
	if !o.PageServer {
		return nil, nil
	}
	if o.PsSocket > 0 {
		return pagesrv.FromFile(os.NewFile(uintptr(o.PsSocket), "ps-socket"))
	}
	if o.Port <= 0 {
		return nil, fmt.Errorf("--page-server needs --port")
	}
	addr := o.Address
	if addr == "" {
		addr = "127.0.0.1"
	}
	return pagesrv.Dial(net.JoinHostPort(addr, strconv.Itoa(o.Port)))
}

// memOptions turns o into the dump's, connected to the page server;
// done closes the connection if the dump left it open (a failure).
func (o MemDumpOptions) memOptions() (dump.MemOptions, func(), error) {
	mo := dump.MemOptions{TrackMem: o.TrackMem, PrevImagesDir: o.PrevImagesDir, AutoDedup: o.AutoDedup}
	c, err := o.connect()
	if err != nil {
		return mo, nil, err
	}
	if c == nil {
		return mo, func() {}, nil
	}
	mo.PageServer = c
	return mo, c.Abort, nil
}

// PreDump copies the memory of the tree rooted at opts.Pid into
// opts.ImagesDir (or to a page server) while it runs: the tree is stopped
// only to list its pages and arm the tracking of its writes, and runs on
// while they are copied (criu pre-dump; implies --track-mem). A later
// PreDump or Dump with PrevImagesDir set to this dir saves only the pages
// written since.
func PreDump(opts DumpOptions) error { return PreDumpContext(context.Background(), opts) }

// PreDumpContext is PreDump that stops when ctx is done.
func PreDumpContext(ctx context.Context, opts DumpOptions) error {
	priv, err := privilege("pre-dump", opts.Unprivileged, opts.Log)
	if err != nil {
		return err
	}
	if err := kerndat.Require(dump.Needs...); err != nil {
		return fmt.Errorf("pre-dump: %w", err)
	}
	mo, done, err := opts.Mem.memOptions()
	if err != nil {
		return fmt.Errorf("pre-dump: %w", err)
	}
	defer done()
	err = dump.PreDump(ctx, dump.Options{
		Pid: opts.Pid, ImagesDir: opts.ImagesDir, WorkDir: opts.WorkDir,
		ShellJob: opts.ShellJob, Files: opts.Files, Log: opts.Log, Notify: opts.Notify, Mem: mo,
	})
	if err == nil {
		_, err = sealDir(opts.ImagesDir, opts.Seal, opts.Log)
	}
	return priv.Explain("pre-dump", opts.Pid, err)
}

// MemTracking says how this kernel tracks the pages a process writes
// between the iterations of a chain ("uffd-wp-async", "soft-dirty" or ""),
// and why.
func MemTracking() (method, detail string) {
	m, why := mem.Tracking()
	return string(m), why
}

// PageServerOptions are criu page-server's.
type PageServerOptions struct {
	ImagesDir     string // -D
	PrevImagesDir string // --prev-images-dir: linked as "parent" in ImagesDir
	Log           *slog.Logger
}

// ServePages runs one page server session on the connection c (accepted
// from a listener, or criu's --ps-socket when inherited): the pagemaps
// and pages of a dump go into opts.ImagesDir. On failure nothing of the
// session is left there.
func ServePages(c net.Conn, inherited bool, opts PageServerOptions) error {
	if opts.PrevImagesDir != "" {
		link := opts.ImagesDir + "/" + mem.ParentLink
		if _, err := os.Stat(prevPath(opts.ImagesDir, opts.PrevImagesDir)); err != nil {
			return fmt.Errorf("page server: --prev-images-dir %s: %w", opts.PrevImagesDir, err)
		}
		if err := os.Symlink(opts.PrevImagesDir, link); err != nil && !os.IsExist(err) {
			return fmt.Errorf("page server: link the previous images: %w", err)
		}
	}
	st, err := pagesrv.Serve(c, opts.ImagesDir, inherited, opts.Log)
	if opts.Log != nil {
		opts.Log.Info("page server session over", "pagemaps", st.Pagemaps, "pages", st.Pages, "in parent", st.InParent)
	}
	return err
}

func prevPath(images, prev string) string {
	if len(prev) > 0 && prev[0] == '/' {
		return prev
	}
	return images + "/" + prev
}

func memFromRPC(m rpc.MemRequest) MemDumpOptions {
	return MemDumpOptions{TrackMem: m.TrackMem, PrevImagesDir: m.PrevImagesDir, PageServer: m.PageServer, Address: m.Address, Port: m.Port}
}

// startPageServer starts a page server process for the RPC's PAGE_SERVER
// (stasis page-server on a socket that listens already) and returns its
// pid and port.
func startPageServer(_ context.Context, r rpc.PageServerRequest) (int, int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(r.Address, strconv.Itoa(r.Port)))
	if err != nil {
		return 0, 0, fmt.Errorf("page server: %w", err)
	}
	defer l.Close()
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		return 0, 0, fmt.Errorf("page server: %w", err)
	}
	defer f.Close()
	args := []string{"page-server", "-D", r.ImagesDir, "--stasis-listen-fd=3"}
	if r.PrevImagesDir != "" {
		args = append(args, "--prev-images-dir", r.PrevImagesDir)
	}
	cmd := exec.Command("/proc/self/exe", args...)
	cmd.ExtraFiles = []*os.File{f}
	if r.Daemon {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	}
	if err := cmd.Start(); err != nil {
		return 0, 0, fmt.Errorf("page server: %w", err)
	}
	go cmd.Wait() //nolint:errcheck // reaped if the swrk outlives it
	return cmd.Process.Pid, l.Addr().(*net.TCPAddr).Port, nil
}

// Dedup punches out of the parent images of the chain ending in dir the
// pages that dir holds itself (criu dedup): the parents' pages images keep
// their size, their blocks are freed. It returns the pages punched.
func Dedup(dir string) (uint64, error) {
	st, err := mem.Dedup(dir)
	if err != nil {
		return st.Pages, fmt.Errorf("dedup: %w", err)
	}
	return st.Pages, nil
}
