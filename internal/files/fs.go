package files

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// DumpFS enters the cwd and root of process pid into the table and
// returns their file ids (fs-N.img; RestoreFS is the other direction).
func (t *Table) DumpFS(pid int) (cwdID, rootID uint32, err error) {
	// Through the magic link: a cwd in a removed directory (a shell in a
	// deleted build directory) is a ghost directory, as in criu.
	if cwdID, err = t.AddLink(fmt.Sprintf("/proc/%d/cwd", pid), unix.O_RDONLY|unix.O_DIRECTORY); err != nil {
		if err := t.Refuse(fmt.Errorf("cwd of pid %d: %w", pid, err)); err != nil {
			return 0, 0, err
		}
	}
	root, err := os.Readlink(fmt.Sprintf("/proc/%d/root", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("root of pid %d: %w", pid, err)
	}
	add := t.AddPath
	if t.Mounts != nil {
		// "/" of its own mount namespace, not stasis'.
		root, add = fmt.Sprintf("/proc/%d/root", pid), t.AddLink
	}
	if rootID, err = add(root, unix.O_RDONLY|unix.O_DIRECTORY); err != nil {
		return 0, 0, fmt.Errorf("root of pid %d: %w", pid, err)
	}
	return cwdID, rootID, nil
}
