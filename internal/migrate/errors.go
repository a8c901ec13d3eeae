package migrate

import "errors"

var (
	// ErrProtocol is wrapped when a frame is not what the protocol allows.
	ErrProtocol = errors.New("migration stream protocol error")
	// ErrTarget wraps what the target reports as failed.
	ErrTarget = errors.New("the target failed")
)
