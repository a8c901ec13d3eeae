package files

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// getOwnerEx is fcntl(fd, F_GETOWN_EX): the owner's type and pid.
func getOwnerEx(fd int) (typ, pid int, err error) {
	var o struct{ typ, pid int32 }
	if _, _, e := unix.Syscall(unix.SYS_FCNTL, uintptr(fd), unix.F_GETOWN_EX, uintptr(unsafe.Pointer(&o))); e != 0 {
		return 0, 0, os.NewSyscallError("fcntl F_GETOWN_EX", e)
	}
	return int(o.typ), int(o.pid), nil
}

// getOwnerUids is fcntl(fd, F_GETOWNER_UIDS): the owner's uid and euid.
func getOwnerUids(fd int) (uid, euid uint32, err error) {
	var u [2]uint32
	if _, _, e := unix.Syscall(unix.SYS_FCNTL, uintptr(fd), fGetOwnerUids, uintptr(unsafe.Pointer(&u))); e != 0 {
		return 0, 0, os.NewSyscallError("fcntl F_GETOWNER_UIDS", e)
	}
	return u[0], u[1], nil
}
