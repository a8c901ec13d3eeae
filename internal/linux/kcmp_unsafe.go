package linux

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// kcmpEpollSlot is struct kcmp_epoll_slot (include/uapi/linux/kcmp.h).
type kcmpEpollSlot struct {
	efd, tfd, toff uint32
}

// KcmpEpollTarget reports whether fd tfd of pid is the file watched by
// the toff-th item that epoll fd epfd of pid registered under number tfd
// (KCMP_EPOLL_TFD). The error wraps EBADF when fd tfd is closed, ENOENT
// when there is no such item.
func KcmpEpollTarget(pid, epfd, tfd, toff int) (bool, error) {
	slot := kcmpEpollSlot{efd: uint32(epfd), tfd: uint32(tfd), toff: uint32(toff)}
	// The slot's address is converted in the syscall expression, not
	// through kcmp(), so that the slot cannot move before the kernel
	// reads it.
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid), uintptr(pid), KcmpEpollTfd,
		uintptr(tfd), uintptr(unsafe.Pointer(&slot)), 0)
	if e != 0 {
		return false, os.NewSyscallError("kcmp KCMP_EPOLL_TFD", e)
	}
	return r == 0, nil
}

// KcmpEpollTargetOf reports whether fd fd1 of pid1 is the file watched by
// the toff-th item that epoll fd epfd of pid2 registered under number
// tfd: how the target of an item whose number was closed or taken by
// another file is found among the fds of the tree.
func KcmpEpollTargetOf(pid1, fd1, pid2, epfd, tfd, toff int) (bool, error) {
	slot := kcmpEpollSlot{efd: uint32(epfd), tfd: uint32(tfd), toff: uint32(toff)}
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), KcmpEpollTfd,
		uintptr(fd1), uintptr(unsafe.Pointer(&slot)), 0)
	if e != 0 {
		return false, os.NewSyscallError("kcmp KCMP_EPOLL_TFD", e)
	}
	return r == 0, nil
}
