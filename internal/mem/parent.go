package mem

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/ptrace"
)

// Parent chains. criu's `dump --prev-images-dir ../1 --track-mem` after a
// `pre-dump` into ../1 saves only the pages written since: the others are
// pagemap entries with PE_PARENT (in_parent in old images) and no data, and
// the images dir gets a link named "parent" to the previous dir. That dir
// has the same pagemap image (same task or shmem id) whose entries hold the
// pages, or say PE_PARENT again, one level further. Restore reads the pages
// of such an entry from the first level that has them.
//
// When the images are read, ResolveParents finds where the pages of each
// entry in parent are (and refuses lazy-only entries); after FillPages has
// written the image's own pages, fillParents writes those from the
// parents' pages images, mapped whole.

// ParentLink is the name of the link criu writes in an images dir to the
// images of the previous dump of the chain.
const ParentLink = "parent"

// maxParentDepth bounds a chain: a longer one is a loop of links.
const maxParentDepth = 64

// InParent reports whether the entry's pages are in the parent images
// (PE_PARENT; in_parent in images older than the flags).
func InParent(pe *pagemap.PagemapEntry) bool {
	if pe.Flags == nil {
		return pe.GetInParent()
	}
	return pe.GetFlags()&peParent != 0
}

// pageSource is where n bytes of pages for vaddr lie: at off of a pages
// image.
type pageSource struct {
	path  string
	off   int64
	n     uint64
	vaddr uint64
}

// parentLevel is the pagemap image name of one images dir of a chain.
type parentLevel struct {
	dir     *images.Dir
	name    string
	entries []*pagemap.PagemapEntry // by address
	offs    []int64                 // where each entry's pages start in pages; -1 if it has none
	pages   string                  // path of its pages image
	depth   int
	parent  *parentLevel // opened on first use
	seen    map[string]bool
}

// openParentLevel opens the parent images dir of dir and reads its
// pagemap image name. seen holds the real paths of the dirs already in
// the chain.
func openParentLevel(dir *images.Dir, name string, depth int, seen map[string]bool) (*parentLevel, error) {
	link := filepath.Join(dir.Path, ParentLink)
	if _, err := os.Lstat(link); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("images dir %s has no %s link: %w", dir.Path, ParentLink, ErrNoParent)
		}
		return nil, fmt.Errorf("parent link %s: %w", link, err)
	}
	real, err := filepath.EvalSymlinks(link)
	if err != nil {
		target, _ := os.Readlink(link)
		return nil, fmt.Errorf("parent link %s -> %s: %w: %w", link, target, ErrNoParent, err)
	}
	if seen[real] || depth > maxParentDepth {
		return nil, fmt.Errorf("parent link %s -> %s: a loop of parent links (or a chain deeper than %d): %w", link, real, maxParentDepth, ErrNoParent)
	}
	seen[real] = true
	pdir, err := images.Open(real)
	if err != nil {
		return nil, fmt.Errorf("parent link %s: %w: %w", link, ErrNoParent, err)
	}
	if !pdir.Has(name) {
		return nil, fmt.Errorf("parent images dir %s has no %s: %w", real, name, ErrNoParent)
	}
	r, err := pdir.NewReader(name)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	head := &pagemap.PagemapHead{}
	if err := r.Must(head); err != nil {
		return nil, err
	}
	l := &parentLevel{dir: pdir, name: name, depth: depth, seen: seen,
		pages: filepath.Join(real, fmt.Sprintf("pages-%d.img", head.GetPagesId()))}
	var off int64
	var end uint64
	for {
		at := r.Offset()
		pe := &pagemap.PagemapEntry{}
		if err := r.Next(pe); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, err
		}
		n := NrPages(pe)
		if pe.GetVaddr()%PageSize != 0 || n == 0 || n > (^uint64(0)-pe.GetVaddr())/PageSize || pe.GetVaddr() < end {
			return nil, &images.Error{File: filepath.Join(real, name), Offset: at,
				Err: fmt.Errorf("%w: entry %d: pages %#x + %d out of order or out of range", images.ErrCorrupt, len(l.entries), pe.GetVaddr(), n)}
		}
		end = pe.GetVaddr() + n*PageSize
		l.entries = append(l.entries, pe)
		if HasData(pe) {
			l.offs = append(l.offs, off)
			off += int64(n * PageSize)
		} else {
			l.offs = append(l.offs, -1)
		}
	}
	if off > 0 {
		size, err := images.Size(l.pages)
		if err != nil {
			return nil, fmt.Errorf("%s: pages of pages id %d: %w", filepath.Join(real, name), head.GetPagesId(), err)
		}
		if size < off {
			return nil, &images.Error{File: l.pages, Offset: size, Err: fmt.Errorf("%w: %s needs %d bytes of pages", images.ErrTruncated, name, off)}
		}
	}
	return l, nil
}

// sources finds the pages [vaddr, vaddr+n) in this level, or in its
// parents for those it has in parent.
func (l *parentLevel) sources(vaddr, n uint64) ([]pageSource, error) {
	var out []pageSource
	end := vaddr + n
	k := sort.Search(len(l.entries), func(k int) bool {
		pe := l.entries[k]
		return pe.GetVaddr()+NrPages(pe)*PageSize > vaddr
	})
	for at := vaddr; at < end; k++ {
		if k == len(l.entries) || l.entries[k].GetVaddr() > at {
			hi := end
			if k < len(l.entries) {
				hi = min(end, l.entries[k].GetVaddr())
			}
			return nil, fmt.Errorf("pages %#x-%#x are not in %s of parent images dir %s: %w", at, hi, l.name, l.dir.Path, ErrNoParent)
		}
		pe := l.entries[k]
		hi := min(end, pe.GetVaddr()+NrPages(pe)*PageSize)
		switch {
		case HasData(pe):
			out = append(out, pageSource{path: l.pages, off: l.offs[k] + int64(at-pe.GetVaddr()), n: hi - at, vaddr: at})
		case InParent(pe):
			if l.parent == nil {
				p, err := openParentLevel(l.dir, l.name, l.depth+1, l.seen)
				if err != nil {
					return nil, fmt.Errorf("%s of %s: pages %#x-%#x in parent: %w", l.name, l.dir.Path, at, hi, err)
				}
				l.parent = p
			}
			more, err := l.parent.sources(at, hi-at)
			if err != nil {
				return nil, err
			}
			out = append(out, more...)
		default:
			return nil, fmt.Errorf("%s of %s: pages %#x-%#x (flags %#x): %w", l.name, l.dir.Path, at, hi, pe.GetFlags(), ErrLazyPages)
		}
		at = hi
	}
	return out, nil
}

// parentChain finds pages in the parents of one pagemap image.
type parentChain struct {
	dir   *images.Dir
	name  string
	first *parentLevel
}

func (c *parentChain) sources(vaddr, n uint64) ([]pageSource, error) {
	if c.first == nil {
		l, err := openParentLevel(c.dir, c.name, 1, map[string]bool{})
		if err != nil {
			return nil, err
		}
		c.first = l
	}
	return c.first.sources(vaddr, n)
}

// ParentPages is where the pages of a pagemap's entries in parent are,
// in the pages images of the parent dirs.
type ParentPages struct {
	name string // the pagemap image, for messages
	srcs []pageSource
}

// ResolveParents checks the entries of pagemap image name of dir (after
// PagedAreas) for pages that are not in the images dir: those in parent
// must be found in the chain of parent dirs; lazy ones (no data
// anywhere, PE_LAZY) are left to CheckLazy, others without data refused. It returns nil if every entry has its data in the
// pages image.
func ResolveParents(dir *images.Dir, name string, entries []*pagemap.PagemapEntry) (*ParentPages, error) {
	var p *ParentPages
	var chain *parentChain
	for i, pe := range entries {
		if HasData(pe) {
			continue
		}
		n := NrPages(pe) * PageSize
		if LazyOnly(pe) {
			continue // with a lazy dump's page server: CheckLazy
		}
		if !InParent(pe) {
			return nil, fmt.Errorf("%s entry %d: pages %#x-%#x (flags %#x): %w", name, i, pe.GetVaddr(), pe.GetVaddr()+n, pe.GetFlags(), ErrLazyPages)
		}
		if p == nil {
			p, chain = &ParentPages{name: name}, &parentChain{dir: dir, name: name}
		}
		srcs, err := chain.sources(pe.GetVaddr(), n)
		if errors.Is(err, ErrNoParent) && chain.first == nil {
			return nil, fmt.Errorf("%s entry %d: pages %#x-%#x are in the parent, but %w", name, i, pe.GetVaddr(), pe.GetVaddr()+n, err)
		}
		if err != nil {
			return nil, fmt.Errorf("%s entry %d in parent: %w", name, i, err)
		}
		p.srcs = append(p.srcs, srcs...)
	}
	return p, nil
}

// fillParents writes the pages of img's entries in parent into pid, as
// FillPages does the image's own, from the parents' pages images mapped
// whole (no copy), and adds their figures to st. With lazy, those of lazy
// areas are left to the lazy-pages daemon (lazyparent.go).
func (img *Image) fillParents(pid int, st FillStats, vmas []*vma.VmaEntry, kept map[uint64]bool, stop func() error, lazy bool) (FillStats, error) {
	if img.parents == nil {
		return st, nil
	}
	inLazy := func(uint64) bool { return false }
	if lazy {
		inLazy = areaLookup(vmas, LazyVMA)
	}
	maps := map[string][]byte{}
	defer func() {
		for _, m := range maps {
			unix.Munmap(m)
		}
	}()
	ios := make([]ptrace.VMIO, 0, len(img.parents.srcs))
	for _, s := range img.parents.srcs {
		if inLazy(s.vaddr) {
			continue
		}
		m, ok := maps[s.path]
		if !ok {
			f, err := images.OpenFile(s.path)
			if err != nil {
				return st, fmt.Errorf("pages of %s in parent: %w", img.parents.name, err)
			}
			fi, err := f.Stat()
			if err == nil {
				m, err = unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_PRIVATE)
			}
			f.Close()
			if err != nil {
				return st, fmt.Errorf("map %s: %w", s.path, err)
			}
			maps[s.path] = m
		}
		if s.off < 0 || uint64(s.off)+s.n > uint64(len(m)) {
			// Checked when the chain was read; the file shrank since.
			return st, fmt.Errorf("%s: %d bytes at offset %d: %w", s.path, s.n, s.off, ErrTruncatedPages)
		}
		ios = append(ios, ptrace.VMIO{Remote: s.vaddr, Local: m[s.off : uint64(s.off)+s.n]})
	}
	pst, err := fillIOs(pid, ios, vmas, kept, stop)
	if err != nil {
		return st, fmt.Errorf("pages of %s in parent: %w", img.parents.name, err)
	}
	st.Compared += pst.Compared
	st.SkippedCOW += pst.SkippedCOW
	st.Restored += pst.Restored
	return st, nil
}

// fillFromParents writes the pages [vaddr, vaddr+n) of the chain's
// pagemap image, which are in parent, from the parents' pages images to w
// at vaddr (the offset in a shmem object), up to limit bytes of w.
func fillFromParents(chain *parentChain, vaddr, n uint64, w io.WriterAt, limit int64, buf []byte) error {
	srcs, err := chain.sources(vaddr, n)
	if err != nil {
		return fmt.Errorf("%s: pages %#x-%#x in parent: %w", chain.name, vaddr, vaddr+n, err)
	}
	for _, s := range srcs {
		f, err := images.OpenFile(s.path)
		if err != nil {
			return err
		}
		for done := uint64(0); done < s.n; {
			c := min(s.n-done, uint64(len(buf)))
			if _, err := f.ReadAt(buf[:c], s.off+int64(done)); err != nil {
				f.Close()
				return fmt.Errorf("%s at offset %d: %w", s.path, s.off+int64(done), err)
			}
			at := int64(s.vaddr + done)
			if k := min(int64(c), limit-at); k > 0 {
				if _, err := w.WriteAt(buf[:k], at); err != nil {
					f.Close()
					return err
				}
			}
			done += c
		}
		f.Close()
	}
	return nil
}
