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

// seccompGetFilter reads filter i of tid into buf (PTRACE_SECCOMP_GET_FILTER)
// and returns its number of instructions; an empty buf asks only that.
func seccompGetFilter(tid, i int, buf []byte) (int, error) {
	var p unsafe.Pointer
	if len(buf) > 0 {
		p = unsafe.Pointer(&buf[0])
	}
	r, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(tid), uintptr(i), uintptr(p), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// seccompMetadata is struct seccomp_metadata.
type seccompMetadata struct{ filterOff, flags uint64 }

// seccompGetMetadata fills md for filter md.filterOff of tid.
func seccompGetMetadata(tid int, md *seccompMetadata) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_METADATA, uintptr(tid), unsafe.Sizeof(*md), uintptr(unsafe.Pointer(md)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}
