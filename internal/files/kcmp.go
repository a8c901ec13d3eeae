package files

import "golang.org/x/sys/unix"

// kcmpFile is KCMP_FILE (include/uapi/linux/kcmp.h).
const kcmpFile = 0

// sameFile reports whether fd1 of pid1 and fd2 of pid2 are one open file
// description.
func sameFile(pid1, fd1, pid2, fd2 int) (bool, error) {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), kcmpFile, uintptr(fd1), uintptr(fd2), 0)
	if e != 0 {
		return false, e
	}
	return r == 0, nil
}
