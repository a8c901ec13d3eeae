package mem

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/kerndat"
	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/proc"
)

// Write tracking between the iterations of a chain (pre-dump, then
// pre-dump or dump --track-mem --prev-images-dir). Each iteration asks
// which pages were written since the previous one and re-arms the
// tracking before the tree runs again.
//
// Two kernel mechanisms answer that. Soft-dirty (criu's): the pagemap's
// bit 55, cleared by writing 4 to /proc/PID/clear_refs; the kernels here
// lack it. userfaultfd in WP_ASYNC mode (Linux 6.7): the private VMAs are
// registered for write protection with a userfaultfd created inside the
// task (it is bound to the caller's mm), the kernel resolves the write
// faults itself, and PAGEMAP_SCAN(PAGE_IS_WRITTEN, WP_MATCHING) lists the
// pages written and protects them again in one call. The tracking lasts
// as long as the userfaultfd is open: between iterations a small holder
// process keeps it (trackhold.go).
//
// What the tracker does not cover is saved whole: a VMA without the
// "uw" flag (mapped, moved by mremap or split off after the last
// iteration; registration is dropped by mremap and not inherited by
// fork), a process without a tracker (forked since, or whose holder is
// gone), a pid whose process started after the parent dump.

// TrackMethod names how written pages are found.
type TrackMethod string

const (
	TrackUffd      TrackMethod = "uffd-wp-async" // PAGEMAP_SCAN + userfaultfd WP_ASYNC
	TrackSoftDirty TrackMethod = "soft-dirty"    // pagemap bit 55 + clear_refs
	TrackNone      TrackMethod = ""
)

// Tracking returns the method this kernel offers, userfaultfd first (it
// needs nothing of the task but a registration), and why there is none.
func Tracking() (TrackMethod, string) {
	if f, ok := kerndat.Lookup(kerndat.UffdWPAsync); ok && f.OK {
		if p, ok := kerndat.Lookup(kerndat.PagemapScan); ok && p.OK {
			return TrackUffd, "PAGEMAP_SCAN with userfaultfd WP_ASYNC"
		}
	}
	if f, ok := kerndat.Lookup(kerndat.SoftDirty); ok && f.OK {
		return TrackSoftDirty, "soft-dirty bits (clear_refs)"
	}
	return TrackNone, "neither soft-dirty (CONFIG_MEM_SOFT_DIRTY) nor PAGEMAP_SCAN with userfaultfd WP_ASYNC (Linux 6.7)"
}

// Tracker is the write tracking of one process.
type Tracker struct {
	Pid    int
	Start  uint64 // start time (/proc/PID/stat): a reused pid is another process
	Method TrackMethod
	uffd   *os.File // TrackUffd: the userfaultfd bound to the process's mm
	// Armed is set once the tracker covers the process: a later
	// iteration may trust what it says was not written.
	Armed bool
}

// Injector runs a system call inside a seized task (ptrace.Task.Call).
type Injector interface {
	Call(name string, nr uintptr, args ...uint64) (uint64, error)
}

// NewTracker makes the tracking of a seized process: with userfaultfd,
// one is created inside it (injected), copied out with pidfd_getfd and
// closed there again, so that the process's fd table is as it was.
func NewTracker(tk Injector, pid int, start uint64, method TrackMethod) (*Tracker, error) {
	t := &Tracker{Pid: pid, Start: start, Method: method}
	if method != TrackUffd {
		return t, nil
	}
	flags := uint64(unix.O_CLOEXEC | unix.O_NONBLOCK)
	fd, err := tk.Call("userfaultfd", unix.SYS_USERFAULTFD, flags)
	if err != nil && errors.Is(err, unix.EPERM) {
		// vm.unprivileged_userfaultfd=0 and a task without
		// CAP_SYS_PTRACE: user-mode faults are all WP_ASYNC needs.
		fd, err = tk.Call("userfaultfd", unix.SYS_USERFAULTFD, flags|linux.UffdUserModeOnly)
	}
	if err != nil {
		return nil, fmt.Errorf("track memory of pid %d: %w", pid, err)
	}
	f, gerr := stealFd(pid, int(fd))
	if _, err := tk.Call("close", unix.SYS_CLOSE, fd); err != nil && gerr == nil {
		gerr = err
	}
	if gerr != nil {
		if f != nil {
			f.Close()
		}
		return nil, fmt.Errorf("track memory of pid %d: %w", pid, gerr)
	}
	if err := uffdAPI(f, linux.UffdFeatureWPAsync|linux.UffdFeatureWPUnpopulated); err != nil {
		f.Close()
		return nil, fmt.Errorf("track memory of pid %d: UFFDIO_API WP_ASYNC: %w", pid, err)
	}
	t.uffd = f
	return t, nil
}

// AdoptTracker wraps a userfaultfd kept by the holder.
func AdoptTracker(pid int, start uint64, uffd *os.File) *Tracker {
	return &Tracker{Pid: pid, Start: start, Method: TrackUffd, uffd: uffd, Armed: true}
}

// File is the userfaultfd of the tracker (nil for soft-dirty).
func (t *Tracker) File() *os.File { return t.uffd }

// Close ends the tracking (the kernel unregisters the ranges).
func (t *Tracker) Close() {
	if t != nil && t.uffd != nil {
		t.uffd.Close()
		t.uffd = nil
	}
}

func stealFd(pid, fd int) (*os.File, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	nfd, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_getfd fd %d of pid %d: %w", fd, pid, err)
	}
	return os.NewFile(uintptr(nfd), fmt.Sprintf("userfaultfd of pid %d", pid)), nil
}

// pmUffdWP is PM_UFFD_WP, bit 57 of a pagemap entry; swpPteMarker is
// SWP_PTE_MARKER, the last swap type (include/linux/swap.h: 32 types, the
// special ones at the top, the marker highest), shown in the entry's low
// 5 bits when the reader may see frames.
const (
	pmUffdWP     = 1 << 57
	swpPteMarker = 31
)

// uffdMarker reports whether a pagemap entry is a userfaultfd
// write-protect marker: a page that is not there (never populated, or
// zapped by MADV_DONTNEED while protected), which pagemap shows as
// swapped. A reader who may not see frames cannot tell it from a page
// really swapped out: Plan saves those with their data.
func uffdMarker(pme uint64) bool {
	return pme&(linux.PmPresent|linux.PmSwap|pmUffdWP) == linux.PmSwap|pmUffdWP && pme&0x1f == swpPteMarker && pme&linux.PmPFNMask>>5 != 0
}

// trackable reports whether an area's writes are tracked: a private
// mapping whose pages the dump saves, not the vDSO.
func trackable(a *Area) bool {
	return a.Dumpable() && !a.Has(AreaVDSO|AreaVsyscall)
}

// vmaOf returns the smaps VMA holding addr.
func vmaOf(smaps []proc.VMA, addr uint64) (proc.VMA, bool) {
	k := sort.Search(len(smaps), func(i int) bool { return smaps[i].End > addr })
	if k < len(smaps) && smaps[k].Start <= addr {
		return smaps[k], true
	}
	return proc.VMA{}, false
}

// covered reports whether the tracker has watched a since it was armed.
func (t *Tracker) covered(a *Area, smaps []proc.VMA) bool {
	if t == nil || !t.Armed {
		return false
	}
	switch t.Method {
	case TrackUffd:
		v, ok := vmaOf(smaps, a.Start())
		return ok && t.uffd != nil && v.HasFlag("uw")
	case TrackSoftDirty:
		return true // a VMA mapped since reads as all soft-dirty (VM_SOFTDIRTY)
	}
	return false
}

// written returns the ranges of a written since the tracker was armed,
// sorted; with userfaultfd they are protected again by the same scan.
// Swapped pages count as written: their data is saved every time (a
// marker that a reader without CAP_SYS_ADMIN cannot tell from a swapped
// page is then saved as the zeros it reads as).
func (t *Tracker) written(pm *os.File, a *Area) ([][2]uint64, error) {
	var out [][2]uint64
	add := func(lo, hi uint64) {
		if l := len(out); l > 0 && out[l-1][1] == lo {
			out[l-1][1] = hi
			return
		}
		out = append(out, [2]uint64{lo, hi})
	}
	vec := make([]linux.PageRegion, 256)
	var swapped [][2]uint64
	for at := a.Start(); at < a.End(); {
		n, walked, err := pagemapScan(pm, at, a.End(), linux.PageIsSwapped, 0, vec)
		if err != nil {
			return nil, fmt.Errorf("PAGEMAP_SCAN(SWAPPED) at %#x of pid %d: %w", at, t.Pid, err)
		}
		for _, r := range vec[:n] {
			swapped = append(swapped, [2]uint64{r.Start, r.End})
		}
		if walked <= at {
			break
		}
		at = walked
	}
	switch t.Method {
	case TrackUffd:
		for at := a.Start(); at < a.End(); {
			n, walked, err := scanWritten(pm, at, a.End(), vec)
			if err != nil {
				return nil, fmt.Errorf("PAGEMAP_SCAN(WRITTEN, WP_MATCHING) at %#x of pid %d: %w", at, t.Pid, err)
			}
			for _, r := range vec[:n] {
				add(r.Start, r.End)
			}
			if walked <= at {
				return nil, fmt.Errorf("PAGEMAP_SCAN at %#x of pid %d: walk ended at %#x", at, t.Pid, walked)
			}
			at = walked
		}
	case TrackSoftDirty:
		buf := make([]byte, 8*pagemapChunk)
		for at := a.Start(); at < a.End(); {
			n := min((a.End()-at)/PageSize, pagemapChunk)
			b := buf[:n*8]
			if _, err := pm.ReadAt(b, int64(at/PageSize*8)); err != nil {
				return nil, fmt.Errorf("read pagemap of pid %d at %#x: %w", t.Pid, at, err)
			}
			for i := uint64(0); i < n; i++ {
				if binary.LittleEndian.Uint64(b[i*8:])&linux.PmSoftDirty != 0 {
					add(at+i*PageSize, at+(i+1)*PageSize)
				}
			}
			at += n * PageSize
		}
	}
	if len(swapped) > 0 {
		out = append(out, swapped...)
		sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	}
	return out, nil
}

// arm makes the tracker watch every trackable area from now on: with
// userfaultfd the areas not registered yet are registered and
// write-protected (the others were protected again by their scan); with
// soft-dirty the bits are cleared. An area the kernel refuses to
// register stays untracked: the next iteration saves it whole.
func (t *Tracker) arm(pm *os.File, areas []*Area, smaps []proc.VMA) error {
	switch t.Method {
	case TrackSoftDirty:
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", t.Pid), []byte("4"), 0); err != nil {
			return fmt.Errorf("clear soft-dirty bits of pid %d: %w", t.Pid, err)
		}
	case TrackUffd:
		for _, a := range areas {
			if !trackable(a) {
				continue
			}
			if v, ok := vmaOf(smaps, a.Start()); ok && v.HasFlag("uw") && t.Armed {
				continue
			}
			if err := uffdRegisterWP(t.uffd, a.Start(), a.End()); err != nil {
				if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EPERM) {
					continue
				}
				return fmt.Errorf("register %#x-%#x of pid %d for write tracking: %w", a.Start(), a.End(), t.Pid, err)
			}
			// Only the populated runs: WP_UNPOPULATED would put a marker
			// in every empty page table entry (page tables for a whole
			// reservation of terabytes); a page populated later has no
			// protection bit, and so reads as written, as it should.
			err := populated(pm, a.Start(), a.End(), func(lo, hi uint64) error {
				return uffdWriteProtect(t.uffd, lo, hi)
			})
			if err != nil {
				return fmt.Errorf("write-protect %#x-%#x of pid %d: %w", a.Start(), a.End(), t.Pid, err)
			}
		}
	}
	t.Armed = true
	return nil
}
