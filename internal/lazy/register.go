package lazy

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/remote"
)

// The restore's side (restore --lazy-pages): each process's userfaultfd is
// made inside it (a userfaultfd is bound to the caller's mm), taken into
// stasis (pidfd_getfd) and closed there again, so that the process's fd
// table is as in the images; stasis registers the process's lazy areas
// for missing pages and hands the fd to the daemon (criu's setup_uffd,
// whose restorer registers them from inside).

// Register hands the userfaultfd of the restored process t, with areas
// (its VMAs that a lazy restore leaves missing, mem.Image.LazyAreas)
// registered, to the daemon on c.
func Register(c *Conn, t remote.Task, areas [][2]uint64) error {
	uffd, err := open(t)
	if err != nil {
		return fmt.Errorf("lazy pages of pid %d: %w", t.Pid(), err)
	}
	defer uffd.Close()
	for _, a := range areas {
		ioctls, err := registerMissing(uffd, a[0], a[1])
		if err != nil {
			return fmt.Errorf("lazy pages of pid %d: register %#x-%#x for missing pages: %w", t.Pid(), a[0], a[1], err)
		}
		if ioctls&neededIoctls != neededIoctls {
			return fmt.Errorf("lazy pages of pid %d: %#x-%#x: the kernel offers ioctls %#x, without copy, zero page or wake", t.Pid(), a[0], a[1], ioctls)
		}
	}
	return c.Send(t.Pid(), uffd)
}

// open makes a userfaultfd inside t and returns stasis' copy of it.
func open(t remote.Task) (*os.File, error) {
	fd, err := t.Call("userfaultfd", unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK)
	if err != nil {
		return nil, err
	}
	uffd, gerr := getfd(t.HostPid(), int(fd))
	if _, err := t.Call("close", unix.SYS_CLOSE, fd); err != nil && gerr == nil {
		uffd.Close()
		return nil, err
	}
	if gerr != nil {
		return nil, gerr
	}
	// Poison (Linux 6.6) lets the daemon turn the pages it could not
	// serve into SIGBUS; without it they would read as zeroes.
	err = api(uffd, Features|featurePoison)
	if errors.Is(err, unix.EINVAL) {
		err = api(uffd, Features)
	}
	if err != nil {
		uffd.Close()
		return nil, fmt.Errorf("UFFDIO_API (events fork, remap, remove, unmap): %w", err)
	}
	return uffd, nil
}

func getfd(pid, fd int) (*os.File, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	nfd, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_getfd fd %d of pid %d: %w", fd, pid, err)
	}
	return os.NewFile(uintptr(nfd), fmt.Sprintf("userfaultfd of pid %d", pid)), nil
}
