package tty

import (
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/tty"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/files"
)

// A pty slave whose master was closed is hung up: its reads give end of
// file, its writes and ioctls EIO, its /dev/pts name is gone. Its entry
// has no termios (TCGETS failed with EIO at dump), as criu writes it.
// The restore makes a new pair, opens its slave and closes the master,
// which hangs the slave up again. The pair takes the lowest free index:
// the dumped one had been given back, and the name is gone anyway.

// hungUp tells whether info is a hung-up pty slave.
func hungUp(info *tty.TtyInfoEntry) bool {
	return info.GetType() == tty.TtyType_PTY && info.GetId()&1 == 0 && info.GetTermios() == nil
}

// openHungUp opens a hung-up pty slave, for the slave of pty index.
func openHungUp(index int, flags uint32) (*os.File, error) {
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("hung-up slave of pty %d: %w", index, os.NewSyscallError("open /dev/ptmx", err))
	}
	defer unix.Close(m) // the close of the master hangs the slave up
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		return nil, fmt.Errorf("hung-up slave of pty %d: %w", index, os.NewSyscallError("ioctl TIOCSPTLCK", err))
	}
	fl := int(flags)&(unix.O_ACCMODE|unix.O_NONBLOCK|unix.O_APPEND|unix.O_NOATIME) | unix.O_NOCTTY | unix.O_CLOEXEC
	fd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(m), unix.TIOCGPTPEER, uintptr(fl))
	if errno != 0 {
		return nil, fmt.Errorf("hung-up slave of pty %d: %w", index, os.NewSyscallError("ioctl TIOCGPTPEER", errno))
	}
	return files.NewAnonFile(int(fd), fmt.Sprintf("/dev/pts/%d (hung up)", index)), nil
}
