package linux

import (
	"os"

	"golang.org/x/sys/unix"
)

// OpenFile is os.OpenFile (close-on-exec, the same *os.PathError) for
// files that are read and written with blocking calls: images, /proc
// files. os.OpenFile offers every file to the runtime's poller, which for
// a regular file costs four more system calls per open (two fcntl to set
// O_NONBLOCK, an epoll_ctl that fails with EPERM, two fcntl to clear it);
// a dump or restore of a tree opens thousands.
func OpenFile(path string, flags int, mode uint32) (*os.File, error) {
	fd, err := Open(path, flags|unix.O_CLOEXEC, mode)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}
