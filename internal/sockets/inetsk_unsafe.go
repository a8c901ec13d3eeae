package sockets

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// getsockoptBytes reads a socket option of any layout into b and returns
// its length: x/sys has no call for TCP_REPAIR_WINDOW, the bytes of
// TCP_INFO it drops (the window scales) or NETLINK_LIST_MEMBERSHIPS.
func getsockoptBytes(fd, level, opt int, b []byte) (int, error) {
	n := uint32(len(b))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&b[0])), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// setsockoptBytes sets a socket option of any layout from b.
func setsockoptBytes(fd, level, opt int, b []byte) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0)
	if e != 0 {
		return e
	}
	return nil
}
