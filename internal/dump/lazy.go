package dump

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"time"

	"github.com/stasis-cr/stasis/internal/interrupt"
	"github.com/stasis-cr/stasis/internal/mem"
	"github.com/stasis-cr/stasis/internal/pagesrv"
	"github.com/stasis-cr/stasis/internal/progress"
	"github.com/stasis-cr/stasis/internal/ptrace"
)

// A lazy dump (dump --lazy-pages, criu's cr_lazy_mem_dump): the pages of
// private anonymous memory are not saved (PE_LAZY entries without data);
// once the images are complete the dump, the tree still frozen, becomes a
// page server on Options.LazyPages and serves them (PS_IOV_GET) to the
// lazy-pages daemon of the restore, read from the frozen tasks, until the
// daemon closes the session; only then is the tree killed (or let go).
// criu keeps these pages in pipes, which needs fs.pipe-max-size raised
// to 4 MiB; reading them from the frozen tasks needs nothing. If the
// daemon goes away first, the dump fails and the tree runs on.

// lazyTree is what a lazy dump serves: the lazy runs of each process, by
// its pid in the images.
type lazyTree struct {
	procs map[int]*lazyProc
	pages uint64
}

type lazyProc struct {
	pid  int       // host pid
	runs []mem.Run // sorted
}

// dumpLazyPages is dumpPages for a lazy dump.
func (d *dumper) dumpLazyPages(p *process) error {
	if d.it != nil {
		return fmt.Errorf("dump --lazy-pages with --track-mem, --prev-images-dir or --page-server: %w", ErrNotSupported)
	}
	if d.lazy == nil {
		d.lazy = &lazyTree{procs: map[int]*lazyProc{}}
	}
	if d.stats.MemStart.IsZero() {
		d.stats.MemStart = time.Now()
	}
	p.pagesID = d.ids.next("pages")
	st, sum, runs, err := mem.WriteLazyPages(d.dir, p.pid, d.ns.ImagePid(p.pid), p.pagesID, p.areas, func() error {
		interrupt.At(d.ctx, "dump-page-copy")
		return interrupt.Check(d.ctx, fmt.Sprintf("dump phase pages (pid %d)", p.pid))
	}, progress.From(d.ctx))
	if sum != nil {
		d.sums[pagesName(p.pagesID)] = sum
	}
	if err != nil {
		return err
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].Addr < runs[j].Addr })
	d.lazy.procs[d.ns.ImagePid(p.pid)] = &lazyProc{pid: p.pid, runs: runs}
	d.lazy.pages += st.PagesLazy
	d.stats.MemEnd = time.Now()
	d.stats.PagesScanned += st.PagesScanned
	d.stats.PagesWritten += st.PagesWritten
	d.stats.PagesLazy += st.PagesLazy
	return nil
}

// ReadPages reads lazy pages out of a frozen process.
func (t *lazyTree) ReadPages(pid int, vaddr uint64, buf []byte) (int, error) {
	p := t.procs[pid]
	if p == nil {
		return 0, nil
	}
	k := sort.Search(len(p.runs), func(k int) bool { return p.runs[k].Addr+p.runs[k].Pages*mem.PageSize > vaddr })
	if k == len(p.runs) || p.runs[k].Addr > vaddr {
		return 0, nil
	}
	r := p.runs[k]
	n := min(uint64(len(buf))/mem.PageSize, (r.Addr+r.Pages*mem.PageSize-vaddr)/mem.PageSize)
	// Not pinned: a page still shared copy-on-write with another process
	// would be copied by a pin (see WritePages).
	if err := ptrace.ReadMemNoPin(p.pid, vaddr, buf[:n*mem.PageSize]); err != nil {
		return 0, fmt.Errorf("read pid %d: %w", p.pid, err)
	}
	return int(n), nil
}

// serveLazy serves the lazy pages to one lazy-pages daemon, the tree
// frozen, until it has them all (it closes the session).
func (d *dumper) serveLazy() error {
	l := d.opts.LazyPages
	if l == nil {
		return nil
	}
	if d.lazy == nil {
		d.lazy = &lazyTree{procs: map[int]*lazyProc{}}
	}
	d.log.Info("lazy dump: serving the lazy pages", "address", l.Addr().String(), "pages", d.lazy.pages)
	var c net.Conn
	var err error
	stop := context.AfterFunc(d.ctx, func() {
		l.Close()
		if c != nil {
			c.Close()
		}
	})
	defer stop()
	c, err = l.Accept()
	l.Close()
	if err != nil {
		if d.ctx.Err() != nil {
			return interrupt.Check(d.ctx, "dump --lazy-pages, waiting for the lazy-pages daemon")
		}
		return fmt.Errorf("dump --lazy-pages: accept on %s: %w", l.Addr(), err)
	}
	defer c.Close()
	st, err := pagesrv.ServeLazy(c, d.lazy, d.log)
	if err != nil {
		if d.ctx.Err() != nil {
			return errors.Join(interrupt.Check(d.ctx, "dump --lazy-pages, serving pages"), err)
		}
		return fmt.Errorf("dump --lazy-pages: %w", err)
	}
	d.log.Info("lazy dump: every request served", "requests", st.Requests, "pages", st.Pages, "of", d.lazy.pages, "took", st.Last.Sub(st.First))
	return nil
}
