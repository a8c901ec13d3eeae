package files

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// uringSetup is io_uring_setup(2) with its struct io_uring_params as
// bytes (uringParamsSize), which the kernel fills in.
func uringSetup(entries uint32, params *[uringParamsSize]byte) (int, error) {
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(params)), 0)
	if errno != 0 {
		return -1, os.NewSyscallError("io_uring_setup", errno)
	}
	return int(fd), nil
}
