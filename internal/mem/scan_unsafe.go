package mem

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
)

// pagemapScan runs one PAGEMAP_SCAN on the pagemap file f for the pages
// of [start, end) in every category of all and some category of anyof
// (0: any page), filling vec; it returns the regions found and where the
// walk stopped (it stops early when vec is full).
func pagemapScan(f *os.File, start, end, all, anyof uint64, vec []linux.PageRegion) (int, uint64, error) {
	arg := linux.PmScanArg{
		Start: start, End: end,
		Vec: uint64(uintptr(unsafe.Pointer(&vec[0]))), VecLen: uint64(len(vec)),
		CategoryMask: all, CategoryAnyofMask: anyof, ReturnMask: all | anyof,
	}
	arg.Size = uint64(unsafe.Sizeof(arg))
	n, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), linux.PagemapScan, uintptr(unsafe.Pointer(&arg)))
	if e != 0 {
		return 0, 0, e
	}
	return int(n), arg.WalkEnd, nil
}
