package kerndat

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// probeTimeNS checks that /proc/self/ns/time exists (CONFIG_TIME_NS) and
// that we may create one. unshare(CLONE_NEWTIME) only changes the calling
// thread's time_for_children, so it runs on a throwaway locked thread that
// the runtime retires when the goroutine exits; no later child of ours is
// born into the new namespace. (setns back is no option: joining a time
// namespace needs a single-threaded process, EUSERS.) The probe waits for
// the thread to be gone so that its effect has ended when Probe returns.
func probeTimeNS() []Feature {
	if _, err := os.Stat("/proc/self/ns/time"); err != nil {
		return withInfo(missing(TimeNamespace, "/proc/self/ns/time: %v", errors.Unwrap(err)))
	}
	var err error
	tid := onThrowawayThread(func() { err = unix.Unshare(unix.CLONE_NEWTIME) })
	task := fmt.Sprintf("/proc/self/task/%d", tid)
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Microsecond) {
		if _, err := os.Stat(task); err != nil {
			break
		}
	}
	if err != nil {
		return withInfo(missing(TimeNamespace, "/proc/self/ns/time exists, unshare(CLONE_NEWTIME): %v", err))
	}
	return withInfo(ok(TimeNamespace, "unshare(CLONE_NEWTIME) works"))
}
