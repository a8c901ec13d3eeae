package kerndat

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// onThrowawayThread runs fn on a goroutine locked to an OS thread that the
// runtime discards afterwards (a goroutine that exits while locked takes its
// thread with it), for probes that leave per-thread state behind: a former
// ptrace tracer, a changed time_for_children. It returns that thread's id.
//
// The main thread is the exception: the runtime cannot end it and parks it
// forever instead, still carrying the state (and /proc/PID/ns/* shows the
// main thread's). So if the goroutine lands there, it keeps the main thread
// locked, which forces a nested goroutine onto another thread, and gives the
// main thread back untouched.
func onThrowawayThread(fn func()) int {
	done := make(chan int)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			done <- onThrowawayThread(fn)
			runtime.UnlockOSThread()
			return
		}
		fn()
		done <- unix.Gettid()
	}()
	return <-done
}
