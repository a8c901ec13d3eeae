package lazy

import "errors"

var (
	// ErrProtocol is wrapped when the other end of the lazy-pages socket
	// sends what criu's protocol does not allow.
	ErrProtocol = errors.New("lazy-pages protocol error")
	// ErrRestoreGone: the restore closed the lazy-pages socket before it
	// said it was finished (it failed, or was killed).
	ErrRestoreGone = errors.New("the restore closed the lazy-pages socket before it finished")
	// ErrIncomplete is wrapped when the daemon stops with pages not
	// served: they are poisoned, and a task touching one dies of SIGBUS
	// instead of running on with a zero page.
	ErrIncomplete = errors.New("lazy pages not served")
)
