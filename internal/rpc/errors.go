package rpc

import "errors"

var (
	// ErrNotImplemented is wrapped by the reply to a request type or an
	// option stasis does not implement (yet).
	ErrNotImplemented = errors.New("not implemented in stasis yet")
	// ErrBadRequest is wrapped by the reply to a request that cannot be
	// served as sent: malformed, too large, unknown type, bad fd.
	ErrBadRequest = errors.New("bad request")
	// ErrScript is wrapped when the client answers a notification with
	// anything but a successful NOTIFY (criu: "RPC client reported script
	// error").
	ErrScript = errors.New("rpc client reported script error")
)
