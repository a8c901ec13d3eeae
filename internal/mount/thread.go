package mount

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// inMountNS runs fn on a fresh OS thread that has joined the mount
// namespace of process pid (and, for the restore's mounts that take the
// caller's namespace, its ipc, network and cgroup namespaces: mqueue,
// sysfs, cgroup). The thread first stops sharing its root and cwd with
// the rest of stasis (unshare CLONE_FS), which setns needs for a mount
// namespace; it dies with fn's goroutine, which ends locked, so no other
// goroutine ever runs there. What fn does by path resolves in pid's
// mount namespace, from its root.
func inMountNS(pid int, others bool, fn func() error) error {
	names := []string{"mnt"}
	if others {
		names = append(names, "ipc", "net", "cgroup")
	}
	flags := map[string]int{"mnt": unix.CLONE_NEWNS, "ipc": unix.CLONE_NEWIPC, "net": unix.CLONE_NEWNET, "cgroup": unix.CLONE_NEWCGROUP}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, n := range names {
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, n))
		if err != nil {
			return fmt.Errorf("%s namespace of pid %d: %w", n, pid, err)
		}
		files = append(files, f)
	}
	done := make(chan error, 1)
	go func() {
		// Never unlocked: the thread ends with the goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			done <- fmt.Errorf("join the mount namespace of pid %d: %w", pid, os.NewSyscallError("unshare CLONE_FS", err))
			return
		}
		for i, f := range files {
			if err := unix.Setns(int(f.Fd()), flags[names[i]]); err != nil {
				done <- fmt.Errorf("join the %s namespace of pid %d: %w", names[i], pid, os.NewSyscallError("setns", err))
				return
			}
		}
		done <- fn()
	}()
	return <-done
}
