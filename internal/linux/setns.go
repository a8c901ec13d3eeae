package linux

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// nsNames are the /proc/PID/ns names of the namespace kinds a thread can
// join alone (setns(2): a mount or user namespace needs a thread that
// shares nothing, which a Go thread never is).
var nsNames = map[int]string{unix.CLONE_NEWIPC: "ipc", unix.CLONE_NEWUTS: "uts", unix.CLONE_NEWNET: "net", unix.CLONE_NEWCGROUP: "cgroup"}

// InNamespace runs fn in the namespace of kind nstype (CLONE_NEWIPC,
// CLONE_NEWUTS, CLONE_NEWNET) of pid: directly when stasis is in it
// already, otherwise on an OS thread that joins it for fn and goes back
// to stasis' namespace after (or dies, if it cannot), so that no other
// goroutine ever runs in a foreign namespace. What fn reads through /proc/sys or System V calls is
// the namespace's.
func InNamespace(pid int, nstype int, fn func() error) error {
	name, ok := nsNames[nstype]
	if !ok {
		return fmt.Errorf("join namespace %#x of pid %d: not a kind a thread can join", nstype, pid)
	}
	path := fmt.Sprintf("/proc/%d/ns/%s", pid, name)
	var self, other unix.Stat_t
	if err := unix.Stat(path, &other); err != nil {
		return fmt.Errorf("%s namespace of pid %d: %w", name, pid, os.NewSyscallError("stat", err))
	}
	if err := unix.Stat("/proc/thread-self/ns/"+name, &self); err == nil && self.Ino == other.Ino && self.Dev == other.Dev {
		return fn()
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s namespace of pid %d: %w", name, pid, err)
	}
	defer f.Close()
	done := make(chan error, 1)
	go func() {
		// Unlocked only once back in its own namespace: a thread that
		// ends locked is ended, but for the main thread, which Go keeps
		// (wedged, in the foreign namespace, which it would keep alive
		// and show as the process's in /proc/self/ns).
		runtime.LockOSThread()
		back, err := os.Open("/proc/thread-self/ns/" + name)
		if err != nil {
			done <- fmt.Errorf("%s namespace of stasis: %w", name, err)
			return
		}
		defer back.Close()
		if err := unix.Setns(int(f.Fd()), nstype); err != nil {
			done <- fmt.Errorf("join the %s namespace of pid %d: %w", name, pid, os.NewSyscallError("setns", err))
			return
		}
		err = fn()
		if unix.Setns(int(back.Fd()), nstype) == nil {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	return <-done
}
