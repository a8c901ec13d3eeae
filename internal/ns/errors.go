package ns

import "errors"

// ErrNotSupported is wrapped by the refusal of a namespace stasis cannot
// dump or restore yet, which names its kind.
var ErrNotSupported = errors.New("not supported yet")

// ErrBadImage is wrapped by errors about namespace images that decode but
// do not fit together.
var ErrBadImage = errors.New("inconsistent namespace image")
