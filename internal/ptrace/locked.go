package ptrace

import "runtime"

// RunLocked runs f on a fresh goroutine locked to its OS thread and waits
// for it. The thread is never unlocked, so the kernel discards it when f
// returns: any tracee still attached is detached then, and no other
// goroutine ever runs on a thread that traced something.
func RunLocked(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- f()
	}()
	return <-errc
}
