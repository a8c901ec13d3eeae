package mem

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"sort"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/ptrace"
)

// Mappable reports whether restore creates the VMA itself with mmap; the
// vDSO is placed by the kernel (arch_prctl) and vsyscall/uprobes belong
// to the kernel. An AIO ring is mapped to be filled, then replaced by a
// new context's (criu marks it AIORING alone, stasis also REGULAR).
func Mappable(e *vma.VmaEntry) bool {
	return e.GetStatus()&(AreaRegular|AreaAIORing) != 0 && e.GetStatus()&(AreaVDSO|AreaVVAR) == 0
}

// FileOpener returns an fd, valid in the task, of the file (or shared
// memory object) mapped by e; MapAreas closes it after the mmap.
type FileOpener func(e *vma.VmaEntry) (int, error)

// MapAreas re-creates every mappable VMA of the image at its address in
// the task t, except those in kept (inherited from the parent as they
// are). Areas that get pages from the image are made writable
// (process_vm_writev cannot write read-only memory); Protect sets the
// final protection.
func MapAreas(t *ptrace.Task, vmas []*vma.VmaEntry, withPages, kept map[uint64]bool, open FileOpener) error {
	for _, e := range vmas {
		if !Mappable(e) {
			continue
		}
		p := uint64(e.GetProt())
		if withPages[e.GetStart()] {
			p |= unix.PROT_READ | unix.PROT_WRITE
		}
		if kept[e.GetStart()] {
			if withPages[e.GetStart()] {
				if _, err := t.Call("mprotect", unix.SYS_MPROTECT, e.GetStart(), e.GetEnd()-e.GetStart(), p); err != nil {
					return fmt.Errorf("vma %#x-%#x: %w", e.GetStart(), e.GetEnd(), err)
				}
			}
			// A fork does not pass memory locks on: a child that
			// locked an inherited mapping itself locks it again.
			if e.GetFlags()&unix.MAP_LOCKED != 0 {
				if _, err := t.Call("mlock", unix.SYS_MLOCK, e.GetStart(), e.GetEnd()-e.GetStart()); err != nil {
					return fmt.Errorf("vma %#x-%#x: %w", e.GetStart(), e.GetEnd(), err)
				}
			}
			continue
		}
		if e.GetStatus()&AreaSysVIPC != 0 {
			if err := attachSysv(t, vmas, e); err != nil {
				return fmt.Errorf("pid %d: %w", t.Tid, err)
			}
			continue
		}
		flags := uint64(e.GetFlags()) | unix.MAP_FIXED
		fd := ^uint64(0)
		if e.GetStatus()&(FilePrivate|FileShared|AnonShared) != 0 {
			// Shared anonymous memory too is mapped from its object's
			// file, so that every mapping of it shares it again.
			f, err := open(e)
			if err != nil {
				return fmt.Errorf("map vma %#x-%#x: %w", e.GetStart(), e.GetEnd(), err)
			}
			fd = uint64(f)
			flags &^= unix.MAP_ANONYMOUS
		} else {
			flags |= unix.MAP_ANONYMOUS
		}
		r, err := t.Syscall(unix.SYS_MMAP, e.GetStart(), e.GetEnd()-e.GetStart(), p, flags, fd, e.GetPgoff())
		if err != nil {
			return fmt.Errorf("mmap vma %#x-%#x prot %#x flags %#x in pid %d: %w", e.GetStart(), e.GetEnd(), p, flags, t.Tid, err)
		}
		if r != e.GetStart() {
			return fmt.Errorf("mmap vma %#x-%#x in pid %d landed at %#x", e.GetStart(), e.GetEnd(), t.Tid, r)
		}
		if fd != ^uint64(0) {
			if _, err := t.Call("close", unix.SYS_CLOSE, fd); err != nil {
				return err
			}
		}
	}
	return nil
}

// Protect gives every VMA its dumped protection and madvise advice, and
// drops from kept private VMAs the pages the image does not have: they
// came from the parent, and the task had never made them its own.
func Protect(t *ptrace.Task, vmas []*vma.VmaEntry, entries []*pagemap.PagemapEntry, withPages, kept map[uint64]bool) error {
	for _, e := range vmas {
		if !Mappable(e) {
			continue
		}
		start, size := e.GetStart(), e.GetEnd()-e.GetStart()
		if kept[start] && e.GetFlags()&unix.MAP_PRIVATE != 0 {
			for _, gap := range gaps(start, e.GetEnd(), entries) {
				if _, err := t.Call("madvise(MADV_DONTNEED)", unix.SYS_MADVISE, gap[0], gap[1]-gap[0], unix.MADV_DONTNEED); err != nil {
					return fmt.Errorf("vma %#x-%#x: %w", start, e.GetEnd(), err)
				}
			}
		}
		if kept[start] || withPages[start] && e.GetProt() != unix.PROT_READ|unix.PROT_WRITE {
			if _, err := t.Call("mprotect", unix.SYS_MPROTECT, start, size, uint64(e.GetProt())); err != nil {
				return fmt.Errorf("vma %#x-%#x: %w", start, e.GetEnd(), err)
			}
		}
	}
	return adviseAll(t, vmas)
}

// adviseAll applies each VMA's madvise advice. Adjacent VMAs with the
// same advice take one call: a process with thousands of threads has
// thousands of stacks and guard pages, all with the same advice.
func adviseAll(t *ptrace.Task, vmas []*vma.VmaEntry) error {
	var start, end, madv uint64
	flush := func() error {
		for adv := 0; adv < 64 && end > start; adv++ {
			if madv&(1<<adv) == 0 {
				continue
			}
			if _, err := t.Call("madvise", unix.SYS_MADVISE, start, end-start, uint64(adv)); err != nil {
				return fmt.Errorf("vmas %#x-%#x advice %d: %w", start, end, adv, err)
			}
		}
		return nil
	}
	for _, e := range vmas {
		if !Mappable(e) || e.GetMadv() == 0 {
			continue
		}
		if e.GetStart() == end && e.GetMadv() == madv {
			end = e.GetEnd()
			continue
		}
		if err := flush(); err != nil {
			return err
		}
		start, end, madv = e.GetStart(), e.GetEnd(), e.GetMadv()
	}
	return flush()
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

// FillPages copies the pages of the image into pid's memory. The pages
// file is mapped and written with process_vm_writev in large batches.
// Pages inside kept VMAs (inherited from the parent) are compared with
// what the task has and written only where they differ, so that pages
// still shared with the parent stay shared. stop is called before each
// chunk: an error from it (an interrupted restore) ends the fill with it.
func FillPages(pid int, entries []*pagemap.PagemapEntry, pages *os.File, vmas []*vma.VmaEntry, kept map[uint64]bool, stop func() error) (FillStats, error) {
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
	data, err := unix.Mmap(int(pages.Fd()), 0, int(want), unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_POPULATE)
	if err != nil {
		return st, fmt.Errorf("map %s: %w", fi.Name(), err)
	}
	defer unix.Munmap(data)
	inKept := keptLookup(vmas, kept)
	inKernel := areaLookup(vmas, kernelArea)
	ios := make([]ptrace.VMIO, 0, len(entries))
	var cmp []ptrace.VMIO
	var off uint64
	for _, pe := range entries {
		if !HasData(pe) {
			continue
		}
		n := NrPages(pe) * PageSize
		io := ptrace.VMIO{Remote: pe.GetVaddr(), Local: data[off : off+n]}
		off += n
		if inKernel(pe.GetVaddr()) {
			continue
		}
		if inKept(pe.GetVaddr()) {
			cmp = append(cmp, io)
		} else {
			ios = append(ios, io)
		}
	}
	diff, err := differing(pid, cmp)
	if err != nil {
		return st, err
	}
	ios = append(ios, diff...)
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
	return st, writeParallel(pid, ios, stop)
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
	buf := make([]byte, 1<<20)
	for _, io := range ios {
		for done := 0; done < len(io.Local); {
			n := min(len(buf), len(io.Local)-done)
			if err := ptrace.ReadMemNoPin(pid, io.Remote+uint64(done), buf[:n]); err != nil {
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

// ErrTruncatedPages is wrapped when a pages image is shorter than its
// pagemap says.
var ErrTruncatedPages = fmt.Errorf("pages image truncated")

// writeParallel splits the writes into chunks handled by a few
// goroutines: process_vm_writev needs no ptrace stop, and the page-fault
// work on the target side scales with CPUs.
func writeParallel(pid int, ios []ptrace.VMIO, stop func() error) error {
	const chunk = 64 << 20
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
