package kerndat

import "errors"

// ErrNotSupported is wrapped by every error about a missing kernel feature.
var ErrNotSupported = errors.New("not supported")
