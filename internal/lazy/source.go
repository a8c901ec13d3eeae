package lazy

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/mem"
	"github.com/stasis-cr/stasis/internal/pagesrv"
)

// Where the daemon gets the pages: a page server (the lazy dump's, or a
// `page-server --lazy-pages` over an images dir), or the images dir
// itself (the pages a dump saved with PE_LAZY|PE_PRESENT).

// Source reads the pages of a process of the images.
type Source interface {
	// Read reads into buf (whole pages) the pages of process pid from
	// vaddr (an address of the images), as far as its lazy pages run
	// contiguously, and returns how many it read (at least one).
	Read(pid int, vaddr uint64, buf []byte) (int, error)
	Close() error
}

// lazyRun is a run of lazy pages of a pagemap: off is its offset in the
// pages image, -1 if the image does not hold them, offParent if they are
// in the parent images (a chain restored lazily: mem.LazyParents).
type lazyRun struct {
	start, end uint64
	off        int64
}

const offParent = -2

// pagemapRuns reads the lazy runs of pagemap-PID.img, the pages image they
// are in and the VMAs of mm-PID.img.
func pagemapRuns(dir *images.Dir, pid int) ([]lazyRun, uint32, []*vma.VmaEntry, error) {
	m := &mm.MmEntry{}
	if err := dir.ReadOne(fmt.Sprintf("mm-%d.img", pid), m); err != nil {
		return nil, 0, nil, err
	}
	name := fmt.Sprintf("pagemap-%d.img", pid)
	r, err := dir.NewReader(name)
	if err != nil {
		return nil, 0, nil, err
	}
	defer r.Close()
	head := &pagemap.PagemapHead{}
	if err := r.Must(head); err != nil {
		return nil, 0, nil, err
	}
	var ents []*pagemap.PagemapEntry
	for {
		at := r.Offset()
		pe := &pagemap.PagemapEntry{}
		if err := r.Next(pe); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, 0, nil, err
		}
		n := mem.NrPages(pe)
		if pe.GetVaddr()%mem.PageSize != 0 || n == 0 || n > 1<<36 || pe.GetVaddr()+n*mem.PageSize < pe.GetVaddr() {
			return nil, 0, nil, &images.Error{File: name, Offset: at, Err: fmt.Errorf("%w: bad range %#x + %d pages", images.ErrInconsistent, pe.GetVaddr(), n)}
		}
		ents = append(ents, pe)
	}
	parents := mem.LazyParents(ents, m.GetVmas())
	var runs []lazyRun
	var off int64
	for _, pe := range ents {
		n := mem.NrPages(pe)
		run := lazyRun{start: pe.GetVaddr(), end: pe.GetVaddr() + n*mem.PageSize, off: -1}
		if mem.HasData(pe) {
			run.off = off
			off += int64(n * mem.PageSize)
		}
		switch {
		case mem.InParent(pe):
			if parents {
				run.off = offParent
				runs = append(runs, run)
			}
		case mem.IsLazy(pe):
			runs = append(runs, run)
		}
	}
	return runs, head.GetPagesId(), m.GetVmas(), nil
}

// taskRanges returns the ranges of process pid that the daemon must fill:
// its lazy runs cut at the VMA bounds of mm-PID.img (one UFFDIO_COPY
// stays in one VMA).
func taskRanges(dir *images.Dir, pid int) ([]iov, uint64, error) {
	runs, _, vmas, err := pagemapRuns(dir, pid)
	if err != nil {
		return nil, 0, err
	}
	vmas = slices.Clone(vmas)
	sort.Slice(vmas, func(i, j int) bool { return vmas[i].GetStart() < vmas[j].GetStart() })
	var out []iov
	var pages uint64
	for _, r := range runs {
		for _, v := range vmas {
			lo, hi := max(r.start, v.GetStart()), min(r.end, v.GetEnd())
			if lo >= hi || !mem.LazyVMA(v) {
				continue
			}
			out = append(out, iov{start: lo, end: hi, img: lo})
			pages += (hi - lo) / mem.PageSize
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].start < out[j].start })
	return out, pages, nil
}

// imagesSource reads the lazy pages that an images dir holds.
type imagesSource struct {
	dir   *images.Dir
	tasks map[int]*imagesTask
}

type imagesTask struct {
	runs   []lazyRun
	pages  *os.File
	parent *mem.ParentReader // pages in parent, if any
}

// NewImagesSource serves the lazy pages saved in the images dir (a dump
// without --lazy-pages keeps its private anonymous pages there, marked
// PE_LAZY).
func NewImagesSource(dir *images.Dir) Source {
	return &imagesSource{dir: dir, tasks: map[int]*imagesTask{}}
}

func (s *imagesSource) task(pid int) (*imagesTask, error) {
	if t := s.tasks[pid]; t != nil {
		return t, nil
	}
	runs, id, _, err := pagemapRuns(s.dir, pid)
	if err != nil {
		return nil, err
	}
	f, err := s.dir.OpenRaw(fmt.Sprintf("pages-%d.img", id))
	if err != nil {
		return nil, err
	}
	t := &imagesTask{runs: runs, pages: f}
	if slices.ContainsFunc(runs, func(r lazyRun) bool { return r.off == offParent }) {
		t.parent = mem.NewParentReader(s.dir, fmt.Sprintf("pagemap-%d.img", pid))
	}
	s.tasks[pid] = t
	return t, nil
}

func (s *imagesSource) Read(pid int, vaddr uint64, buf []byte) (int, error) {
	t, err := s.task(pid)
	if err != nil {
		return 0, err
	}
	k := sort.Search(len(t.runs), func(k int) bool { return t.runs[k].end > vaddr })
	if k == len(t.runs) || t.runs[k].start > vaddr {
		return 0, fmt.Errorf("pid %d: no lazy page at %#x in the images", pid, vaddr)
	}
	r := t.runs[k]
	n := min(uint64(len(buf)), r.end-vaddr)
	if r.off == offParent {
		if err := t.parent.ReadAt(buf[:n], vaddr); err != nil {
			return 0, fmt.Errorf("pid %d: %w", pid, err)
		}
		return int(n / mem.PageSize), nil
	}
	if r.off < 0 {
		return 0, fmt.Errorf("pid %d: the pages at %#x are not in the images (a lazy dump's): start lazy-pages with --page-server", pid, vaddr)
	}
	if _, err := t.pages.ReadAt(buf[:n], r.off+int64(vaddr-r.start)); err != nil {
		return 0, fmt.Errorf("%s at %d: %w", t.pages.Name(), r.off+int64(vaddr-r.start), err)
	}
	return int(n / mem.PageSize), nil
}

func (s *imagesSource) Close() error {
	for _, t := range s.tasks {
		t.pages.Close()
		if t.parent != nil {
			t.parent.Close()
		}
	}
	return nil
}

// ReadPages serves a `page-server --lazy-pages` from the images.
func (s *imagesSource) ReadPages(pid int, vaddr uint64, buf []byte) (int, error) {
	return s.Read(pid, vaddr, buf)
}

// NewImagesLazySource is what `page-server --lazy-pages -D DIR` serves:
// the lazy pages saved in the images dir.
func NewImagesLazySource(dir *images.Dir) (pagesrv.LazySource, func() error) {
	s := &imagesSource{dir: dir, tasks: map[int]*imagesTask{}}
	return s, s.Close
}

// remoteSource asks a page server.
type remoteSource struct{ c *pagesrv.LazyClient }

// NewRemoteSource asks the page server at addr (host:port) for the pages.
func NewRemoteSource(addr string) (Source, error) {
	c, err := pagesrv.DialLazy(addr)
	if err != nil {
		return nil, err
	}
	return &remoteSource{c: c}, nil
}

func (s *remoteSource) Read(pid int, vaddr uint64, buf []byte) (int, error) {
	return s.c.Get(pid, vaddr, buf)
}

func (s *remoteSource) Close() error { return s.c.Close() }

// abort drops the connection without closing the session.
func (s *remoteSource) abort() { s.c.Abort() }
