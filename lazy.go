package stasis

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/lazy"
	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/pagesrv"
)

// Lazy pages (post-copy, criu's --lazy-pages): see docs/migration.md.

// lazyListener is the page server socket of a lazy dump (dump
// --lazy-pages [--address A] --port P), made before the tree is touched
// so that a busy port fails the dump at once.
func (o DumpOptions) lazyListener() (net.Listener, error) {
	if !o.LazyPages {
		return nil, nil
	}
	if o.Mem.PageServer || o.Mem.PsSocket > 0 {
		return nil, fmt.Errorf("--lazy-pages with --page-server: the dump serves the lazy pages itself on --address:--port, its other pages stay in -D: %w", linux.ErrNotSupported)
	}
	if o.Mem.TrackMem || o.Mem.PrevImagesDir != "" {
		return nil, fmt.Errorf("--lazy-pages with --track-mem or --prev-images-dir: %w", linux.ErrNotSupported)
	}
	if o.Mem.Port <= 0 {
		return nil, fmt.Errorf("--lazy-pages needs --port: the dump serves the lazy pages there")
	}
	l, err := net.Listen("tcp", net.JoinHostPort(o.Mem.Address, strconv.Itoa(o.Mem.Port)))
	if err != nil {
		return nil, fmt.Errorf("--lazy-pages: %w", err)
	}
	return l, nil
}

// LazyPagesOptions are the options of `lazy-pages` (criu lazy-pages).
type LazyPagesOptions struct {
	ImagesDir string // -D: the images of the lazy restore
	WorkDir   string // -W: where lazy-pages.socket is made (default ImagesDir)
	// PageServer (--page-server --address A --port P): ask the lazy dump's
	// page server at A:P for the pages; otherwise they are read from
	// ImagesDir (a dump without --lazy-pages).
	PageServer bool
	Address    string
	Port       int
	Log        *slog.Logger
	// Ready is called once the socket listens (criu's --status-fd).
	Ready func() error
}

// LazyPagesStats are the figures of a lazy-pages daemon's run.
type LazyPagesStats = lazy.Stats

// LazyPages runs the lazy-pages daemon of one lazy restore (restore
// --lazy-pages with the same work dir): it returns once every page of the
// restored tasks has been copied. On failure the pages it could not serve
// are poisoned (a task touching one dies of SIGBUS) and the error says
// how many.
func LazyPages(ctx context.Context, opts LazyPagesOptions) (LazyPagesStats, error) {
	lo := lazy.Options{ImagesDir: opts.ImagesDir, WorkDir: opts.WorkDir, Log: opts.Log, Ready: opts.Ready}
	if opts.PageServer {
		if opts.Port <= 0 {
			return lazy.Stats{}, fmt.Errorf("lazy-pages: --page-server needs --port")
		}
		addr := opts.Address
		if addr == "" {
			addr = "127.0.0.1"
		}
		lo.PageServer = net.JoinHostPort(addr, strconv.Itoa(opts.Port))
	}
	return lazy.Run(ctx, lo)
}

// ServeLazyImages serves, on c, the page requests of a lazy-pages daemon
// from the pages saved in an images dir (criu page-server --lazy-pages).
func ServeLazyImages(c net.Conn, imagesDir string, log *slog.Logger) error {
	dir, err := images.Open(imagesDir)
	if err != nil {
		return fmt.Errorf("page server: %w", err)
	}
	src, closeSrc := lazy.NewImagesLazySource(dir)
	defer closeSrc()
	_, err = pagesrv.ServeLazy(c, src, log)
	return err
}

// lazyMem: in a lazy dump's RPC request, ps is where the dump serves its
// lazy pages (criu's page server of a lazy dump listens there), not a
// page server to send pages to.
func lazyMem(m MemDumpOptions, lazy bool) MemDumpOptions {
	if lazy {
		m.PageServer = false
	}
	return m
}
