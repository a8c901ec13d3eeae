package interrupt

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrInterrupted is wrapped by every error of a dump or restore stopped
// by a signal or by its context.
var ErrInterrupted = errors.New("interrupted")

// Signal is the cause of a context canceled because stasis got a signal.
type Signal struct{ Sig syscall.Signal }

func (s *Signal) Error() string { return "got " + unix.SignalName(s.Sig) }

// Is makes every *Signal match ErrInterrupted.
func (s *Signal) Is(target error) bool { return target == ErrInterrupted }

// Error is what Check returns: where the work stopped and why.
type Error struct {
	At    string // the point where the interruption was seen
	Cause error  // context.Cause: a *Signal, context.Canceled, ...
}

func (e *Error) Error() string { return "interrupted at " + e.At + ": " + e.Cause.Error() }

// Unwrap gives the cause (a *Signal for a signal).
func (e *Error) Unwrap() error { return e.Cause }

// Is makes every *Error match ErrInterrupted, whatever its cause.
func (e *Error) Is(target error) bool { return target == ErrInterrupted }

// SignalOf returns the signal that interrupted the work err reports, if
// a signal did.
func SignalOf(err error) (syscall.Signal, bool) {
	var s *Signal
	if errors.As(err, &s) {
		return s.Sig, true
	}
	return 0, false
}
