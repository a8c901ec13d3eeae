package linux

import "golang.org/x/sys/unix"

// kcmp types (include/uapi/linux/kcmp.h).
const (
	KcmpFile    = 0
	KcmpVM      = 1
	KcmpFiles   = 2
	KcmpFS      = 3
	KcmpSighand = 4
)

// Kcmp reports whether two processes share the kernel object of kind typ
// (for KcmpFile, the open file descriptions of fd idx1 of pid1 and fd
// idx2 of pid2).
func Kcmp(pid1, pid2, typ, idx1, idx2 int) (bool, error) {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), uintptr(typ), uintptr(idx1), uintptr(idx2), 0)
	if e != 0 {
		return false, e
	}
	return r == 0, nil
}
