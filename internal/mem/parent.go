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
	"google.golang.org/protobuf/encoding/protowire"

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
	entries []levelEntry // by address
	pages   string       // path of its pages image
	depth   int
	parent  *parentLevel // opened on first use
	seen    map[string]bool
}

// levelEntry is a pagemap entry of a parent level as sources needs it: a
// level of a migration's chain has tens of thousands (the pages written
// during one round, scattered), kept without a message each.
type levelEntry struct {
	vaddr, end uint64
	off        int64 // where its pages start in the pages image; -1 if it has none
	inParent   bool
	flags      uint32
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
	if size, err := images.Size(filepath.Join(real, name)); err == nil {
		l.entries = make([]levelEntry, 0, size/16) // an entry takes 12-24 bytes
	}
	var off int64
	var end uint64
	for {
		b, at, err := r.NextRaw()
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, err
		}
		e, n, hasData, err := decodeLevelEntry(b)
		if err != nil {
			return nil, &images.Error{File: filepath.Join(real, name), Offset: at,
				Err: fmt.Errorf("%w entry: pagemap_entry %d: %w", images.ErrCorrupt, len(l.entries), err)}
		}
		if e.vaddr%PageSize != 0 || n == 0 || n > (^uint64(0)-e.vaddr)/PageSize || e.vaddr < end {
			return nil, &images.Error{File: filepath.Join(real, name), Offset: at,
				Err: fmt.Errorf("%w: entry %d: pages %#x + %d out of order or out of range", images.ErrCorrupt, len(l.entries), e.vaddr, n)}
		}
		end = e.vaddr + n*PageSize
		e.end = end
		if hasData {
			e.off = off
			off += int64(n * PageSize)
		}
		l.entries = append(l.entries, e)
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

// sources appends to out where the pages [vaddr, vaddr+n) are in this
// level, or in its parents for those it has in parent; with out nil, it
// only checks that the chain has them all.
func (l *parentLevel) sources(vaddr, n uint64, out *[]pageSource) error {
	end := vaddr + n
	k := sort.Search(len(l.entries), func(k int) bool { return l.entries[k].end > vaddr })
	for at := vaddr; at < end; k++ {
		if k == len(l.entries) || l.entries[k].vaddr > at {
			hi := end
			if k < len(l.entries) {
				hi = min(end, l.entries[k].vaddr)
			}
			return fmt.Errorf("pages %#x-%#x are not in %s of parent images dir %s: %w", at, hi, l.name, l.dir.Path, ErrNoParent)
		}
		e := &l.entries[k]
		hi := min(end, e.end)
		switch {
		case e.off >= 0:
			if out != nil {
				*out = append(*out, pageSource{path: l.pages, off: e.off + int64(at-e.vaddr), n: hi - at, vaddr: at})
			}
		case e.inParent:
			if l.parent == nil {
				p, err := openParentLevel(l.dir, l.name, l.depth+1, l.seen)
				if err != nil {
					return fmt.Errorf("%s of %s: pages %#x-%#x in parent: %w", l.name, l.dir.Path, at, hi, err)
				}
				l.parent = p
			}
			if err := l.parent.sources(at, hi-at, out); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s of %s: pages %#x-%#x (flags %#x): %w", l.name, l.dir.Path, at, hi, e.flags, ErrLazyPages)
		}
		at = hi
	}
	return nil
}

// parentChain finds pages in the parents of one pagemap image.
type parentChain struct {
	dir   *images.Dir
	name  string
	first *parentLevel
}

func (c *parentChain) sources(vaddr, n uint64, out *[]pageSource) error {
	if c.first == nil {
		l, err := openParentLevel(c.dir, c.name, 1, map[string]bool{})
		if err != nil {
			return err
		}
		c.first = l
	}
	return c.first.sources(vaddr, n, out)
}

// ParentPages is a pagemap's entries in parent, found in the chain of
// parent dirs when the images were read. Where their pages lie in the
// parents' pages images is looked up again when they are written: a lazy
// restore leaves most of them to the daemon, and a migration's chain
// holds tens of thousands of pieces.
type ParentPages struct {
	name   string // the pagemap image, for messages
	chain  *parentChain
	ranges [][2]uint64 // address and length in bytes of each entry in parent
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
			chain = &parentChain{dir: dir, name: name}
			p = &ParentPages{name: name, chain: chain}
		}
		err := chain.sources(pe.GetVaddr(), n, nil)
		if errors.Is(err, ErrNoParent) && chain.first == nil {
			return nil, fmt.Errorf("%s entry %d: pages %#x-%#x are in the parent, but %w", name, i, pe.GetVaddr(), pe.GetVaddr()+n, err)
		}
		if err != nil {
			return nil, fmt.Errorf("%s entry %d in parent: %w", name, i, err)
		}
		p.ranges = append(p.ranges, [2]uint64{pe.GetVaddr(), n})
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
	var lazyAreas [][2]uint64
	if lazy {
		for _, e := range vmas {
			if LazyVMA(e) {
				lazyAreas = append(lazyAreas, [2]uint64{e.GetStart(), e.GetEnd()})
			}
		}
	}
	inLazy := func(a, end uint64) bool {
		for _, r := range lazyAreas {
			if a >= r[0] && end <= r[1] {
				return true
			}
		}
		return false
	}
	maps := map[string][]byte{}
	defer func() {
		for _, m := range maps {
			unix.Munmap(m)
		}
	}()
	var ios []ptrace.VMIO
	var srcs []pageSource
	for _, r := range img.parents.ranges {
		if inLazy(r[0], r[0]+r[1]) {
			continue // the daemon's
		}
		srcs = srcs[:0]
		if err := img.parents.chain.sources(r[0], r[1], &srcs); err != nil {
			return st, fmt.Errorf("pages of %s in parent: %w", img.parents.name, err)
		}
		for _, s := range srcs {
			if inLazy(s.vaddr, s.vaddr+1) {
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
	var srcs []pageSource
	if err := chain.sources(vaddr, n, &srcs); err != nil {
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

// decodeLevelEntry decodes a pagemap_entry (pagemap.proto: vaddr 1,
// compat_nr_pages 2, in_parent 3, flags 4, nr_pages 5, all varints) as
// proto.Unmarshal would, without a message and its fields' allocations:
// the levels of a chain hold tens of thousands of entries each.
func decodeLevelEntry(b []byte) (e levelEntry, nrPages uint64, hasData bool, err error) {
	var vaddr, compat, nr uint64
	var flags uint32
	var haveVaddr, haveCompat, haveNr, haveFlags, inParent bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return e, 0, false, protowire.ParseError(n)
		}
		b = b[n:]
		if num < 1 || num > 5 || typ != protowire.VarintType {
			// Unknown, or a known field of another wire type, which
			// proto.Unmarshal keeps as unknown too.
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return e, 0, false, protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return e, 0, false, protowire.ParseError(n)
		}
		b = b[n:]
		switch num {
		case 1:
			vaddr, haveVaddr = v, true
		case 2:
			compat, haveCompat = uint64(uint32(v)), true
		case 3:
			inParent = protowire.DecodeBool(v)
		case 4:
			flags, haveFlags = uint32(v), true
		case 5:
			nr, haveNr = v, true
		}
	}
	if !haveVaddr || !haveCompat {
		return e, 0, false, errors.New("required field vaddr or compat_nr_pages not set")
	}
	if !haveNr {
		nr = compat
	}
	e = levelEntry{vaddr: vaddr, off: -1, flags: flags}
	if haveFlags {
		e.inParent, hasData = flags&peParent != 0, flags&PEPresent != 0
	} else {
		e.inParent, hasData = inParent, !inParent
	}
	return e, nr, hasData, nil
}
