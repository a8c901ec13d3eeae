package mem

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sync/atomic"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/ptrace"
)

// PageSize is the x86_64 base page size.
const PageSize = 4096

// pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
const (
	pmePresent = 1 << 63
	pmeSwap    = 1 << 62
	pmeFile    = 1 << 61 // file page or shared anon
	pmeExcl    = 1 << 56 // page mapped by this process only
	pmePFNMask = 1<<55 - 1
	peParent   = 1 // pagemap_entry.flags PE_PARENT
	peLazy     = 2
	PEPresent  = 4 // PE_PRESENT: the pages are in pages-N.img
	copyChunk  = 16 << 20
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
// the pages it copied on write (the rest comes back from the file).
func PageRuns(pagemapFile *os.File, a *Area) ([]Run, error) {
	if !a.Dumpable() {
		return nil, nil
	}
	n := (a.End() - a.Start()) / PageSize
	buf := make([]byte, n*8)
	if _, err := pagemapFile.ReadAt(buf, int64(a.Start()/PageSize*8)); err != nil {
		return nil, fmt.Errorf("read pagemap for %#x-%#x: %w", a.Start(), a.End(), err)
	}
	filePrivate := a.Has(FilePrivate)
	zero := zeroPFN()
	var runs []Run
	for i := uint64(0); i < n; i++ {
		pme := binary.LittleEndian.Uint64(buf[i*8:])
		keep := pme&(pmePresent|pmeSwap) != 0
		if keep && filePrivate && pme&pmeFile != 0 {
			keep = false // still the file's own page
		}
		if keep && zero != 0 && pme&pmePresent != 0 && pme&pmePFNMask == zero {
			keep = false
		}
		if !keep {
			continue
		}
		addr := a.Start() + i*PageSize
		shared := pme&pmePresent != 0 && pme&pmeExcl == 0
		if l := len(runs); l > 0 && runs[l-1].Addr+runs[l-1].Pages*PageSize == addr && runs[l-1].Shared == shared {
			runs[l-1].Pages++
		} else {
			runs = append(runs, Run{Addr: addr, Pages: 1, Shared: shared})
		}
	}
	return runs, nil
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
}

// DumpPages saves the pages of every dumpable area of pid into w and
// returns the pagemap entries describing them, in address order. The
// copy out of the task (process_vm_readv) and the write to the image run
// concurrently on two alternating buffers. stop is called before each
// chunk of the copy: an error from it (an interrupted dump) ends the copy
// with that error.
func DumpPages(pid int, areas []*Area, w io.Writer, stop func() error) ([]*pagemap.PagemapEntry, DumpStats, error) {
	var st DumpStats
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return nil, st, err
	}
	defer pm.Close()
	var runs []Run
	var entries []*pagemap.PagemapEntry
	for _, a := range areas {
		if a.Dumpable() {
			st.PagesScanned += (a.End() - a.Start()) / PageSize
		}
		r, err := PageRuns(pm, a)
		if err != nil {
			return nil, st, fmt.Errorf("pid %d: %w", pid, err)
		}
		runs = append(runs, r...)
		// An entry never crosses a VMA: restore checks each lies in one.
		for _, m := range mergeRuns(r) {
			entries = append(entries, &pagemap.PagemapEntry{
				Vaddr:         proto.Uint64(m.Addr),
				CompatNrPages: proto.Uint32(0),
				NrPages:       proto.Uint64(m.Pages),
				Flags:         proto.Uint32(PEPresent),
			})
			st.PagesWritten += m.Pages
		}
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
	free <- make([]byte, size)
	free <- make([]byte, size)
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
