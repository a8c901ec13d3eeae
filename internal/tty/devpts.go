package tty

import (
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/mount"
)

// Ptys made while the mounts are restored (a container's /dev/console is
// bound from its terminal's slave, which exists only while its master is
// open), kept here until the files restore takes them (pairOf): by the
// devpts instance and index. One restore runs per process.
var prepared = struct {
	sync.Mutex
	m map[ptsKey]*os.File
}{m: map[ptsKey]*os.File{}}

type ptsKey struct {
	dev   uint64 // the devpts instance (st_dev of its ptmx)
	index int
}

func init() { mount.DevptsFile = preparePts }

// preparePts makes pty index of the devpts instance mounted at dir.
func preparePts(dir string, index int) error {
	ptmx := dir + "/ptmx"
	var st unix.Stat_t
	if err := unix.Stat(ptmx, &st); err != nil {
		return os.NewSyscallError("stat "+ptmx, err)
	}
	master, err := openPtmxIndex(ptmx, index)
	if err != nil {
		return err
	}
	if err := unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(master)
		return os.NewSyscallError("ioctl TIOCSPTLCK", err)
	}
	prepared.Lock()
	defer prepared.Unlock()
	prepared.m[ptsKey{uint64(st.Dev), index}] = files.NewAnonFile(master, "/dev/ptmx")
	return nil
}

// takePrepared returns the master preparePts made for index of ptmx's
// instance, or nil.
func takePrepared(ptmx string, index int) *os.File {
	var st unix.Stat_t
	if unix.Stat(ptmx, &st) != nil {
		return nil
	}
	prepared.Lock()
	defer prepared.Unlock()
	k := ptsKey{uint64(st.Dev), index}
	f := prepared.m[k]
	delete(prepared.m, k)
	return f
}

// openPtmxIndex opens ptmx until it gets the pty of index (a new open
// gets the lowest free index), and closes the others.
func openPtmxIndex(ptmx string, index int) (int, error) {
	var extra []int
	defer func() {
		for _, fd := range extra {
			unix.Close(fd)
		}
	}()
	for {
		fd, err := unix.Open(ptmx, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("make pty %d: %w", index, os.NewSyscallError("open "+ptmx, err))
		}
		n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
		if err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("make pty %d: %w", index, os.NewSyscallError("ioctl TIOCGPTN", err))
		}
		switch {
		case n == index:
			return fd, nil
		case n > index:
			unix.Close(fd)
			return -1, fmt.Errorf("make pty %d: /dev/pts/%d is in use on this host (%s): the index a pty had cannot be taken from its holder",
				index, index, ptsHolder(index))
		}
		extra = append(extra, fd)
	}
}
