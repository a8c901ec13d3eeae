package core

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// getRobustList reads another thread's robust futex list registration.
// The pointers are converted in the syscall expression itself, so that
// the variables cannot move (stack growth) before the kernel writes them.
func getRobustList(tid int) (head, size uint64, err error) {
	_, _, e := unix.Syscall(unix.SYS_GET_ROBUST_LIST, uintptr(tid), uintptr(unsafe.Pointer(&head)), uintptr(unsafe.Pointer(&size)))
	if e != 0 {
		return 0, 0, e
	}
	return head, size, nil
}
