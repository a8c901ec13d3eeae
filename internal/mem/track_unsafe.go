package mem

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
)

// userfaultfd ioctls of the write tracking (include/uapi/linux/userfaultfd.h).
const (
	uffdioRegister     = 0xC020AA00 // _IOWR(UFFDIO, _UFFDIO_REGISTER, struct uffdio_register)
	uffdioWriteprotect = 0xC018AA06 // _IOWR(UFFDIO, _UFFDIO_WRITEPROTECT, struct uffdio_writeprotect)
	uffdRegisterModeWP = 2          // UFFDIO_REGISTER_MODE_WP
	uffdWPModeWP       = 1          // UFFDIO_WRITEPROTECT_MODE_WP
	pmScanWPMatching   = 1          // PM_SCAN_WP_MATCHING
	pmScanCheckWPAsync = 2          // PM_SCAN_CHECK_WPASYNC
)

func uffdIoctl(f *os.File, req uintptr, arg unsafe.Pointer) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), req, uintptr(arg))
	if e != 0 {
		return e
	}
	return nil
}

// uffdAPI enables features on a fresh userfaultfd (UFFDIO_API, once).
func uffdAPI(f *os.File, features uint64) error {
	arg := linux.UffdioAPIArg{API: linux.UffdAPI, Features: features}
	return uffdIoctl(f, linux.UffdioAPI, unsafe.Pointer(&arg))
}

// uffdRegisterWP registers [start, end) of the uffd's mm for write
// protection.
func uffdRegisterWP(f *os.File, start, end uint64) error {
	arg := struct{ Start, Len, Mode, Ioctls uint64 }{start, end - start, uffdRegisterModeWP, 0}
	return uffdIoctl(f, uffdioRegister, unsafe.Pointer(&arg))
}

// uffdWriteProtect write-protects [start, end): the next write to any
// page there is recorded (WP_ASYNC resolves it in the kernel).
func uffdWriteProtect(f *os.File, start, end uint64) error {
	arg := struct{ Start, Len, Mode uint64 }{start, end - start, uffdWPModeWP}
	return uffdIoctl(f, uffdioWriteprotect, unsafe.Pointer(&arg))
}

// scanWritten runs one PAGEMAP_SCAN for the written pages of [start, end)
// that also write-protects them again (WP_MATCHING), so that the next
// scan finds only the pages written after this one.
func scanWritten(f *os.File, start, end uint64, vec []linux.PageRegion) (int, uint64, error) {
	arg := linux.PmScanArg{
		Flags: pmScanWPMatching | pmScanCheckWPAsync,
		Start: start, End: end,
		Vec: uint64(uintptr(unsafe.Pointer(&vec[0]))), VecLen: uint64(len(vec)),
		CategoryMask: linux.PageIsWritten, ReturnMask: linux.PageIsWritten,
	}
	arg.Size = uint64(unsafe.Sizeof(arg))
	n, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), linux.PagemapScan, uintptr(unsafe.Pointer(&arg)))
	if e != 0 {
		return 0, 0, e
	}
	return int(n), arg.WalkEnd, nil
}
