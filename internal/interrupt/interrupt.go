package interrupt

import (
	"context"
	"os"
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

// TestEnv names the test-only hook: STASIS_TEST_SIGNAL_AT=POINT[:SIG]
// makes stasis send itself SIG (INT by default; TERM, HUP, PIPE, KILL)
// the first time it reaches POINT (see At), then wait until the signal
// has canceled ctx, so that the next safe point sees it. It exists for
// the interrupt and fault-injection tests (test/e2e) and is not a user
// interface.
const TestEnv = "STASIS_TEST_SIGNAL_AT"

var hook struct {
	once  sync.Once
	point string
	sig   unix.Signal
	fired bool
	mu    sync.Mutex
}

func loadHook() {
	v := os.Getenv(TestEnv)
	if v == "" {
		return
	}
	point, sig, _ := strings.Cut(v, ":")
	hook.point, hook.sig = point, unix.SIGINT
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
	case <-time.After(10 * time.Second):
	}
}
