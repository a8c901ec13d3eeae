package ns

import (
	"errors"

	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/netns"
)

// ErrMissingKey is wrapped by a restore refused because the key of an
// external namespace was not given. It is netns.ErrMissingKey.
var ErrMissingKey = netns.ErrMissingKey

// ErrNotSupported is wrapped by the refusal of a namespace stasis cannot
// dump or restore yet, which names its kind. It is linux.ErrNotSupported.
var ErrNotSupported = linux.ErrNotSupported

// ErrBadImage is wrapped by errors about namespace images that decode but
// do not fit together.
var ErrBadImage = errors.New("inconsistent namespace image")
