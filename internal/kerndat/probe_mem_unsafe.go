package kerndat

import (
	"encoding/binary"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
)

// probePagemap maps four fresh pages, writes pages 0 and 2, then asks
// PAGEMAP_SCAN for the present ones (expecting exactly those two regions)
// and reads the soft-dirty bit of page 0 from /proc/self/pagemap. With
// CONFIG_MEM_SOFT_DIRTY a new VMA is VM_SOFTDIRTY, so a written page always
// reports bit 55; without it the bit is always clear.
func probePagemap() []Feature {
	page := os.Getpagesize()
	mem, err := newScratch(4 * page)
	if err != nil {
		return withInfo(missing(PagemapScan, "mmap: %v", err), missing(SoftDirty, "mmap: %v", err))
	}
	defer mem.free()
	mem.b[0], mem.b[2*page] = 1, 1
	start := uint64(mem.addr(0))

	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return withInfo(missing(PagemapScan, "%v", err), missing(SoftDirty, "%v", err))
	}
	defer f.Close()
	return withInfo(pagemapScanFeature(f, start, uint64(page)), softDirtyFeature(f, start, uint64(page)))
}

func pagemapScanFeature(f *os.File, start, page uint64) Feature {
	s, err := newScratch(4096)
	if err != nil {
		return missing(PagemapScan, "mmap: %v", err)
	}
	defer s.free()
	const vecOff, vecLen = 512, 8
	arg := at[linux.PmScanArg](s, 0)
	*arg = linux.PmScanArg{
		Size: uint64(unsafe.Sizeof(*arg)), Start: start, End: start + 4*page,
		Vec: uint64(s.addr(vecOff)), VecLen: vecLen,
		CategoryMask: linux.PageIsPresent, ReturnMask: linux.PageIsPresent,
	}
	n, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), linux.PagemapScan, s.addr(0))
	if e != 0 {
		return missing(PagemapScan, "ioctl(PAGEMAP_SCAN): %v", e)
	}
	var got []linux.PageRegion
	for i := 0; i < int(n) && i < vecLen; i++ {
		got = append(got, *at[linux.PageRegion](s, vecOff+i*int(unsafe.Sizeof(linux.PageRegion{}))))
	}
	want := []linux.PageRegion{
		{Start: start, End: start + page, Categories: linux.PageIsPresent},
		{Start: start + 2*page, End: start + 3*page, Categories: linux.PageIsPresent},
	}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		return missing(PagemapScan, "PAGEMAP_SCAN found %d regions %x, want pages 0 and 2 of 4", n, got)
	}
	return ok(PagemapScan, "found the 2 written pages of 4")
}

func softDirtyFeature(f *os.File, start, page uint64) Feature {
	var b [8]byte
	if _, err := f.ReadAt(b[:], int64(start/page*8)); err != nil {
		return missing(SoftDirty, "read pagemap: %v", err)
	}
	e := binary.NativeEndian.Uint64(b[:])
	switch {
	case e&linux.PmPresent == 0:
		return missing(SoftDirty, "pagemap says a written page is not present (%#x)", e)
	case e&linux.PmSoftDirty == 0:
		return missing(SoftDirty, "pagemap bit 55 clear on a freshly written page: no CONFIG_MEM_SOFT_DIRTY")
	}
	return ok(SoftDirty, "pagemap bit 55 set on a freshly written page")
}

// probeUffd opens two userfaultfds: UFFDIO_API may be issued once per fd,
// so one asks for no features (the kernel then reports all it has) and the
// other enables WP_ASYNC, which is what write tracking needs.
func probeUffd() []Feature {
	// criu's uffd-noncoop: the events a lazy restore needs to follow a
	// tree that changes its memory layout (criu/uffd.c
	// NEED_UFFD_API_FEATURES).
	const uffdFeaturesNonCooperative = linux.UffdFeatureEventFork | linux.UffdFeatureEventRemap |
		linux.UffdFeatureEventRemove | linux.UffdFeatureEventUnmap

	all, how, err := uffdAPI(0)
	if err != nil {
		return withInfo(missing(Userfaultfd, "%v", err), missing(UffdWPAsync, "%v", err), missing(UffdNonCoop, "%v", err))
	}
	uf := ok(Userfaultfd, fmt.Sprintf("features %#x%s", all, how))

	nc := ok(UffdNonCoop, "EVENT_FORK|EVENT_REMAP|EVENT_REMOVE|EVENT_UNMAP")
	if lack := uffdFeaturesNonCooperative &^ all; lack != 0 {
		nc = missing(UffdNonCoop, "features %#x lack %#x", all, lack)
	}

	wp := ok(UffdWPAsync, "WP_ASYNC|WP_UNPOPULATED enabled")
	if all&linux.UffdFeatureWPAsync == 0 {
		wp = missing(UffdWPAsync, "features %#x lack WP_ASYNC (1<<15)", all)
	} else if _, _, err := uffdAPI(linux.UffdFeatureWPAsync | linux.UffdFeatureWPUnpopulated); err != nil {
		wp = missing(UffdWPAsync, "enabling WP_ASYNC|WP_UNPOPULATED: %v", err)
	}
	return withInfo(uf, wp, nc)
}

func uffdAPI(features uint64) (uint64, string, error) {
	how := ""
	fd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK, 0, 0)
	if e == unix.EPERM {
		// vm.unprivileged_userfaultfd=0 and no CAP_SYS_PTRACE: user-mode
		// faults only, which is all stasis needs.
		fd, _, e = unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK|linux.UffdUserModeOnly, 0, 0)
		how = " (UFFD_USER_MODE_ONLY)"
	}
	if e != 0 {
		return 0, "", fmt.Errorf("userfaultfd: %v", e)
	}
	defer unix.Close(int(fd))
	s, err := newScratch(4096)
	if err != nil {
		return 0, "", err
	}
	defer s.free()
	arg := at[linux.UffdioAPIArg](s, 0)
	*arg = linux.UffdioAPIArg{API: linux.UffdAPI, Features: features}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, fd, linux.UffdioAPI, s.addr(0)); e != 0 {
		return 0, "", fmt.Errorf("UFFDIO_API(features %#x): %v", features, e)
	}
	return arg.Features, how, nil
}
