package files

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// checkDevicePath checks, as criu does, that the path a device fd is
// dumped by still names that device node in the task's root (the
// restore opens the path): a path now naming another node of the same
// device (a /dev made again, a node bind-mounted over) is accepted with
// --evasive-devices only; one naming another device or nothing is
// refused.
func (t *Table) checkDevicePath(fd *Fd, name string) error {
	typ := fd.Stat.Mode & unix.S_IFMT
	if typ != unix.S_IFCHR && typ != unix.S_IFBLK || fd.Via != nil {
		return nil
	}
	var st unix.Stat_t
	p := fmt.Sprintf("/proc/%d/root%s", fd.Pid, name)
	err := unix.Stat(p, &st)
	switch {
	case err == nil && st.Dev == fd.Stat.Dev && st.Ino == fd.Stat.Ino:
		return nil
	case err == nil && st.Mode&unix.S_IFMT == typ && st.Rdev == fd.Stat.Rdev:
		if t.Opts.EvasiveDevices {
			return nil
		}
		return t.Refuse(fmt.Errorf("%s: %s now names another node of device %d:%d; --evasive-devices takes any path to the same device: %w",
			fd, name, unix.Major(st.Rdev), unix.Minor(st.Rdev), ErrUnsupported))
	case err == nil:
		return t.Refuse(fmt.Errorf("%s: %s now names another file than device %d:%d it opened: %w",
			fd, name, unix.Major(fd.Stat.Rdev), unix.Minor(fd.Stat.Rdev), ErrUnsupported))
	}
	return t.Refuse(fmt.Errorf("%s: device %d:%d was opened as %s, which is gone: %w",
		fd, unix.Major(fd.Stat.Rdev), unix.Minor(fd.Stat.Rdev), name, ErrUnsupported))
}
