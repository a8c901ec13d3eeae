package ns

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mqAttr is struct mq_attr (include/uapi/linux/mqueue.h).
type mqAttr struct {
	Flags, Maxmsg, Msgsize, Curmsgs int64
	_                               [4]int64
}

// past is an absolute timeout already gone: the mq calls never block.
var past = unix.Timespec{}

func mqOpen(name string, flags int, mode uint32, attr *mqAttr) (int, error) {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return -1, err
	}
	fd, _, e := unix.Syscall6(unix.SYS_MQ_OPEN, uintptr(unsafe.Pointer(p)), uintptr(flags), uintptr(mode), uintptr(unsafe.Pointer(attr)), 0, 0)
	if e != 0 {
		return -1, os.NewSyscallError("mq_open", e)
	}
	return int(fd), nil
}

func mqUnlink(name string) error {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return err
	}
	if _, _, e := unix.Syscall(unix.SYS_MQ_UNLINK, uintptr(unsafe.Pointer(p)), 0, 0); e != 0 {
		return os.NewSyscallError("mq_unlink", e)
	}
	return nil
}

func mqGetattr(fd int) (mqAttr, error) {
	var a mqAttr
	if _, _, e := unix.Syscall(unix.SYS_MQ_GETSETATTR, uintptr(fd), 0, uintptr(unsafe.Pointer(&a))); e != 0 {
		return a, os.NewSyscallError("mq_getsetattr", e)
	}
	return a, nil
}

func mqSend(fd int, b []byte, prio uint32) error {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	if _, _, e := unix.Syscall6(unix.SYS_MQ_TIMEDSEND, uintptr(fd), uintptr(p), uintptr(len(b)), uintptr(prio), uintptr(unsafe.Pointer(&past)), 0); e != 0 {
		return os.NewSyscallError("mq_timedsend", e)
	}
	return nil
}

func mqReceive(fd int, b []byte) (int, uint32, error) {
	var prio uint32
	n, _, e := unix.Syscall6(unix.SYS_MQ_TIMEDRECEIVE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&prio)), uintptr(unsafe.Pointer(&past)), 0)
	if e != 0 {
		return 0, 0, os.NewSyscallError("mq_timedreceive", e)
	}
	return int(n), prio, nil
}
