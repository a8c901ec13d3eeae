package linux

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// GetRobustList returns the robust futex list registration of thread tid
// (get_robust_list(2), which x/sys/unix lacks): the list head's address
// and its size. The pointers are converted in the syscall expression
// itself, so that the variables cannot move (stack growth) before the
// kernel writes them.
func GetRobustList(tid int) (head, size uint64, err error) {
	_, _, e := unix.Syscall(unix.SYS_GET_ROBUST_LIST, uintptr(tid), uintptr(unsafe.Pointer(&head)), uintptr(unsafe.Pointer(&size)))
	if e != 0 {
		return 0, 0, os.NewSyscallError("get_robust_list", e)
	}
	return head, size, nil
}
