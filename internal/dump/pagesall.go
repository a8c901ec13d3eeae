package dump

import (
	"fmt"
	"sync"
	"time"

	"github.com/stasis-cr/stasis/internal/interrupt"
	"github.com/stasis-cr/stasis/internal/mem"
	"github.com/stasis-cr/stasis/internal/progress"
)

// pageProcs is how many processes' pages are copied at once.
//
// The pages of one process are copied in 1 MiB windows by two workers
// (mem.WritePages), but around the copy each process has work of its own
// that runs one step after the other: the page list from its pagemap,
// the pages and pagemap images created, renamed and closed. Most
// processes of a tree have a few MiB or less, one or two windows: that
// serial part is most of their time. Two processes at once keep both
// CPUs busy; the pages of different processes go to different files,
// whose page-cache copies do not wait for each other's inode lock.
const pageProcs = 2

// dumpAllPages is the pages phase: every process's pages, pageProcs
// processes at a time (a dump into an images dir), or one after the
// other (dumpPages: a lazy dump, an iteration, a page server). The
// safe point of each process comes before its copy starts; after a
// failure no other copy starts, those under way end, and the first
// error is returned.
func (d *dumper) dumpAllPages() error {
	if d.opts.LazyPages != nil || d.it != nil {
		for _, p := range d.all {
			if p.zombie || p.refused {
				continue
			}
			if err := d.stop("pages", p.pid); err != nil {
				return err
			}
			d.log.Debug("dump phase", "phase", "pages", "pid", p.pid)
			if err := d.dumpPages(p); err != nil {
				return err
			}
		}
		return nil
	}
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	failed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return first != nil
	}
	slots := make(chan struct{}, pageProcs)
	for _, p := range d.all {
		if p.zombie || p.refused {
			continue
		}
		if err := d.stop("pages", p.pid); err != nil {
			mu.Lock()
			first = err
			mu.Unlock()
			break
		}
		slots <- struct{}{}
		if failed() {
			<-slots
			break
		}
		d.log.Debug("dump phase", "phase", "pages", "pid", p.pid)
		if d.stats.MemStart.IsZero() {
			d.stats.MemStart = time.Now()
		}
		// Numbered in the tree's order, as one after the other.
		p.pagesID = d.ids.next("pages")
		pid, imgPid, id := p.pid, d.ns.ImagePid(p.pid), p.pagesID
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			st, sum, err := mem.WritePages(d.dir, pid, imgPid, id, p.areas, func() error {
				interrupt.At(d.ctx, "dump-page-copy")
				return interrupt.Check(d.ctx, fmt.Sprintf("dump phase pages (pid %d)", pid))
			}, progress.From(d.ctx))
			mu.Lock()
			defer mu.Unlock()
			if sum != nil {
				d.sums[pagesName(id)] = sum
			}
			if err != nil {
				if first == nil {
					first = err
				}
				return
			}
			d.stats.MemEnd = time.Now()
			d.stats.PagesScanned += st.PagesScanned
			d.stats.PagesWritten += st.PagesWritten
		}()
	}
	wg.Wait()
	return first
}
