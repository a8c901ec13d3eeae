package ptrace

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// RunLocked runs f on a fresh goroutine locked to its OS thread and waits
// for it. The thread is never unlocked, so the runtime discards it when f
// returns: whatever is still attached is detached by the kernel, and no
// other goroutine ever runs on a thread that traced something.
//
// The main thread is the exception: the runtime parks it instead of
// discarding it. If the goroutine lands there, it keeps the main thread
// locked (idle) while f runs on another thread.
func RunLocked(f func() error) error {
	defer quietStops()()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			errc <- RunLocked(f)
			runtime.UnlockOSThread()
			return
		}
		errc <- f()
	}()
	return <-errc
}
