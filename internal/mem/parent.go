package mem

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
)

// Parent chains. criu's `dump --prev-images-dir ../1 --track-mem` after a
// `pre-dump` into ../1 saves only the pages written since: the others are
// pagemap entries with PE_PARENT (in_parent in old images) and no data, and
// the images dir gets a link named "parent" to the previous dir. That dir
// has the same pagemap image (same task or shmem id) whose entries hold the
// pages, or say PE_PARENT again, one level further. Restore reads the pages
// of such an entry from the first level that has them.
//
// The restore's fill takes one pages file in entry order; for a pagemap
// with entries in parent, ResolveParents plans where each entry's data is
// and ParentPages.Merge copies the pages, the image's own and the
// parents', into one memory file (copy_file_range where the kernel can).

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
		fi, err := os.Stat(l.pages)
		if err != nil {
			return nil, fmt.Errorf("%s: pages of pages id %d: %w", filepath.Join(real, name), head.GetPagesId(), err)
		}
		if fi.Size() < off {
			return nil, &images.Error{File: l.pages, Offset: fi.Size(), Err: fmt.Errorf("%w: %s needs %d bytes of pages", images.ErrTruncated, name, off)}
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

// openPages opens the pages image of img, or with entries in parent a
// memory file with its pages and its parents' (Merge).
func (img *Image) openPages(dir *images.Dir) (*os.File, error) {
	f, err := dir.OpenRaw(fmt.Sprintf("pages-%d.img", img.PagesID))
	if err != nil || img.parents == nil {
		return f, err
	}
	defer f.Close()
	return img.parents.Merge(f)
}

// ParentPages is where the pages of a pagemap with entries in parent are:
// for each entry with data, in order, its own pages or its parents'.
type ParentPages struct {
	name  string // the pagemap image, for messages
	parts []parentPart
}

type parentPart struct {
	own  bool  // in the image's own pages image, at off
	off  int64 // for own
	n    uint64
	srcs []pageSource // for pages in parent
}

// ResolveParents checks the entries of pagemap image name of dir (after
// PagedAreas) for pages that are not in the images dir: those in parent
// must be found in the chain of parent dirs, and lazy ones (no data
// anywhere) are refused. It returns nil if every entry has its data in the
// pages image. Otherwise the entries in parent are marked present
// (PE_PRESENT), since their data will be in the file Merge makes.
func ResolveParents(dir *images.Dir, name string, entries []*pagemap.PagemapEntry) (*ParentPages, error) {
	needed := false
	for i, pe := range entries {
		if HasData(pe) {
			continue
		}
		if !InParent(pe) {
			return nil, fmt.Errorf("%s entry %d: pages %#x-%#x (flags %#x): %w", name, i, pe.GetVaddr(), pe.GetVaddr()+NrPages(pe)*PageSize, pe.GetFlags(), ErrLazyPages)
		}
		needed = true
	}
	if !needed {
		return nil, nil
	}
	chain := &parentChain{dir: dir, name: name}
	p := &ParentPages{name: name}
	var off int64
	for i, pe := range entries {
		n := NrPages(pe) * PageSize
		if HasData(pe) {
			p.parts = append(p.parts, parentPart{own: true, off: off, n: n})
			off += int64(n)
			continue
		}
		srcs, err := chain.sources(pe.GetVaddr(), n)
		if errors.Is(err, ErrNoParent) && chain.first == nil {
			return nil, fmt.Errorf("%s entry %d: pages %#x-%#x are in the parent, but %w", name, i, pe.GetVaddr(), pe.GetVaddr()+n, err)
		}
		if err != nil {
			return nil, fmt.Errorf("%s entry %d in parent: %w", name, i, err)
		}
		p.parts = append(p.parts, parentPart{n: n, srcs: srcs})
	}
	for _, pe := range entries {
		if !HasData(pe) {
			pe.Flags = proto.Uint32(pe.GetFlags()&^peParent | PEPresent)
			pe.InParent = nil
		}
	}
	return p, nil
}

// Merge returns a memory file with the pages of every entry, in entry
// order, own (from the image's pages file) and the parents': the pages
// file the fill reads.
func (p *ParentPages) Merge(own *os.File) (*os.File, error) {
	fd, err := unix.MemfdCreate("stasis-pages", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd for the pages of %s and its parents: %w", p.name, err)
	}
	out := os.NewFile(uintptr(fd), own.Name()+" with its parents' pages")
	files := map[string]*os.File{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	put := func(src *os.File, off int64, n uint64) error {
		if _, err := src.Seek(off, io.SeekStart); err != nil {
			return err
		}
		got, err := out.ReadFrom(&io.LimitedReader{R: src, N: int64(n)})
		if err == nil && got != int64(n) {
			err = fmt.Errorf("%d of %d bytes at offset %d: %w", got, n, off, io.ErrUnexpectedEOF)
		}
		if err != nil {
			return fmt.Errorf("copy pages from %s: %w", src.Name(), err)
		}
		return nil
	}
	for _, part := range p.parts {
		if part.own {
			if err := put(own, part.off, part.n); err != nil {
				out.Close()
				return nil, err
			}
			continue
		}
		for _, s := range part.srcs {
			f := files[s.path]
			if f == nil {
				if f, err = os.Open(s.path); err != nil {
					out.Close()
					return nil, fmt.Errorf("pages of %s in parent: %w", p.name, err)
				}
				files[s.path] = f
			}
			if err := put(f, s.off, s.n); err != nil {
				out.Close()
				return nil, err
			}
		}
	}
	return out, nil
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
		f, err := os.Open(s.path)
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
