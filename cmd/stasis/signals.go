package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis"
)

// stopSignals end a dump or restore the way a failure does: rolled back,
// then exit 128+signal. SIGPIPE is among them because stasis writes to
// pipes (a log piped into a pager that quits) and runtime's default for it
// would kill stasis with tasks held.
var stopSignals = []os.Signal{unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGPIPE}

// interruptible returns a context that the first of stopSignals cancels,
// with stasis.CancelBySignal as the cause. Signals stay caught until
// release: a second Ctrl-C while the first one's rollback runs must not
// kill stasis halfway through putting the tree back.
func interruptible() (ctx context.Context, release func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, stopSignals...)
	done := make(chan struct{})
	go func() {
		first := true
		for {
			select {
			case <-done:
				return
			case s := <-ch:
				sig := s.(syscall.Signal)
				if first {
					first = false
					cancel(stasis.CancelBySignal(sig))
					continue
				}
				if sig != unix.SIGPIPE {
					fmt.Fprintf(os.Stderr, "stasis: %s: still rolling back, please wait\n", unix.SignalName(sig))
				}
			}
		}
	}()
	return ctx, func() {
		signal.Reset(stopSignals...)
		close(done)
	}
}

// interruptedCode is the exit status for an error caused by a signal:
// 128+signal, as a shell reports a process killed by it.
func interruptedCode(err error) (int, bool) {
	sig, ok := stasis.InterruptSignal(err)
	if !ok {
		return 0, false
	}
	return 128 + int(sig), true
}
