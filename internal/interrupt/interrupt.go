package interrupt

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Check returns nil while ctx is live, an *Error naming at otherwise.
func Check(ctx context.Context, at string) error {
	if ctx == nil || ctx.Err() == nil {
		return nil
	}
	return &Error{At: at, Cause: context.Cause(ctx)}
}

// Point is a safe point of op ("dump" or "restore") in phase, for
// process pid (0: the whole tree): the test hook's point "OP-PHASE" (At),
// then Check, naming "OP phase PHASE (pid PID)".
func Point(ctx context.Context, op, phase string, pid int) error {
	At(ctx, op+"-"+phase)
	at := op + " phase " + phase
	if pid != 0 {
		at += " (pid " + strconv.Itoa(pid) + ")"
	}
	return Check(ctx, at)
}

// TestEnv names the test-only hook: STASIS_TEST_SIGNAL_AT=POINT[:SIG[:N]]
// makes stasis send itself SIG (INT by default; TERM, HUP, PIPE, KILL)
// the first time it reaches POINT (see At), then wait until the signal
// has canceled ctx, so that the next safe point sees it; with N > 1 it
// sends SIG N-1 times more once ctx is canceled, as the rollback starts
// (a user pressing Ctrl-C again). It exists for the interrupt and
// fault-injection tests (test/e2e) and is not a user interface.
const TestEnv = "STASIS_TEST_SIGNAL_AT"

var hook struct {
	once  sync.Once
	point string
	sig   unix.Signal
	times int
	fired bool
	mu    sync.Mutex
}

func loadHook() {
	v := os.Getenv(TestEnv)
	if v == "" {
		return
	}
	point, sig, _ := strings.Cut(v, ":")
	sig, times, _ := strings.Cut(sig, ":")
	hook.point, hook.sig, hook.times = point, unix.SIGINT, 1
	if n, err := strconv.Atoi(times); err == nil && n > 1 {
		hook.times = n
	}
	if sig != "" {
		if s := unix.SignalNum("SIG" + strings.TrimPrefix(strings.ToUpper(sig), "SIG")); s != 0 {
			hook.sig = s
		}
	}
}

// At is a named point of a dump or restore for the test hook (TestEnv).
// Names are "dump-" or "restore-" and the phase, spaces as dashes:
// dump-seize, dump-task-state, dump-page-copy, restore-page-fill, ...
func At(ctx context.Context, point string) {
	hook.once.Do(loadHook)
	if hook.point == "" {
		return
	}
	point = strings.ReplaceAll(point, " ", "-")
	hook.mu.Lock()
	fire := !hook.fired && point == hook.point
	if fire {
		hook.fired = true
	}
	hook.mu.Unlock()
	if !fire {
		return
	}
	_ = unix.Kill(os.Getpid(), hook.sig)
	if ctx == nil {
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(time.Minute): // a loaded machine can be slow to run the handler
		return
	}
	for i := 1; i < hook.times; i++ {
		_ = unix.Kill(os.Getpid(), hook.sig)
	}
}
