package mem

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"sync/atomic"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/checksum"
	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/progress"
	"github.com/stasis-cr/stasis/internal/ptrace"
)

// Pages (pages-N.img, described by pagemap-PID.img). The dump finds the
// pages to save in /proc/PID/pagemap (PageRuns) and copies them out of
// the task (DumpPages, WritePages); the restore reads the pagemap
// (readPagemap, PagedAreas) and copies the pages into the task
// (FillPages), leaving those still shared with the parent alone.

// PageSize is the x86_64 base page size.
const PageSize = 4096

// pagemap_entry.flags (criu's PE_*) and the page copy's chunk; the
// pagemap entry bits are linux.Pm*.
const (
	peParent  = 1 // pagemap_entry.flags PE_PARENT
	peLazy    = 2
	PEPresent = 4 // PE_PRESENT: the pages are in pages-N.img
	copyChunk = 16 << 20
)

// Run is a range of pages to save.
type Run struct {
	Addr  uint64
	Pages uint64
	// Shared: some page of the run is mapped by other processes too
	// (copy-on-write after fork); it must be read without pinning.
	Shared bool
}

// PageRuns returns the pages of a that must be saved: every present or
// swapped page of an anonymous mapping, and of a private file mapping only
// the pages it copied on write (the rest comes back from the file). Only
// the page map of the runs PAGEMAP_SCAN finds present or swapped is read,
// in bounded chunks: a reservation of terabytes (mariadbd's 8 TiB
// PROT_NONE buffer pool) has a page map of gigabytes, nearly all empty.
func PageRuns(pagemapFile *os.File, a *Area) ([]Run, error) {
	runs, _, err := scanPages(pagemapFile, a)
	return runs, err
}

// scanPages is PageRuns, also counting the pages it looked at, as criu
// 4.2 counts pages_scanned: present or swapped, not a private file
// mapping's page still the file's own (zero pages counted, not saved).
func scanPages(pagemapFile *os.File, a *Area) ([]Run, uint64, error) {
	if !a.Dumpable() {
		return nil, 0, nil
	}
	var runs []Run
	var scanned uint64
	err := populated(pagemapFile, a.Start(), a.End(), func(lo, hi uint64) error {
		return pageRunsIn(pagemapFile, a, lo, hi, &runs, &scanned)
	})
	if err != nil {
		return nil, 0, fmt.Errorf("read pagemap for %#x-%#x: %w", a.Start(), a.End(), err)
	}
	return runs, scanned, nil
}

// pagemapChunk bounds the page map entries read at once (512 KiB).
const pagemapChunk = 64 << 10

// populated calls fn for the ranges of [start, end) that hold present or
// swapped pages (PAGEMAP_SCAN, Linux 6.7), or for the whole range on a
// kernel without it.
func populated(f *os.File, start, end uint64, fn func(lo, hi uint64) error) error {
	vec := make([]linux.PageRegion, 64)
	for at := start; at < end; {
		n, walked, err := pagemapScan(f, at, end, 0, linux.PageIsPresent|linux.PageIsSwapped, vec)
		if err != nil && at == start && (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY)) {
			return fn(start, end)
		}
		if err != nil {
			return fmt.Errorf("PAGEMAP_SCAN at %#x: %w", at, err)
		}
		for _, r := range vec[:n] {
			if err := fn(r.Start, r.End); err != nil {
				return err
			}
		}
		if walked <= at {
			return fmt.Errorf("PAGEMAP_SCAN at %#x: walk ended at %#x", at, walked)
		}
		at = walked
	}
	return nil
}

// pageRunsIn appends to runs the pages of [lo, hi), a part of a, that
// must be saved, and adds to scanned those it considered.
func pageRunsIn(f *os.File, a *Area, lo, hi uint64, runs *[]Run, scanned *uint64) error {
	filePrivate := a.Has(FilePrivate)
	zero := zeroPFN()
	buf := make([]byte, min((hi-lo)/PageSize, pagemapChunk)*8)
	for at := lo; at < hi; {
		n := min((hi-at)/PageSize, pagemapChunk)
		b := buf[:n*8]
		if _, err := f.ReadAt(b, int64(at/PageSize*8)); err != nil {
			return err
		}
		for i := uint64(0); i < n; i++ {
			pme := binary.LittleEndian.Uint64(b[i*8:])
			// A guard region's marker shows as swapped; it has no page.
			keep := pme&(linux.PmPresent|linux.PmSwap) != 0 && pme&linux.PmGuardRegion == 0 && !uffdMarker(pme)
			if keep && filePrivate && pme&linux.PmFile != 0 {
				keep = false // still the file's own page
			}
			if keep {
				*scanned++
			}
			if keep && zero != 0 && pme&linux.PmPresent != 0 && pme&linux.PmPFNMask == zero {
				keep = false
			}
			if !keep {
				continue
			}
			addr := at + i*PageSize
			shared := pme&linux.PmPresent != 0 && pme&linux.PmMMapExcl == 0
			if l := len(*runs); l > 0 && (*runs)[l-1].Addr+(*runs)[l-1].Pages*PageSize == addr && (*runs)[l-1].Shared == shared {
				(*runs)[l-1].Pages++
			} else {
				*runs = append(*runs, Run{Addr: addr, Pages: 1, Shared: shared})
			}
		}
		at += n * PageSize
	}
	return nil
}

// mergeRuns joins adjacent runs that differ only in how they are read.
func mergeRuns(runs []Run) []Run {
	var out []Run
	for _, r := range runs {
		if l := len(out); l > 0 && out[l-1].Addr+out[l-1].Pages*PageSize == r.Addr {
			out[l-1].Pages += r.Pages
			continue
		}
		out = append(out, r)
	}
	return out
}

// DumpStats are the figures of one page dump.
type DumpStats struct {
	PagesScanned uint64
	PagesWritten uint64
	PagesLazy    uint64 // left to a lazy dump's page server
}

// DumpPages saves the pages of every dumpable area of pid into w and
// returns the pagemap entries describing them, in address order. The
// copy out of the task (process_vm_readv) and the write to the image run
// concurrently on two alternating buffers. stop is called before each
// chunk of the copy: an error from it (an interrupted dump) ends the copy
// with that error.
func DumpPages(pid int, areas []*Area, w io.Writer, stop func() error) ([]*pagemap.PagemapEntry, DumpStats, error) {
	runs, entries, st, err := pageList(pid, areas, nil)
	if err != nil {
		return nil, st, err
	}
	fill := func(ios []ptrace.VMIO) error {
		if stop != nil {
			if err := stop(); err != nil {
				return err
			}
		}
		return ptrace.ReadvMem(pid, ios)
	}
	if err := copyRuns(runs, w, fill); err != nil {
		return nil, st, fmt.Errorf("dump pages of pid %d: %w", pid, err)
	}
	return entries, st, nil
}

// pageList returns the runs of pages of pid's dumpable areas to save, in
// address order, and the pagemap entries that describe them. With lazy
// (a lazy dump) the runs of the areas a lazy restore may leave missing go
// there instead, not to be saved (lazy.go).
func pageList(pid int, areas []*Area, lazy *[]Run) ([]Run, []*pagemap.PagemapEntry, DumpStats, error) {
	var st DumpStats
	pm, err := linux.OpenFile(fmt.Sprintf("/proc/%d/pagemap", pid), os.O_RDONLY, 0)
	if err != nil {
		return nil, nil, st, err
	}
	defer pm.Close()
	var runs []Run
	var entries []*pagemap.PagemapEntry
	for _, a := range areas {
		r, scanned, err := scanPages(pm, a)
		if err != nil {
			return nil, nil, st, fmt.Errorf("pid %d: %w", pid, err)
		}
		st.PagesScanned += scanned
		flags := lazyFlags(a, lazy != nil)
		if flags&PEPresent != 0 {
			runs = append(runs, r...)
		} else {
			*lazy = append(*lazy, r...)
		}
		// An entry never crosses a VMA: restore checks each lies in one.
		for _, m := range mergeRuns(r) {
			entries = append(entries, &pagemap.PagemapEntry{
				Vaddr:         proto.Uint64(m.Addr),
				CompatNrPages: proto.Uint32(0),
				NrPages:       proto.Uint64(m.Pages),
				Flags:         proto.Uint32(flags),
			})
			if flags&PEPresent != 0 {
				st.PagesWritten += m.Pages
			} else {
				st.PagesLazy += m.Pages
			}
		}
	}
	return runs, entries, st, nil
}

// copyRuns streams the runs through fixed buffers: fill reads a batch from
// the task while the previous batch is written.
func copyRuns(runs []Run, w io.Writer, fill func([]ptrace.VMIO) error) error {
	type batch struct {
		buf []byte
		n   int
	}
	// Buffers no bigger than the dump: a small process should not pay
	// for allocating (and collecting) 32 MiB.
	var total uint64
	for _, r := range runs {
		total += r.Pages * PageSize
	}
	size := int(min(total, copyChunk))
	if size == 0 {
		return nil
	}
	free := make(chan []byte, 2)
	// Buffers mapped and populated in one call: first-touch faults of a
	// fresh Go slice cost ~20 µs a page on these VMs, more than the copy
	// (a final dump's few thousand written pages). The second only when
	// one is not enough.
	for k := 0; k < 2 && (k == 0 || total > uint64(size)); k++ {
		b, unmap := copyBuffer(size)
		defer unmap()
		free <- b
	}
	full := make(chan batch, 2)
	errc := make(chan error, 1)
	// Set once a write failed (a full disk): reading on is pointless.
	var wfailed atomic.Bool
	go func() {
		defer close(full)
		buf := <-free
		var ios []ptrace.VMIO
		off := 0
		flush := func() bool {
			if off == 0 {
				return true
			}
			if wfailed.Load() {
				errc <- nil // the writer's error is the one reported
				return false
			}
			if err := fill(ios); err != nil {
				errc <- err
				return false
			}
			full <- batch{buf, off}
			buf, ios, off = <-free, ios[:0], 0
			return true
		}
		for _, r := range runs {
			addr, left := r.Addr, r.Pages*PageSize
			for left > 0 {
				n := min(left, uint64(len(buf)-off))
				ios = append(ios, ptrace.VMIO{Remote: addr, Local: buf[off : off+int(n)], NoPin: r.Shared})
				off += int(n)
				addr += n
				left -= n
				if off == len(buf) && !flush() {
					return
				}
			}
		}
		if flush() {
			errc <- nil
		}
	}()
	var werr error
	for b := range full {
		if werr == nil {
			if _, werr = w.Write(b.buf[:b.n]); werr != nil {
				wfailed.Store(true)
			}
		}
		free <- b.buf
	}
	if err := <-errc; err != nil {
		return err
	}
	return werr
}

// copyBuffer returns a buffer of size bytes, populated, and what frees it.
func copyBuffer(size int) ([]byte, func()) {
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return make([]byte, size), func() {}
	}
	_ = unix.Madvise(b, unix.MADV_POPULATE_WRITE) // before 5.14: faulted in by the copy
	return b, func() { unix.Munmap(b) }
}

// gaps returns the parts of [start, end) that no pagemap entry covers.
func gaps(start, end uint64, entries []*pagemap.PagemapEntry) [][2]uint64 {
	var out [][2]uint64
	at := start
	for _, pe := range entries {
		lo, hi := pe.GetVaddr(), pe.GetVaddr()+NrPages(pe)*PageSize
		if hi <= at || lo >= end {
			continue
		}
		if lo > at {
			out = append(out, [2]uint64{at, lo})
		}
		at = max(at, hi)
	}
	if at < end {
		out = append(out, [2]uint64{at, end})
	}
	return out
}

// PagedAreas checks that every page of the pagemap lies in a mapping of
// the image, splits the entries that run across several adjacent
// mappings (criu writes one entry for a relro page followed by .data) so
// that each entry lies in one, and returns the split entries and the
// start addresses of the VMAs that receive pages. Pages of the vDSO and
// vvar areas (criu dumps them; the kernel provides them at restore) stay
// in the list, since their data takes its place in the pages image, but
// no VMA receives them: FillPages skips them. bad(i, err) builds the
// error for entry i of the input.
func PagedAreas(vmas []*vma.VmaEntry, entries []*pagemap.PagemapEntry, bad func(i int, err error) error) ([]*pagemap.PagemapEntry, map[uint64]bool, error) {
	sorted := make([]*vma.VmaEntry, 0, len(vmas))
	for _, e := range vmas {
		if Mappable(e) || kernelArea(e) {
			sorted = append(sorted, e)
		}
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].GetStart() < sorted[j].GetStart() })
	paged := map[uint64]bool{}
	out := make([]*pagemap.PagemapEntry, 0, len(entries))
	for i, pe := range entries {
		start := pe.GetVaddr()
		n := NrPages(pe)
		end := start + n*PageSize
		// n above 2^52 wraps n*PageSize: a huge count would pass as a
		// small one, and the fill would copy that many pages.
		if start%PageSize != 0 || n == 0 || n > (math.MaxUint64-start)/PageSize {
			return nil, nil, bad(i, fmt.Errorf("bad range %#x + %d pages", start, n))
		}
		k := sort.Search(len(sorted), func(k int) bool { return sorted[k].GetEnd() > start })
		for at := start; at < end; k++ {
			if k == len(sorted) || sorted[k].GetStart() > at {
				return nil, nil, bad(i, fmt.Errorf("pages %#x-%#x are outside every mapping of the image", at, end))
			}
			v := sorted[k]
			if v.GetStatus()&FileShared != 0 {
				return nil, nil, bad(i, fmt.Errorf("pages %#x-%#x belong to a shared file mapping", at, min(end, v.GetEnd())))
			}
			if Mappable(v) {
				paged[v.GetStart()] = true
			}
			hi := min(end, v.GetEnd())
			part := pe
			if at != start || hi != end {
				part = proto.Clone(pe).(*pagemap.PagemapEntry)
				part.Vaddr = proto.Uint64(at)
				part.NrPages = proto.Uint64((hi - at) / PageSize)
				part.CompatNrPages = proto.Uint32(0)
			}
			out = append(out, part)
			at = hi
		}
	}
	return out, paged, nil
}

// kernelArea reports whether the kernel, not restore, provides the
// VMA's pages: the vDSO and its data pages.
func kernelArea(e *vma.VmaEntry) bool {
	return e.GetStatus()&(AreaVDSO|AreaVVAR) != 0
}

// NrPages is the page count of a pagemap entry, reading old images'
// compat_nr_pages when nr_pages is absent (as criu does).
func NrPages(pe *pagemap.PagemapEntry) uint64 {
	if pe.NrPages != nil {
		return pe.GetNrPages()
	}
	return uint64(pe.GetCompatNrPages())
}

// HasData reports whether the entry's pages are stored in the pages image.
func HasData(pe *pagemap.PagemapEntry) bool {
	if pe.Flags == nil {
		return !pe.GetInParent()
	}
	return pe.GetFlags()&PEPresent != 0
}

// FillPages copies the pages of the image into pid's memory: read in
// windows into buffers and written with process_vm_writev on parallel
// workers (pagefill.go).
// Pages inside kept VMAs (inherited from the parent) are compared with
// what the task has and written only where they differ, so that pages
// still shared with the parent stay shared. stop is called before each
// chunk: an error from it (an interrupted restore) ends the fill with it.
func FillPages(pid int, entries []*pagemap.PagemapEntry, pages *os.File, vmas []*vma.VmaEntry, kept map[uint64]bool, stop func() error, meter *progress.Meter) (FillStats, error) {
	return fillPages(pid, entries, pages, vmas, kept, stop, meter, false)
}

// fillPages is FillPages; with lazy, the pages a lazy restore leaves to
// the lazy-pages daemon (PE_LAZY) are skipped.
func fillPages(pid int, entries []*pagemap.PagemapEntry, pages *os.File, vmas []*vma.VmaEntry, kept map[uint64]bool, stop func() error, meter *progress.Meter, lazy bool) (FillStats, error) {
	var st FillStats
	var want int64
	for _, pe := range entries {
		if HasData(pe) {
			want += int64(NrPages(pe) * PageSize)
		}
	}
	if want == 0 {
		return st, nil
	}
	fi, err := pages.Stat()
	if err != nil {
		return st, err
	}
	if fi.Size() < want {
		return st, fmt.Errorf("%s is truncated: pagemap needs %d bytes, file has %d: %w", fi.Name(), want, fi.Size(), ErrTruncatedPages)
	}
	var spans []fillSpan
	var off uint64
	for _, pe := range entries {
		if !HasData(pe) {
			continue
		}
		n := NrPages(pe) * PageSize
		if !lazy || !IsLazy(pe) {
			spans = append(spans, fillSpan{pe.GetVaddr(), off, n})
		}
		off += n
	}
	meter.Expect(uint64(want))
	return fillFromFile(pid, spans, pages, vmas, kept, stop, meter)
}

// fillIOs writes the runs of pages of all (each inside one VMA) into pid:
// not those of the kernel's areas, and in kept VMAs only the pages that
// differ (FillPages).
func fillIOs(pid int, all []ptrace.VMIO, vmas []*vma.VmaEntry, kept map[uint64]bool, stop func() error) (FillStats, error) {
	return fillIOsMeter(pid, all, vmas, kept, stop, nil)
}

// fillIOsMeter is fillIOs counting the bytes written in meter (may be nil).
func fillIOsMeter(pid int, all []ptrace.VMIO, vmas []*vma.VmaEntry, kept map[uint64]bool, stop func() error, meter *progress.Meter) (FillStats, error) {
	ios, st, err := planFill(pid, all, keptLookup(vmas, kept), areaLookup(vmas, kernelArea), meter)
	if err != nil {
		return st, err
	}
	return st, writeParallel(pid, ios, stop, meter)
}

// planFill returns the writes of all that fill pid: not those into the
// kernel's areas, and in kept VMAs (inKept) only the pages that differ
// from what pid has. meter counts what is left out as done.
func planFill(pid int, all []ptrace.VMIO, inKept, inKernel func(uint64) bool, meter *progress.Meter) ([]ptrace.VMIO, FillStats, error) {
	var st FillStats
	ios := make([]ptrace.VMIO, 0, len(all))
	var cmp []ptrace.VMIO
	for _, io := range all {
		if inKernel(io.Remote) {
			continue
		}
		if inKept(io.Remote) {
			cmp = append(cmp, io)
		} else {
			ios = append(ios, io)
		}
	}
	diff, err := differing(pid, cmp)
	if err != nil {
		return nil, st, err
	}
	ios = append(ios, diff...)
	// What is not written (the kernel's areas, pages equal to the
	// parent's) is done as well.
	skipped := 0
	for _, io := range all {
		skipped += len(io.Local)
	}
	for _, io := range ios {
		skipped -= len(io.Local)
	}
	meter.Add(uint64(skipped))
	for _, io := range cmp {
		st.Compared += uint64(len(io.Local) / PageSize)
	}
	for _, io := range ios {
		st.Restored += uint64(len(io.Local) / PageSize)
	}
	st.SkippedCOW = st.Compared
	for _, io := range diff {
		st.SkippedCOW -= uint64(len(io.Local) / PageSize)
	}
	return ios, st, nil
}

// FillStats counts pages as criu's stats-restore does.
type FillStats struct {
	Compared   uint64 // pages of inherited mappings compared with the image
	SkippedCOW uint64 // of those, equal: left shared with the parent
	Restored   uint64 // pages written
}

func keptLookup(vmas []*vma.VmaEntry, kept map[uint64]bool) func(uint64) bool {
	return areaLookup(vmas, func(e *vma.VmaEntry) bool { return kept[e.GetStart()] })
}

// areaLookup tells whether an address lies in a VMA for which pick is true.
func areaLookup(vmas []*vma.VmaEntry, pick func(*vma.VmaEntry) bool) func(uint64) bool {
	var ranges [][2]uint64
	for _, e := range vmas {
		if pick(e) {
			ranges = append(ranges, [2]uint64{e.GetStart(), e.GetEnd()})
		}
	}
	if len(ranges) == 0 {
		return func(uint64) bool { return false }
	}
	return func(a uint64) bool {
		for _, r := range ranges {
			if a >= r[0] && a < r[1] {
				return true
			}
		}
		return false
	}
}

// differing reads the task's current pages for each range and returns the
// runs of pages whose content differs from the image's.
func differing(pid int, ios []ptrace.VMIO) ([]ptrace.VMIO, error) {
	var out []ptrace.VMIO
	if len(ios) == 0 {
		return nil, nil
	}
	// The fill asks for each 1 MiB window of an inherited mapping: a
	// buffer each time would be a gigabyte of garbage for a big tree,
	// and fresh memory, a fault per page (winbuf.go). One open of the
	// task's memory for all its ranges.
	buf, put := winBufs.Get(winBufSize)
	defer put()
	mr, err := ptrace.OpenMemReader(pid)
	if err != nil {
		return nil, fmt.Errorf("compare inherited memory of pid %d: %w", pid, err)
	}
	defer mr.Close()
	for _, io := range ios {
		for done := 0; done < len(io.Local); {
			n := min(len(buf), len(io.Local)-done)
			if err := mr.Read(io.Remote+uint64(done), buf[:n]); err != nil {
				return nil, fmt.Errorf("compare inherited memory of pid %d: %w", pid, err)
			}
			for p := 0; p < n; p += PageSize {
				img := io.Local[done+p : done+p+PageSize]
				if bytes.Equal(buf[p:p+PageSize], img) {
					continue
				}
				addr := io.Remote + uint64(done+p)
				if l := len(out); l > 0 && out[l-1].Remote >= io.Remote && out[l-1].Remote+uint64(len(out[l-1].Local)) == addr {
					last := &out[l-1]
					last.Local = io.Local[int(last.Remote-io.Remote) : done+p+PageSize]
					continue
				}
				out = append(out, ptrace.VMIO{Remote: addr, Local: img})
			}
			done += n
		}
	}
	return out, nil
}

// fillChunk is one writer's share of the fill at a time.
const fillChunk = 32 << 20

// writeParallel splits the writes into chunks handled by a few
// goroutines: process_vm_writev needs no ptrace stop, and the page-fault
// work on the target side scales with CPUs.
func writeParallel(pid int, ios []ptrace.VMIO, stop func() error, meter *progress.Meter) error {
	const chunk = fillChunk
	var parts [][]ptrace.VMIO
	var cur []ptrace.VMIO
	size := 0
	for _, io := range ios {
		for len(io.Local) > 0 {
			n := min(len(io.Local), chunk-size)
			cur = append(cur, ptrace.VMIO{Remote: io.Remote, Local: io.Local[:n]})
			io.Remote += uint64(n)
			io.Local = io.Local[n:]
			size += n
			if size == chunk {
				parts, cur, size = append(parts, cur), nil, 0
			}
		}
	}
	if len(cur) > 0 {
		parts = append(parts, cur)
	}
	workers := min(len(parts), 4)
	work := make(chan []ptrace.VMIO)
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		go func() {
			var first error
			for p := range work {
				if first == nil {
					first = ptrace.WritevMem(pid, p)
					for _, io := range p {
						meter.Add(uint64(len(io.Local)))
					}
				}
			}
			errs <- first
		}()
	}
	var first error
	for _, p := range parts {
		if stop != nil {
			if first = stop(); first != nil {
				break
			}
		}
		work <- p
	}
	close(work)
	for w := 0; w < workers; w++ {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return fmt.Errorf("fill memory of pid %d: %w", pid, first)
	}
	return nil
}

// readPagemap reads the pagemap image file of img's task, splits its
// entries at VMA bounds (PagedAreas) and checks the pages image holds
// what they need.
func (img *Image) readPagemap(dir *images.Dir, file string) error {
	r, err := dir.NewReader(file)
	if err != nil {
		return err
	}
	defer r.Close()
	head := &pagemap.PagemapHead{}
	if err := r.Next(head); err != nil {
		if errors.Is(err, io.EOF) {
			return bad(file, "no pagemap head")
		}
		return err
	}
	img.PagesID = head.GetPagesId()
	var offsets []int64
	for {
		off := r.Offset()
		pe := &pagemap.PagemapEntry{}
		if err := r.Next(pe); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return err
		}
		img.Pagemap = append(img.Pagemap, pe)
		offsets = append(offsets, off)
		if HasData(pe) {
			// Checked before the sum, which a few huge counts would wrap
			// into a size the pages file seems to have.
			n := NrPages(pe)
			if n > uint64(math.MaxInt64-img.PagesLen)/PageSize {
				return &images.Error{File: file, Offset: off, Err: fmt.Errorf("%w: entry %d: %d pages, more than any pages file holds", images.ErrInconsistent, len(img.Pagemap)-1, n)}
			}
			img.PagesLen += int64(n * PageSize)
		}
	}
	img.Pagemap, img.Paged, err = PagedAreas(img.MM.GetVmas(), img.Pagemap, func(i int, err error) error {
		return &images.Error{File: file, Offset: offsets[i], Err: fmt.Errorf("%w: entry %d: %v", images.ErrInconsistent, i, err)}
	})
	if err != nil {
		return err
	}
	// Entries in parent (criu dump --prev-images-dir): parent.go.
	if img.parents, err = ResolveParents(dir, file, img.Pagemap); err != nil {
		return err
	}
	pages := fmt.Sprintf("pages-%d.img", img.PagesID)
	f, err := dir.OpenRaw(pages)
	if err != nil {
		// Say which image sent us there: its pages id may be the damage.
		return fmt.Errorf("%s: pages of pages id %d: %w", file, img.PagesID, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() < img.PagesLen {
		return &images.Error{File: pages, Offset: fi.Size(), Err: fmt.Errorf("%w: %s needs %d bytes of pages, file ends at %d", images.ErrTruncated, file, img.PagesLen, fi.Size())}
	}
	return nil
}

// WritePages saves the pages of pid (areas: its classified VMAs) into
// pages-PAGESID.img and their pagemap into pagemap-IMGPID.img (imgPid: its
// pid in the images, the dumped root's pid namespace's), and returns the
// checksum of the pages image, computed while it was written. stop is as
// for DumpPages; meter (may be nil) counts the bytes copied.
func WritePages(dir *images.Dir, pid, imgPid, pagesID int, areas []*Area, stop func() error, meter *progress.Meter) (DumpStats, *checksum.Sum, error) {
	return writePages(dir, pid, imgPid, pagesID, areas, stop, meter, nil)
}

func writePages(dir *images.Dir, pid, imgPid, pagesID int, areas []*Area, stop func() error, meter *progress.Meter, lazy *[]Run) (DumpStats, *checksum.Sum, error) {
	f, err := dir.CreateRaw(fmt.Sprintf("pages-%d.img", pagesID))
	if err != nil {
		return DumpStats{}, nil, err
	}
	runs, entries, st, err := pageList(pid, areas, lazy)
	var sum *checksum.Sum
	if err == nil {
		sum, err = copyToFile(pid, runs, f, stop, meter)
		if err != nil {
			err = fmt.Errorf("dump pages of pid %d: %w", pid, err)
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return st, sum, err
	}
	ents := []proto.Message{&pagemap.PagemapHead{PagesId: proto.Uint32(uint32(pagesID))}}
	for _, e := range entries {
		ents = append(ents, e)
	}
	return st, sum, dir.Write(fmt.Sprintf("pagemap-%d.img", imgPid), ents...)
}
