package files

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
)

// kcmpEpollTfd is KCMP_EPOLL_TFD (include/uapi/linux/kcmp.h).
const kcmpEpollTfd = 7

// setTimerfdTicks sets the expirations a timerfd reports to its next read.
func setTimerfdTicks(fd int, ticks uint64) error {
	return linux.IoctlPtr(fd, "TFD_IOC_SET_TICKS", linux.TfdIocSetTicks, unsafe.Pointer(&ticks))
}

// kcmpEpollSlot is struct kcmp_epoll_slot (include/uapi/linux/kcmp.h).
type kcmpEpollSlot struct {
	efd, tfd, toff uint32
}

// epollTargetIs reports whether fd tfd of pid is the file watched by the
// toff-th item that epoll fd epfd of pid registered under number tfd.
// The error is EBADF when fd tfd is closed, ENOENT when there is no such
// item.
func epollTargetIs(pid, epfd, tfd, toff int) (bool, error) {
	slot := kcmpEpollSlot{efd: uint32(epfd), tfd: uint32(tfd), toff: uint32(toff)}
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid), uintptr(pid), kcmpEpollTfd,
		uintptr(tfd), uintptr(unsafe.Pointer(&slot)), 0)
	if e != 0 {
		return false, e
	}
	return r == 0, nil
}
