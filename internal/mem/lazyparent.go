package mem

import (
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"

	"github.com/stasis-cr/stasis/internal/images"
)

// Lazy restore of a chain (stasis migrate --lazy-pages restores the final
// dump of its pre-copy rounds lazily): the pages in parent of a lazy area
// are left missing too, and the lazy-pages daemon reads them from the
// parents' pages images (ParentReader), so that the restore does not wait
// for the whole memory of the chain.
//
// Only when no page of a lazy area is filled before the task runs: a
// page filled into an area whose other pages are still missing could
// bring a transparent huge page over them (a MADV_HUGEPAGE area), which
// the daemon could no longer fill. That holds when every page with data
// in a lazy area is PE_LAZY (dumps and pre-dumps mark them so); older
// chains are filled from their parents before the tasks run, as criu.

// LazyParents reports whether a lazy restore leaves the pages in parent of
// the lazy areas of vmas to the daemon.
func LazyParents(entries []*pagemap.PagemapEntry, vmas []*vma.VmaEntry) bool {
	inLazy := areaLookup(vmas, LazyVMA)
	parents := false
	for _, pe := range entries {
		if !inLazy(pe.GetVaddr()) {
			continue
		}
		if HasData(pe) && !IsLazy(pe) {
			return false
		}
		parents = parents || InParent(pe)
	}
	return parents
}

// ParentReader reads pages in parent of one pagemap image of an images
// dir from the chain of its parents.
type ParentReader struct {
	chain *parentChain
	files map[string]*os.File
	srcs  []pageSource // of the last read, kept for the next
}

// NewParentReader reads the pages in parent of the pagemap image name of
// dir.
func NewParentReader(dir *images.Dir, name string) *ParentReader {
	return &ParentReader{chain: &parentChain{dir: dir, name: name}, files: map[string]*os.File{}}
}

// ReadAt fills buf (whole pages) with the pages at vaddr, which the
// pagemap has in parent.
func (p *ParentReader) ReadAt(buf []byte, vaddr uint64) error {
	p.srcs = p.srcs[:0]
	if err := p.chain.sources(vaddr, uint64(len(buf)), &p.srcs); err != nil {
		return fmt.Errorf("%s: pages %#x-%#x in parent: %w", p.chain.name, vaddr, vaddr+uint64(len(buf)), err)
	}
	for _, s := range p.srcs {
		f := p.files[s.path]
		if f == nil {
			var err error
			if f, err = images.OpenFile(s.path); err != nil {
				return err
			}
			p.files[s.path] = f
		}
		at := s.vaddr - vaddr
		if _, err := f.ReadAt(buf[at:at+s.n], s.off); err != nil {
			return fmt.Errorf("%s at offset %d: %w", s.path, s.off, err)
		}
	}
	return nil
}

// Close closes the parents' pages images.
func (p *ParentReader) Close() {
	for _, f := range p.files {
		f.Close()
	}
}
