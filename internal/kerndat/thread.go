package kerndat

import (
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/ptrace"
)

// onThrowawayThread runs fn on a thread that the runtime discards
// afterwards, for probes that leave per-thread state behind (a changed
// time_for_children), and returns that thread's id. It is the engine's
// own tracer thread, ptrace.RunLocked, which handles the main thread
// (which the runtime cannot discard) for us.
func onThrowawayThread(fn func()) int {
	var tid int
	ptrace.RunLocked(func() error {
		fn()
		tid = unix.Gettid()
		return nil
	})
	return tid
}
