package linux

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// RawWait4 is wait4(2) as a raw system call, retried on EINTR, for a
// tracer waiting for a ptrace stop: those come within microseconds, so
// keeping the Go scheduler out (no hand-off of the tracer's P) is cheaper,
// and a stop that takes long only holds the tracer's own thread.
func RawWait4(pid int, ws *unix.WaitStatus, options int) (int, error) {
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_WAIT4, uintptr(pid), uintptr(unsafe.Pointer(ws)), uintptr(options), 0, 0, 0)
		switch e {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		}
		return int(r), os.NewSyscallError("wait4", e)
	}
}

// IoctlPtr is ioctl(fd, req, arg) for a request whose argument is a
// pointer, retried on EINTR; name (the request's name, e.g.
// "TFD_IOC_SET_TICKS") goes into the error. The pointer is converted in
// the syscall expression itself, so what it points to cannot move first.
func IoctlPtr(fd int, name string, req uint, arg unsafe.Pointer) error {
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return os.NewSyscallError("ioctl "+name, e)
	}
}
