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
		// Never unlocked: its root and cwd are its own now. A thread
		// that ends locked is ended, but for the main thread, which Go
		// keeps wedged: it goes back to stasis' namespaces first, so as
		// not to keep the foreign ones alive (nor show them as the
		// process's in /proc/self).
		runtime.LockOSThread()
		var back []*os.File
		defer func() {
			for i := len(back) - 1; i >= 0; i-- {
				_ = unix.Setns(int(back[i].Fd()), flags[names[i]])
				back[i].Close()
			}
		}()
		for _, n := range names {
			b, err := os.Open("/proc/thread-self/ns/" + n)
			if err != nil {
				done <- fmt.Errorf("%s namespace of stasis: %w", n, err)
				return
			}
			back = append(back, b)
		}
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
		err := fn()
		done <- err
	}()
	return <-done
}
