package mem

import (
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/checksum"
	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/progress"
)

// Lazy pages (criu's --lazy-pages): the pages of private anonymous memory
// may arrive after the task runs, through a userfaultfd served by a
// lazy-pages daemon (package lazy). The dump marks them PE_LAZY (as criu
// does in every dump, so that any dump can be restored lazily); a lazy
// dump keeps them out of the images (PE_LAZY alone) and serves them from
// the frozen tree; a lazy restore leaves them missing.

// PELazy is pagemap_entry.flags PE_LAZY.
const PELazy = peLazy

// LazyVMA reports whether the pages of a VMA may be restored lazily
// (criu's vma_entry_can_be_lazy): private anonymous memory, neither
// locked (mlock populates it before the daemon serves it) nor of huge
// pages, nor the kernel's areas, nor an AIO ring (filled, then moved).
func LazyVMA(e *vma.VmaEntry) bool {
	f := e.GetFlags()
	return f&unix.MAP_ANONYMOUS != 0 && f&unix.MAP_PRIVATE != 0 && f&(unix.MAP_LOCKED|unix.MAP_HUGETLB) == 0 &&
		e.GetStatus()&(AreaVDSO|AreaVVAR|AreaVsyscall|AreaAIORing) == 0
}

// IsLazy reports whether the entry's pages may be restored lazily.
func IsLazy(pe *pagemap.PagemapEntry) bool { return pe.GetFlags()&peLazy != 0 }

// LazyOnly reports whether the entry's pages are nowhere in the images:
// a lazy dump left them to its page server.
func LazyOnly(pe *pagemap.PagemapEntry) bool {
	return IsLazy(pe) && !HasData(pe) && !InParent(pe)
}

// LazyAreas returns the ranges of img's VMAs that a lazy restore
// registers with the task's userfaultfd.
func (img *Image) LazyAreas() [][2]uint64 {
	var out [][2]uint64
	for _, e := range img.MM.GetVmas() {
		if LazyVMA(e) {
			out = append(out, [2]uint64{e.GetStart(), e.GetEnd()})
		}
	}
	return out
}

// CheckLazy refuses, for a restore that is not lazy, pages that only a
// lazy dump's page server has.
func (img *Image) CheckLazy(pid uint32, lazy bool) error {
	if lazy {
		return nil
	}
	for _, pe := range img.Pagemap {
		if LazyOnly(pe) {
			return fmt.Errorf("pagemap-%d.img: pages %#x-%#x are lazy (dump --lazy-pages): restore with --lazy-pages beside a lazy-pages daemon: %w",
				pid, pe.GetVaddr(), pe.GetVaddr()+NrPages(pe)*PageSize, ErrLazyPages)
		}
	}
	return nil
}

// lazyFlags is the flags of a dump's pagemap entry for pages of area a:
// PE_LAZY where a lazy restore may leave them missing, PE_PRESENT unless
// a lazy dump keeps them for its page server.
func lazyFlags(a *Area, lazyDump bool) uint32 {
	if !LazyVMA(a.E) {
		return PEPresent
	}
	if lazyDump {
		return peLazy
	}
	return PEPresent | peLazy
}

// WriteLazyPages is WritePages for a lazy dump: the pages of the areas a
// lazy restore may leave missing are not saved but listed (PE_LAZY
// entries), for the dump's page server to read from the frozen task.
func WriteLazyPages(dir *images.Dir, pid, imgPid, pagesID int, areas []*Area, stop func() error, meter *progress.Meter) (DumpStats, *checksum.Sum, []Run, error) {
	lazy := []Run{}
	st, sum, err := writePages(dir, pid, imgPid, pagesID, areas, stop, meter, &lazy)
	return st, sum, lazy, err
}
