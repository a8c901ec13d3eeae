package interrupt

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCheck(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	if err := Check(ctx, "dump phase pages"); err != nil {
		t.Fatalf("live context: %v", err)
	}
	if err := Check(nil, "x"); err != nil { //nolint:staticcheck // a nil context is never interrupted
		t.Fatalf("nil context: %v", err)
	}
	cancel(&Signal{Sig: unix.SIGTERM})
	err := fmt.Errorf("dump pages of pid 7: %w", Check(ctx, "dump phase pages (pid 7)"))
	if want := "dump pages of pid 7: interrupted at dump phase pages (pid 7): got SIGTERM"; err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
	if !errors.Is(err, ErrInterrupted) {
		t.Error("not ErrInterrupted")
	}
	if sig, ok := SignalOf(err); !ok || sig != unix.SIGTERM {
		t.Errorf("SignalOf = %v, %v", sig, ok)
	}
}

func TestCheckPlainCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Check(ctx, "restore phase files")
	if !errors.Is(err, ErrInterrupted) || !errors.Is(err, context.Canceled) {
		t.Errorf("%v: want ErrInterrupted and context.Canceled", err)
	}
	if _, ok := SignalOf(err); ok {
		t.Error("a plain cancel has no signal")
	}
}

func TestSignalIsInterrupted(t *testing.T) {
	if !errors.Is(&Signal{Sig: unix.SIGINT}, ErrInterrupted) {
		t.Error("a *Signal cause is not ErrInterrupted")
	}
}
