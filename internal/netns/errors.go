package netns

import (
	"errors"

	"github.com/stasis-cr/stasis/internal/linux"
)

// ErrNotSupported is wrapped by the refusal of a link kind or network
// object stasis cannot dump or restore; it is linux.ErrNotSupported.
var ErrNotSupported = linux.ErrNotSupported

// ErrBadImage is wrapped by errors about network namespace images that
// do not decode or do not fit together.
var ErrBadImage = errors.New("inconsistent network namespace image")

// ErrMissingKey is wrapped by a restore refused because an object outside
// the tree that the images need was not given: a veth's outside name, the
// key of an external network namespace.
var ErrMissingKey = errors.New("missing option")
